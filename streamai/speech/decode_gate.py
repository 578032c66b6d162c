"""One model, many sessions: decodes that end an utterance go first, partial decodes only when it is free.

Every session's ``asr`` stage decodes on its own thread, but the sessions of a node share
one Whisper model, and CTranslate2 runs the calls on one model one after another, in
arrival order. A decode at a pause or at the end of an utterance is on the path to the
listener's ear; a periodic partial decode is not. ``DecodeGate.hold(urgent=True)``
waits only for the decode in progress and goes ahead of every partial waiting;
partials wait for the urgent ones, and a stage skips a partial when the model is busy
(``busy()``), so partials thin out under load instead of queueing.
"""

from __future__ import annotations

import contextlib
import threading
import weakref
from collections.abc import Iterator
from typing import Any


class DecodeGate:
    """Priority access to one shared model (thread-safe; held around one blocking decode)."""

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._holders = 0
        self._urgent_waiting = 0
        self.urgent_waits = 0  # urgent decodes that had to wait for another (counters, for benchmarks)
        self.partial_waits = 0

    def busy(self) -> bool:
        """True while a decode holds the model or an urgent one waits for it."""
        with self._condition:
            return self._holders > 0 or self._urgent_waiting > 0

    @contextlib.contextmanager
    def hold(self, urgent: bool) -> Iterator[None]:
        """Hold the model for one decode; ``urgent`` ones pass every waiting partial."""
        with self._condition:
            if urgent:
                self._urgent_waiting += 1
                self.urgent_waits += self._holders > 0
                while self._holders:
                    self._condition.wait()
                self._urgent_waiting -= 1
            else:
                self.partial_waits += self._holders > 0 or self._urgent_waiting > 0
                while self._holders or self._urgent_waiting:
                    self._condition.wait()
            self._holders += 1
        try:
            yield
        finally:
            with self._condition:
                self._holders -= 1
                self._condition.notify_all()


_gates: weakref.WeakKeyDictionary[Any, DecodeGate] = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def gate_for(model: Any) -> DecodeGate:
    """The gate of a shared model object (one per loaded model, node-wide)."""
    with _lock:
        found = _gates.get(model)
        if found is None:
            found = _gates[model] = DecodeGate()
        return found
