"""A token bucket: the one rate limiter of control messages and of the entry point."""

from __future__ import annotations

import time
from dataclasses import dataclass


@dataclass
class TokenBucket:
    """``rate`` tokens a second, at most ``burst`` saved up."""

    rate: float
    burst: float
    tokens: float = -1.0
    stamp: float = 0.0

    def take(self, at: float | None = None) -> bool:
        at = time.monotonic() if at is None else at
        if self.tokens < 0:
            self.tokens, self.stamp = self.burst, at
        self.tokens = min(self.burst, self.tokens + (at - self.stamp) * self.rate)
        self.stamp = at
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False
