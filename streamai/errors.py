"""The one shape of a refused request: an HTTP status, a machine code, a message for people."""

from __future__ import annotations

import math
from typing import Any


class ClientError(Exception):
    """A request that cannot be served; ``body()`` and ``headers()`` are what the client gets."""

    def __init__(self, status: int, code: str, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.retry_after = retry_after

    def body(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message}}

    def headers(self) -> dict[str, str] | None:
        if self.retry_after is None:
            return None
        return {"Retry-After": str(max(1, math.ceil(self.retry_after)))}
