"""The node's shared state, as keys on the aiohttp application, and how it presents a pipeline.

Modules of the node (WHIP, scaling, debug, the fleet agent) read app state through these
keys; none of them imports the application module itself.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry

from ..config import PipelineConfig, PipelineLibrary
from ..frames import FrameKind
from ..models.shared import SharedModels
from ..stage import StageRegistry
from ..web.clients import RegionPrefixes
from ..web.protection import EntryGuard
from .access import Access
from .scale import NodeScaler
from .sessions import SessionManager
from .settings import ServerSettings

SETTINGS = web.AppKey("settings", ServerSettings)
LIBRARY = web.AppKey("library", PipelineLibrary)
SESSIONS = web.AppKey("sessions", SessionManager)
GUARD = web.AppKey("guard", EntryGuard)
ACCESS = web.AppKey("access", Access)
PREFIXES = web.AppKey("prefixes", RegionPrefixes)
METRICS = web.AppKey("metrics", CollectorRegistry)
PRELOADED = web.AppKey("preloaded", list)
MODELS = web.AppKey("models", SharedModels)
SCALER = web.AppKey("scaler", NodeScaler)


def describe_pipeline(config: PipelineConfig, registry: StageRegistry) -> dict[str, Any]:
    """What a client needs to offer a pipeline: its inputs and the controls it reacts to."""
    kinds: set[FrameKind] = set()
    controls = {"interrupt"}
    allowed = config.allowed_client_params()
    if allowed:
        controls.add("params")
    if any("prompt" in fields for fields in allowed.values()):
        controls.add("prompt")
    for chain in config.chains().values():
        for stage_config in chain:
            kinds |= registry.get(stage_config.type).consumes
    inputs = sorted(k.value for k in kinds & {FrameKind.AUDIO, FrameKind.VIDEO}) or ["audio", "video"]
    return {
        "name": config.name,
        "description": config.description,
        "budget_ms": config.budget_ms,
        "stages": config.stage_names(),
        "inputs": inputs,
        "controls": sorted(controls),
        "client_params": {
            stage: {name: bounds.model_dump(exclude_none=True) for name, bounds in fields.items()}
            for stage, fields in allowed.items()
        },
    }


def default_pipeline(settings: ServerSettings, library: PipelineLibrary) -> str | None:
    if settings.default_pipeline:
        return settings.default_pipeline
    for preferred in ("speech-translate", "transform"):
        if preferred in library.pipelines:
            return preferred
    return next(iter(sorted(library.pipelines)), None)
