"""Remote stages on Ray Serve: the same stage class, run in a Serve replica instead of in-process.

A stage with ``placement: remote`` (or ``auto``) gets a local stand-in, ``RemoteStage``,
in the session's pipeline. The stand-in forwards each frame to a Ray Serve deployment
that hosts the real stage class (``StageHost``: one deployment per pipeline stage
config, replicas autoscaled from ``remote.autoscaling``, actor options from
``remote.resources``/``num_cpus``/``num_gpus``), and pushes back whatever the remote
stage emitted, plus its events and drops.

One module a concept:

- ``wire``: what crosses Ray (``RemoteCall``, ``RemoteResult``; times relative to the send).
- ``host``: the replica side, ``StageHost``: one stage instance per session.
- ``serve``: Serve plumbing: deployment names, replica states, ``ReplicaWatch`` and the
  factory that deploys ``StageHost`` and builds stand-ins (``RayServeStageFactory``).
- ``placement``: the pure rule that sends one frame to the edge copy or to Serve.
- ``coldstart``: waking a scale-to-zero deployment (one wake call, retry pause, measured cold starts).
- ``standin``: ``RemoteStage``, the stand-in in the pipeline, which ties them together.

The engine learns the remote round trip as the stage's service time (the stand-in
reports it: ``Stage.reports_service_time``), so admission here and in the stages
before it counts the remote time, while up to two calls per session stay in flight.

Ray is imported only inside functions, and only when a node is configured with a Ray address.
"""

from __future__ import annotations

from .host import StageHost
from .serve import RayServeStageFactory, ReplicaWatch, deployment_name, replica_states
from .standin import RemoteStage
from .wire import RemoteCall, RemoteResult

__all__ = [
    "RayServeStageFactory",
    "RemoteCall",
    "RemoteResult",
    "RemoteStage",
    "ReplicaWatch",
    "StageHost",
    "deployment_name",
    "replica_states",
]
