"""Shared fixtures: the stage registry, pipeline builders."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from streamai.stage import StageRegistry

ROOT = Path(__file__).resolve().parent.parent


HEAVY = ("browser", "ray", "models")  # a real browser, a Ray cluster or model weights: slow by definition


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """``-m "not slow"`` is the quick loop: browser, Ray and model tests count as slow too."""
    for item in items:
        if any(item.get_closest_marker(name) for name in HEAVY) and not item.get_closest_marker("slow"):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def registry() -> StageRegistry:
    return StageRegistry()


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[Any]:
    """A local Ray cluster on loopback with Serve (no HTTP proxy); regions stand as custom resources."""
    os.environ["RAY_AUTH_MODE"] = "disabled"
    ray = pytest.importorskip("ray")
    from ray import serve

    ray.init(
        num_cpus=2,
        include_dashboard=False,
        object_store_memory=200 * 1024**2,
        _node_ip_address="127.0.0.1",
        resources={"region-eu-west": 2, "region-us-east": 2},
        log_to_driver=False,
    )
    try:
        serve.start(proxy_location="Disabled")
        yield ray
    finally:
        serve.shutdown()
        ray.shutdown()
