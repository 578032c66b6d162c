"""The quality ladder: a stage that cannot make a frame's deadline at its configured quality
steps down (a smaller size, reusing similar frames...) before it drops frames, and back up
when it can.

Levels come from the stage's ``degrade:`` list in YAML, each a set of parameter overrides
applied on top of the stage's ``params`` (level 0 is ``params`` itself). Every level keeps
its own service-time estimate. Rules, checked when a frame is admitted:

- **down**: the frame would miss its deadline at this level -> go to the first lower
  level whose estimate fits (an unmeasured level fits: it is tried once and measured).
  When none fits the frame is dropped as before (``would_miss``).
- **up**: after ``hold_s`` at a level, when the level above is estimated to fit with
  ``headroom`` of the budget to spare -> go up. An estimate of the level above can be
  stale (measured under a load that has passed), so after ``retry_s`` at a lower level it is
  forgotten and measured again on one frame; a level that is left again at once doubles
  ``retry_s`` (up to ``retry_max_s``), a level held for long resets it.

Off by default (no ``degrade:``): the strict behaviour is to drop.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel

from .estimator import ServiceTimeEstimator

Direction = Literal["down", "up"]


@dataclass(frozen=True)
class LadderStep:
    """One move on the ladder, as the ``degrade`` event and the metrics report it."""

    direction: Direction
    level: int  # the level moved to (0: the configured quality)
    previous: int
    params: dict[str, Any]  # the overrides of the level moved to ({} at level 0)
    estimate_ms: float  # the moved-to level's service-time estimate when the step was taken
    slack_ms: float  # what the frame had left for this stage
    retry: bool = False  # an up step that re-measures a level whose estimate had gone stale


@dataclass
class QualityLadder:
    """Levels of one stage, their estimates, the current level, and the step counters."""

    levels: list[BaseModel]  # validated parameters; index 0 is the configured quality
    overrides: list[dict[str, Any]]  # what each level changes ({} for level 0)
    prior_s: float = 0.0  # level 0's prior (``expected_ms``); lower levels start unmeasured
    budget_s: float = 0.5
    hold_s: float = 1.0
    retry_s: float = 2.0
    retry_max_s: float = 30.0
    headroom: float = 0.1  # fraction of the budget the level above must leave spare
    level: int = 0
    steps: Counter[str] = field(default_factory=Counter)
    frames_by_level: Counter[int] = field(default_factory=Counter)
    estimators: list[ServiceTimeEstimator] = field(default_factory=list)
    _entered_at: float = float("-inf")
    _retry_wait_s: float = 0.0

    def __post_init__(self) -> None:
        if not self.estimators:
            self.estimators = [ServiceTimeEstimator(self.prior_s)]
            self.estimators += [ServiceTimeEstimator(0.0) for _ in self.levels[1:]]
        self._retry_wait_s = self.retry_s

    @property
    def estimator(self) -> ServiceTimeEstimator:
        return self.estimators[self.level]

    @property
    def params(self) -> BaseModel:
        return self.levels[self.level]

    def down(self, at: float, slack_s: float) -> LadderStep | None:
        """The step to take for a frame that would miss at this level, or None (drop it)."""
        for index in range(self.level + 1, len(self.levels)):
            if self.estimators[index].estimate <= slack_s:
                if at - self._entered_at < max(self.hold_s, self._retry_wait_s):
                    self._retry_wait_s = min(self._retry_wait_s * 2, self.retry_max_s)  # it did not hold
                else:
                    self._retry_wait_s = self.retry_s
                return self._move(index, "down", at, slack_s)
        return None

    def up(self, at: float, slack_s: float) -> LadderStep | None:
        """The step to take for a frame that fits at this level, or None (stay)."""
        if self.level == 0:
            return None
        held = at - self._entered_at
        if held < self.hold_s:
            return None
        above = self.level - 1
        retry = held >= self._retry_wait_s and self.estimators[above].mean is not None
        if retry:
            self.estimators[above].forget()  # measured under another load: measure it again
        if self.estimators[above].estimate <= slack_s - self.headroom * self.budget_s:
            return self._move(above, "up", at, slack_s, retry)
        return None

    def processed(self) -> None:
        """Count one frame processed at the current level."""
        self.frames_by_level[self.level] += 1

    def _move(self, level: int, direction: Direction, at: float, slack_s: float, retry: bool = False) -> LadderStep:
        step = LadderStep(
            direction=direction,
            level=level,
            previous=self.level,
            params=dict(self.overrides[level]),
            estimate_ms=round(self.estimators[level].estimate * 1000, 1),
            slack_ms=round(slack_s * 1000, 1),
            retry=retry,
        )
        self.level = level
        self._entered_at = at
        self.steps[direction] += 1
        return step
