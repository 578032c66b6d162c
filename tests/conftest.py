"""Shared fixtures: the stage registry, pipeline builders."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamai.stage import StageRegistry

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def registry() -> StageRegistry:
    return StageRegistry()


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT
