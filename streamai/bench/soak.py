"""Soak: N concurrent Python-peer sessions for M minutes against a node in a subprocess; leak figures.

The node runs alone in its own process (``streamai serve`` with ``debug_endpoints``),
so its RSS, open fds and threads are read from outside with psutil, and its asyncio
tasks and live peer connections from ``GET /v1/debug/resources``. Sessions are
recycled every ``--session-s`` seconds (0: held for the whole run). Each sample
interval records those resources, the node's CPU, frames in/out and drops (server
side) and the video glass-to-glass latency measured by the peers (barcodes). A
baseline is taken after one warm-up session (imports, codec set-up, the loop's
thread pool), and an "after" sample once every session has ended; ``growth`` is
after minus baseline. Writes the JSON (``--out``) and a PNG plot next to it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import secrets
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import psutil
import yaml

from ..testing.node import free_port as _free_port
from ..testing.peer import BarcodeVideoTrack, Probe, ProbeError, marker_audio


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sessions", type=int, default=4, help="concurrent sessions (default 4)")
    parser.add_argument("--minutes", type=float, default=2.0, help="load time in minutes (default 2)")
    parser.add_argument("--pipeline", default="transform", help="pipeline every session runs (default transform)")
    parser.add_argument("--pipelines-dir", help="folder of pipeline YAML for the node (default: pipelines/)")
    parser.add_argument(
        "--session-s", type=float, default=30.0, help="recycle each session after this many seconds (0: hold)"
    )
    parser.add_argument("--interval", type=float, help="seconds per sample (default 60, or 10 for runs < 5 min)")
    parser.add_argument("--width", type=int, default=320, help="peer video width (default 320)")
    parser.add_argument("--height", type=int, default=240, help="peer video height (default 240)")
    parser.add_argument("--fps", type=float, default=15.0, help="peer video frame rate (default 15)")
    parser.add_argument("--no-audio", action="store_true", help="send video only")
    parser.add_argument("--settle-s", type=float, default=3.0, help="wait after the last session before 'after'")
    parser.add_argument("--plot", help="PNG path (default: --out with .png)")
    parser.add_argument("--max-sessions", type=int, help="the node's max_sessions (default: --sessions: at capacity)")
    parser.add_argument(
        "--no-events-socket", dest="events_socket", action="store_false",
        help="do not open an events WebSocket per session (by default each session has one)",
    )  # fmt: skip


# -- the node ---------------------------------------------------------------------------


ADMIN_TOKEN = secrets.token_urlsafe(24)
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@dataclass
class SoakNode:
    """``streamai serve`` in a subprocess, with its resources read from outside and from the debug endpoint."""

    url: str
    process: psutil.Process
    popen: subprocess.Popen[bytes]

    def outside(self) -> dict[str, Any]:
        proc = self.process
        with proc.oneshot():
            return {
                "rss_mb": round(proc.memory_info().rss / 2**20, 1),
                "open_fds": proc.num_fds(),
                "threads": proc.num_threads(),
                "cpu_percent": round(proc.cpu_percent(None), 1),
            }

    async def inside(self, http: aiohttp.ClientSession) -> dict[str, Any]:
        async with http.get(f"{self.url}/v1/debug/resources", headers=ADMIN) as response:
            response.raise_for_status()
            return dict(await response.json())


@asynccontextmanager
async def soak_node(pipelines_dir: str | None, max_sessions: int, timeout: float = 60.0) -> AsyncIterator[SoakNode]:
    """A node on a free loopback port with the debug endpoint on; terminated (then killed) at the end."""
    port = _free_port()
    settings: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": port,
        "ice_loopback": True,
        "debug_endpoints": True,
        "max_sessions": max_sessions,
        # every peer comes from 127.0.0.1: the per-address caps would otherwise bound the soak, not the node
        "protection": {"max_sessions_per_client": max_sessions, "sessions_per_min": 600, "sessions_burst": 100},
        "admin_token": ADMIN_TOKEN,  # the bench lists every session and reads the debug endpoint as the admin
    }
    if pipelines_dir:
        settings["pipelines_dir"] = str(Path(pipelines_dir).resolve())
    with tempfile.TemporaryDirectory(prefix="soak-") as folder:
        config = Path(folder) / "node.yaml"
        config.write_text(yaml.safe_dump(settings), encoding="utf-8")
        log_path = Path(folder) / "node.log"
        with log_path.open("wb") as log_file:
            env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMAI_") or not k.endswith("TOKEN")}
            popen = subprocess.Popen(
                [sys.executable, "-m", "streamai", "serve", "--config", str(config)],
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env=env,
            )
            url = f"http://127.0.0.1:{port}"
            try:
                started = time.monotonic()
                async with aiohttp.ClientSession() as http:
                    while True:
                        if popen.poll() is not None:
                            raise RuntimeError(f"node exited: {log_path.read_text(errors='replace')[-2000:]}")
                        with contextlib.suppress(aiohttp.ClientError):
                            async with http.get(f"{url}/healthz") as response:
                                if response.status == 200:
                                    break
                        if time.monotonic() - started > timeout:
                            raise RuntimeError("node did not become healthy in time")
                        await asyncio.sleep(0.2)
                node = SoakNode(url, psutil.Process(popen.pid), popen)
                node.process.cpu_percent(None)
                yield node
            finally:
                popen.terminate()
                try:
                    await asyncio.to_thread(popen.wait, 15)
                except subprocess.TimeoutExpired:
                    popen.kill()
                    await asyncio.to_thread(popen.wait, 5)


# -- the load -----------------------------------------------------------------------------


@dataclass
class Tally:
    """What the drivers did and what the node reported, accumulated between samples."""

    opened: int = 0
    closed: int = 0
    refused: int = 0
    failures: list[str] = field(default_factory=list)
    final: dict[str, dict[str, int]] = field(default_factory=dict)  # session id -> last server counters
    seen: dict[str, dict[str, int]] = field(default_factory=dict)  # session id -> counters at the last sample
    latencies: list[float] = field(default_factory=list)  # peer-measured video ms, since the last sample
    sockets_opened: int = 0  # events WebSockets, one per session
    socket_events: int = 0
    sockets_closed_by_node: int = 0  # closed by the node when their session ended (as they must be)
    sockets_left_open: int = 0  # still open 5 s after their session ended (a leak)
    probes: dict[int, tuple[Probe, int]] = field(default_factory=dict)  # live probes and their cursor

    def collect_latency(self) -> list[float]:
        for key, (probe, cursor) in list(self.probes.items()):
            values = probe.report.video_latency_ms
            self.latencies.extend(values[cursor:])
            self.probes[key] = (probe, len(values))
        out, self.latencies = self.latencies, []
        return out

    def retire(self, probe: Probe) -> None:
        entry = self.probes.pop(id(probe), None)
        if entry is not None:
            self.latencies.extend(probe.report.video_latency_ms[entry[1] :])


def _counters(summary: dict[str, Any]) -> dict[str, int]:
    return {
        "frames_in": int(summary.get("frames_in", 0)),
        "frames_out": int(summary.get("frames_out", 0)),
        "drops": int(summary.get("drops", 0)),
    }


async def _driver(index: int, url: str, args: argparse.Namespace, stop_at: float, tally: Tally) -> None:
    """One session slot: open a session, stream, fetch its server counters, close; repeat until ``stop_at``."""
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < stop_at - 2.0:
            video = BarcodeVideoTrack(args.width, args.height, args.fps)
            audio = None if args.no_audio else marker_audio()
            probe = Probe(url, args.pipeline, video=video, audio=audio)
            ends = stop_at if args.session_s <= 0 else min(stop_at, time.monotonic() + args.session_s)
            reader: asyncio.Task[None] | None = None
            try:
                await probe.connect(http)
                tally.opened += 1
                tally.probes[id(probe)] = (probe, 0)
                if args.events_socket:
                    events = f"{url}/v1/sessions/{probe.report.session_id}/events"
                    socket = await http.ws_connect(events, headers=probe.session_headers())
                    tally.sockets_opened += 1
                    reader = asyncio.create_task(_read_events(socket, tally))
                while time.monotonic() < ends:
                    await asyncio.sleep(min(1.0, max(0.05, ends - time.monotonic())))
                    await probe.ping()
                session_id = probe.report.session_id
                async with http.get(f"{url}/v1/sessions/{session_id}", headers=probe.session_headers()) as response:
                    if response.status == 200:
                        tally.final[session_id] = _counters(await response.json())
            except ProbeError as exc:
                tally.refused += 1
                tally.failures.append(f"slot {index}: {exc}"[:300])
                await asyncio.sleep(1.0)
            except (aiohttp.ClientError, OSError, KeyError) as exc:
                tally.failures.append(f"slot {index}: {type(exc).__name__}: {exc}"[:300])
                await asyncio.sleep(1.0)
            finally:
                tally.retire(probe)
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(probe.close(http), 10)
                if probe.report.session_id:
                    tally.closed += 1
                if reader is not None:  # the node must close the socket now that its session ended
                    try:
                        await asyncio.wait_for(reader, 5)
                        tally.sockets_closed_by_node += 1
                    except TimeoutError:
                        tally.sockets_left_open += 1
                # the peer's memory of send times is per session; drop it with the probe
                video.sent_at.clear()


async def _read_events(socket: aiohttp.ClientWebSocketResponse, tally: Tally) -> None:
    """Read a session's events until the node closes the socket."""
    try:
        async for message in socket:
            if message.type == aiohttp.WSMsgType.TEXT:
                tally.socket_events += 1
    finally:
        await socket.close()


def _pct(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 1) if values else None


async def _sample(node: SoakNode, http: aiohttp.ClientSession, tally: Tally, t0: float) -> dict[str, Any]:
    """One row: node resources from outside and inside, server counters and peer latency since the last row."""
    row: dict[str, Any] = {"t_s": round(time.monotonic() - t0, 1), **node.outside()}
    inside = await node.inside(http)
    row.update(
        asyncio_tasks=inside["asyncio_tasks"],
        peer_connections=inside["peer_connections"],
        peer_connections_open=inside["peer_connections_open"],
        sessions=inside["sessions"],
        session_objects=inside["session_objects"],
        tasks_by_name=inside["asyncio_tasks_by_name"],
    )
    async with http.get(f"{node.url}/v1/sessions", headers=ADMIN) as response:
        live = {s["id"]: _counters(s) for s in (await response.json())["sessions"]}
    delta = {"frames_in": 0, "frames_out": 0, "drops": 0}
    for session_id in set(live) | set(tally.final):
        current = live.get(session_id) or tally.final.get(session_id) or {}
        previous = tally.seen.get(session_id, {})
        for key in delta:
            delta[key] += max(0, current.get(key, 0) - previous.get(key, 0))
        if session_id in live:
            tally.seen[session_id] = current
        else:
            tally.seen.pop(session_id, None)
            tally.final.pop(session_id, None)
    latencies = tally.collect_latency()
    row.update(
        frames_in=delta["frames_in"],
        frames_out=delta["frames_out"],
        drops=delta["drops"],
        drop_rate=round(delta["drops"] / delta["frames_in"], 4) if delta["frames_in"] else None,
        video_latency_samples=len(latencies),
        video_latency_p50_ms=_pct(latencies, 50),
        video_latency_p95_ms=_pct(latencies, 95),
        video_latency_p99_ms=_pct(latencies, 99),
        sessions_opened=tally.opened,
    )
    return row


async def _settled(node: SoakNode, http: aiohttp.ClientSession, timeout: float) -> dict[str, Any]:
    """Wait until the node holds no session and no open peer connection (or ``timeout``)."""
    ends = time.monotonic() + timeout
    while True:
        inside = await node.inside(http)
        if (inside["sessions"] == 0 and inside["peer_connections_open"] == 0) or time.monotonic() > ends:
            return inside
        await asyncio.sleep(0.5)


def _resources(node: SoakNode, inside: dict[str, Any]) -> dict[str, Any]:
    return {
        **node.outside(),
        "asyncio_tasks": inside["asyncio_tasks"],
        "peer_connections": inside["peer_connections"],
        "peer_connections_open": inside["peer_connections_open"],
        "session_objects": inside["session_objects"],
        "tasks_by_name": inside["asyncio_tasks_by_name"],
        "threads_by_name": inside["threads_by_name"],
        "sessions_finished": inside["sessions_finished"],
    }


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Run the soak; returns baseline, per-interval rows, after, growth and a one-line summary."""
    seconds = args.minutes * 60
    interval = args.interval or (60.0 if seconds >= 300 else 10.0)
    capacity = args.max_sessions or args.sessions  # by default the node runs at its max_sessions
    async with soak_node(args.pipelines_dir, capacity) as node, aiohttp.ClientSession() as http:
        cold = _resources(node, await node.inside(http))
        # warm-up: one short session so that imports, codecs and the loop's thread pool exist before the baseline
        warm = Tally()
        await _driver(-1, node.url, _with(args, session_s=3.0), time.monotonic() + 5.0, warm)
        await asyncio.sleep(args.settle_s)
        baseline = _resources(node, await _settled(node, http, 15.0))
        tally = Tally()
        t0 = time.monotonic()
        stop_at = t0 + seconds
        drivers = [asyncio.create_task(_driver(i, node.url, args, stop_at, tally)) for i in range(args.sessions)]
        rows: list[dict[str, Any]] = []
        peak_sessions = 0
        next_sample = t0 + interval
        while not all(d.done() for d in drivers):
            await asyncio.sleep(min(1.0, max(0.0, next_sample - time.monotonic())))
            async with http.get(f"{node.url}/v1/sessions", headers=ADMIN) as response:
                peak_sessions = max(peak_sessions, len((await response.json())["sessions"]))
            if time.monotonic() >= next_sample:
                rows.append(await _sample(node, http, tally, t0))
                next_sample += interval
        for driver in drivers:
            driver.result()  # a driver bug surfaces here
        rows.append(await _sample(node, http, tally, t0))  # the tail of the last interval
        await asyncio.sleep(args.settle_s)
        after = _resources(node, await _settled(node, http, 15.0))
        node_alive = node.popen.poll() is None

    growth = {
        key: round(after[key] - baseline[key], 1)
        for key in ("rss_mb", "open_fds", "threads", "asyncio_tasks", "peer_connections", "peer_connections_open")
    }
    loaded = [r for r in rows if r["frames_in"]]
    frames_in = sum(r["frames_in"] for r in rows)
    drops = sum(r["drops"] for r in rows)
    p95s = [r["video_latency_p95_ms"] for r in loaded if r["video_latency_p95_ms"] is not None]
    result: dict[str, Any] = {
        "config": {
            "sessions": args.sessions,
            "minutes": args.minutes,
            "pipeline": args.pipeline,
            "session_s": args.session_s,
            "interval_s": interval,
            "video": f"{args.width}x{args.height}@{args.fps:g}",
            "audio": not args.no_audio,
        },
        "cold": cold,
        "baseline": baseline,
        "samples": rows,
        "after": after,
        "growth": growth,
        "peak_rss_mb": max([r["rss_mb"] for r in rows] + [baseline["rss_mb"]]),
        "peak_sessions": peak_sessions,
        "sessions_opened": tally.opened,
        "sessions_refused": tally.refused,
        "failures": tally.failures[:20],
        "frames_in": frames_in,
        "drops": drops,
        "drop_rate": round(drops / frames_in, 4) if frames_in else None,
        "worst_interval_p95_ms": max(p95s) if p95s else None,
        "node_alive": node_alive,
        "node_max_sessions": capacity,
        "rss_slope_mb_per_10_sessions": rss_slope(rows),
        "events_sockets": {
            "opened": tally.sockets_opened,
            "events_read": tally.socket_events,
            "closed_by_node_with_their_session": tally.sockets_closed_by_node,
            "left_open": tally.sockets_left_open,
        },
    }
    result["summary"] = (
        f"soak {args.sessions} sessions x {args.minutes:g} min ({args.pipeline}, {tally.opened} sessions opened, "
        f"{tally.refused} refused): RSS {baseline['rss_mb']} -> peak {result['peak_rss_mb']} -> after "
        f"{after['rss_mb']} MB; growth fds {growth['open_fds']:+g}, threads {growth['threads']:+g}, "
        f"tasks {growth['asyncio_tasks']:+g}, open peer connections {growth['peer_connections_open']:+g}; "
        f"drop rate {result['drop_rate']}; worst p95 video latency {result['worst_interval_p95_ms']} ms; "
        f"RSS slope after warm-up {result['rss_slope_mb_per_10_sessions']} MB per 10 finished sessions; "
        f"events sockets {tally.sockets_opened} opened, {tally.sockets_left_open} left open"
    )
    plot = Path(args.plot) if args.plot else Path(args.out).with_suffix(".png")
    with contextlib.suppress(Exception):  # a plot failure must not lose the figures
        write_plot(result, plot)
        result["plot"] = str(plot)
    return result


def rss_slope(rows: list[dict[str, Any]]) -> float | None:
    """RSS growth in MB per 10 finished sessions, fitted over the samples after the first third (warm-up)."""
    steady = rows[len(rows) // 3 :]
    opened = [float(r.get("sessions_opened", 0)) for r in steady]
    if len(steady) < 3 or max(opened) - min(opened) < 5:
        return None
    slope = float(np.polyfit(opened, [float(r["rss_mb"]) for r in steady], 1)[0])
    return round(slope * 10, 3)


def _with(args: argparse.Namespace, **changes: Any) -> argparse.Namespace:
    return argparse.Namespace(**{**vars(args), **changes})


def write_plot(result: dict[str, Any], path: Path) -> None:
    """Six panels over time: RSS, fds, threads, tasks, peer connections, latency and drop rate."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["samples"]
    baseline, after = result["baseline"], result["after"]
    t = [r["t_s"] for r in rows]
    t_after = (t[-1] if t else 0) + result["config"]["interval_s"] / 2
    panels = [
        ("rss_mb", "RSS (MB)"),
        ("open_fds", "open fds"),
        ("threads", "threads"),
        ("asyncio_tasks", "asyncio tasks"),
        ("peer_connections_open", "open peer connections"),
    ]
    fig, axes = plt.subplots(2, 3, figsize=(14, 7))
    for ax, (key, label) in zip(axes.flat, panels, strict=False):
        ax.plot([0, *t, t_after], [baseline[key], *[r[key] for r in rows], after[key]], marker="o")
        ax.axhline(baseline[key], color="grey", linestyle="--", linewidth=1, label="baseline")
        ax.set_title(label)
        ax.set_xlabel("s")
        ax.legend(loc="best", fontsize=7)
    ax = axes.flat[5]
    ax.plot(t, [r["video_latency_p50_ms"] or math.nan for r in rows], marker="o", label="video p50 ms")
    ax.plot(t, [r["video_latency_p95_ms"] or math.nan for r in rows], marker="o", label="video p95 ms")
    ax.set_title("peer-measured latency / drop rate")
    ax.set_xlabel("s")
    ax.set_ylabel("ms")
    twin = ax.twinx()
    twin.plot(t, [(r["drop_rate"] or 0) * 100 for r in rows], color="red", linestyle=":", label="drops %")
    twin.set_ylabel("drops %")
    ax.legend(loc="upper left", fontsize=7)
    twin.legend(loc="upper right", fontsize=7)
    config = result["config"]
    fig.suptitle(
        f"soak: {config['sessions']} sessions x {config['minutes']:g} min, {config['pipeline']}, "
        f"{config['video']}, recycled every {config['session_s']:g} s ({result['sessions_opened']} sessions)"
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
