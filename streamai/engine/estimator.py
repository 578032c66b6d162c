"""Moving estimate of a stage's service time, used for deadline admission."""

from __future__ import annotations


class ServiceTimeEstimator:
    """EWMA of service time plus ``k`` times its EWMA absolute deviation (seconds).

    Until the first sample the configured prior (``expected_ms`` in YAML) stands in,
    so a stage known to be slow is not admitted blindly on its first frames.
    """

    def __init__(self, prior_s: float = 0.0, alpha: float = 0.2, k: float = 2.0) -> None:
        self.prior_s = prior_s
        self.alpha = alpha
        self.k = k
        self.mean: float | None = None
        self.deviation = 0.0
        self.samples = 0

    def update(self, seconds: float) -> None:
        self.samples += 1
        if self.mean is None:
            self.mean = seconds
            self.deviation = seconds / 4
            return
        error = seconds - self.mean
        self.mean += self.alpha * error
        self.deviation += self.alpha * (abs(error) - self.deviation)

    def forget(self) -> None:
        """Drop the history: the next sample starts the estimate afresh (a probe after a stale outlier)."""
        self.mean = None
        self.deviation = 0.0

    @property
    def estimate(self) -> float:
        """A high estimate of the next service time, in seconds."""
        if self.mean is None:
            return self.prior_s
        return self.mean + self.k * self.deviation
