"""PNG plots of a ``fleet-sim`` run (matplotlib, headless): RTT CDFs, the day hour by hour, a world map."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from .fleet_sim import Simulation


def write_plots(sim: Simulation, result: dict[str, Any], folder: Path) -> list[str]:
    """Write the plots into ``folder``; returns their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    paths = [
        _rtt_cdf(plt, sim, result, folder / "rtt-cdf.png"),
        _day(plt, result, folder / "day.png"),
        _world_map(plt, sim, result, folder / "map.png"),
    ]
    return [str(p) for p in paths]


def _cdf(ax: Any, values: list[float], label: str, **style: Any) -> None:
    if values:
        data = np.sort(np.asarray(values))
        ax.plot(data, np.arange(1, len(data) + 1) / len(data), label=label, **style)


def _rtt_cdf(plt: Any, sim: Simulation, result: dict[str, Any], path: Path) -> Path:
    outage = result.get("outage")
    cut = outage["utc_hour"] * 3600 if outage else float("inf")
    normal = [r for r in sim.results if r.t < cut and r.rtt_ms is not None and r.best_ms is not None]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    _cdf(ax, [r.rtt_ms for r in normal], "routed (rank_top)", color="C0")
    _cdf(ax, [r.best_ms for r in normal], "best possible", color="C0", linestyle="--")
    if outage:
        hit = [r for r in sim.results if r.client_region == outage["region"] and r.rtt_ms is not None]
        _cdf(ax, [r.rtt_ms for r in hit if r.t < cut], f"{outage['region']} clients before outage", color="C3")
        _cdf(ax, [r.rtt_ms for r in hit if r.t >= cut], f"{outage['region']} clients after", color="C3", linestyle=":")
    ax.set_xlabel("client -> node RTT (ms)")
    ax.set_ylabel("share of sessions")
    ax.set_xlim(0, np.percentile([r.rtt_ms for r in normal], 99.5) * 1.5 if normal else 200)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    ax.set_title("Client -> node RTT, normal load")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _day(plt: Any, result: dict[str, Any], path: Path) -> Path:
    hours = result["hourly"]
    x = [h["hour"] for h in hours]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    top.plot(x, [h["routed"] for h in hours], label="routed / h")
    top.plot(x, [sum(h["refused"].values()) for h in hours], label="refused / h", color="C3")
    top.set_ylabel("session requests")
    top.legend(loc="upper left")
    top.grid(alpha=0.3)
    used = top.twinx()
    used.plot(x, [100 * h["utilisation_peak"] for h in hours], color="C1", linestyle="--", label="peak utilisation %")
    used.set_ylabel("fleet utilisation, hourly peak (%)")
    used.set_ylim(0, 100)
    used.legend(loc="upper right")
    bottom.plot(x, [h["rtt_p95_ms"] for h in hours], label="routed RTT p95")
    bottom.plot(x, [h["best_p95_ms"] for h in hours], label="best possible p95", linestyle="--")
    twin = bottom.twinx()
    twin.bar(x, [100 * h["spill_share"] for h in hours], alpha=0.25, color="C2", label="cross-region %")
    twin.set_ylabel("cross-region (%)")
    bottom.set_ylabel("ms")
    bottom.set_xlabel("UTC hour")
    bottom.legend(loc="upper left")
    bottom.grid(alpha=0.3)
    if "outage" in result:
        for ax in (top, bottom):
            ax.axvline(result["outage"]["utc_hour"], color="k", linestyle=":", label="outage")
    fig.suptitle("The day: load, refusals, RTT and spill")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _world_map(plt: Any, sim: Simulation, result: dict[str, Any], path: Path) -> Path:
    world = sim.world
    cities = world.cities
    fig, ax = plt.subplots(figsize=(12, 6.2))
    ax.scatter(cities.lon, cities.lat, s=0.3, color="0.8", zorder=1)  # the cities draw the continents
    rng = np.random.default_rng(0)
    routed = [r for r in sim.results if r.pop is not None]
    sample = [routed[i] for i in rng.choice(len(routed), size=min(3000, len(routed)), replace=False)] if routed else []
    colours = {region: f"C{i % 10}" for i, region in enumerate(world.regions)}
    for r in sample:
        lat, lon = world.pop_location(int(r.pop))  # type: ignore[arg-type]
        if abs(lon - cities.lon[r.city]) > 180:
            continue  # would cross the whole map
        ax.plot([cities.lon[r.city], lon], [cities.lat[r.city], lat], lw=0.3, alpha=0.4, color=colours[r.node_region])
    capacity = np.zeros(world.pops)
    for node, pop in sim.fleet.node_pop.items():
        capacity[pop] += sim.fleet.capacity[node]
    pop_lat = cities.lat[world.pop_city]
    pop_lon = cities.lon[world.pop_city]
    pop_colours = [colours[world.pop_region[p]] for p in range(world.pops)]
    ax.scatter(pop_lon, pop_lat, s=8 + 40 * capacity / capacity.max(), c=pop_colours, edgecolors="k", lw=0.4, zorder=3)
    if "outage" in result:
        dead = world.regions[result["outage"]["region"]]
        ax.scatter(pop_lon[dead], pop_lat[dead], s=120, marker="x", color="red", zorder=4, label="outage region")
        ax.legend(loc="lower left")
    ax.set_xlim(-180, 180)
    ax.set_ylim(-60, 75)
    ax.set_aspect("equal")
    ax.set_title(f"{world.pops} PoPs (size: capacity, colour: region) and a sample of client -> node assignments")
    ax.set_xticks([])
    ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
