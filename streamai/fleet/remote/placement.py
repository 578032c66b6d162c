"""Where one frame of a ``remote``/``auto`` stage runs: the edge copy or Ray Serve. Pure: no Ray, no I/O.

- ``placement: auto`` runs the frame at the edge while the stage's measured edge
  service time fits its remaining time (``at + edge estimate + downstream <= deadline``)
  and offloads it otherwise; while offloading, one frame every ``probe_every_s`` runs at
  the edge to refresh the measurement, so the stage comes back when the edge is fast again.
- ``remote.fallback: edge`` (and ``auto``) serve frames at the edge for
  ``failing_for_s`` after a remote failure, and whenever there is no remote deployment.
- ``placement: remote`` with ``fallback: drop`` never runs a frame at the edge.
"""

from __future__ import annotations

import enum
import math
from typing import Literal

from ...engine.estimator import ServiceTimeEstimator

EDGE_PROBE_S = 2.0  # placement auto: one frame at the edge this often while offloading
FAILING_FOR_S = 1.0  # after a failure, fallback: edge serves frames this long


class Where(enum.Enum):
    """The placement of one frame."""

    REMOTE = "remote"
    EDGE = "edge"
    EDGE_PROBE = "edge_probe"  # at the edge to measure it; not a sign of how the next frame will go


class Placement:
    """The placement rule of one stand-in, with the state it needs: edge time, last failure, last probe."""

    def __init__(
        self,
        placement: Literal["edge", "remote", "auto"],
        fallback: Literal["drop", "edge"],
        prior_s: float = 0.0,
        probe_every_s: float = EDGE_PROBE_S,
        failing_for_s: float = FAILING_FOR_S,
    ) -> None:
        self.auto = placement == "auto"
        self.edge_capable = self.auto or fallback == "edge"
        self.edge_time = ServiceTimeEstimator(prior_s=prior_s)
        self.probe_every_s = probe_every_s
        self.failing_for_s = failing_for_s
        self.last_failure = -math.inf
        self.last_edge_probe = -math.inf

    def choose(self, at: float, deadline: float, downstream_s: float, remote_available: bool) -> Where:
        """Where a frame with ``deadline`` that reaches the stage at ``at`` runs."""
        if not self.edge_capable:
            return Where.REMOTE
        if not remote_available or self.failing(at):
            return Where.EDGE  # no remote, or it just failed: fallback edge / auto keeps serving here
        if not self.auto:
            return Where.REMOTE
        if self.fits_at_edge(at, deadline, downstream_s):
            return Where.EDGE
        if at - self.last_edge_probe >= self.probe_every_s:
            self.last_edge_probe = at
            return Where.EDGE_PROBE  # refresh the edge measurement now and then
        return Where.REMOTE

    def fits_at_edge(self, at: float, deadline: float, downstream_s: float) -> bool:
        return at + self.edge_time.estimate + downstream_s <= deadline

    def failing(self, at: float) -> bool:
        """Whether the remote path failed within the last ``failing_for_s``."""
        return at - self.last_failure < self.failing_for_s

    def remote_failed(self, at: float) -> None:
        self.last_failure = at

    def can_fall_back(self, at: float, deadline: float, downstream_s: float) -> bool:
        """Whether a frame whose remote call failed (or found no replica) may still run at the edge."""
        return self.edge_capable and at + downstream_s <= deadline

    def edge_served(self, seconds: float) -> None:
        """One frame's service time at the edge."""
        self.edge_time.update(seconds)
