"""Small models for ``ChildModel``'s tests, built at test time (no weights): they hold, crash or fail to load."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path


class Holder:
    """A model whose calls take as long as they are told to, and one that crashes its process."""

    def hold(self, seconds: float) -> str:
        time.sleep(seconds)
        return "held"

    def pid(self) -> int:
        return os.getpid()

    def fail(self, message: str) -> None:
        raise ValueError(message)

    def crash(self) -> None:
        os.kill(os.getpid(), signal.SIGSEGV)
        time.sleep(60)  # never answer: kill() may return before the signal lands (a fresh-clone run got None back)


def load_holder() -> Holder:
    return Holder()


def load_broken() -> Holder:
    raise FileNotFoundError("weights.bin is missing")


def load_hung() -> Holder:
    time.sleep(600)  # a load that never finishes
    return Holder()


def load_hung_on_restart() -> Holder:
    """Loads at once the first time, then hangs: the file named by ``STREAMAI_TEST_LOAD_MARKER`` says it loaded."""
    marker = Path(os.environ["STREAMAI_TEST_LOAD_MARKER"])
    if marker.exists():
        time.sleep(600)
    marker.touch()
    return Holder()
