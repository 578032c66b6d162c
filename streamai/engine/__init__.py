"""The pipeline engine: queues with policies, deadline admission, stats."""

from .runner import (
    CollectingSink,
    ParamsError,
    PipelineRunner,
    PipelineStartError,
    RemoteStageFactory,
    Sink,
    split_session_params,
)

__all__ = [
    "CollectingSink",
    "ParamsError",
    "PipelineRunner",
    "PipelineStartError",
    "RemoteStageFactory",
    "Sink",
    "split_session_params",
]
