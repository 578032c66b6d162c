"""One model, many sessions: decodes that end an utterance go first, partial decodes only when it is free.

Every session's ``asr`` stage decodes on its own thread, but the sessions of a node share
one Whisper model, and CTranslate2 runs the calls on one model ``workers`` at a time (one by
default), in arrival order. A decode at a pause or at the end of an utterance is on the path to the
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
    """Priority access to one shared model that runs ``capacity`` decodes at once (thread-safe).

    With one slot (CTranslate2's default: one worker) an urgent decode waits only for the
    decode in progress. With more, partials may hold all but one slot, so an urgent decode
    never waits behind partials: only behind other urgent ones when every slot is taken.
    """

    def __init__(self, capacity: int = 1) -> None:
        self.capacity = max(1, capacity)
        self._partial_slots = max(1, self.capacity - 1)
        self._condition = threading.Condition()
        self._holders = 0
        self._partials = 0  # of the holders, partial decodes
        self._urgent_waiting = 0
        self.urgent_waits = 0  # urgent decodes that had to wait for another (counters, for benchmarks)
        self.partial_waits = 0

    def _partial_blocked(self) -> bool:
        return self._holders >= self.capacity or self._partials >= self._partial_slots or self._urgent_waiting > 0

    def busy(self) -> bool:
        """True while a partial decode could not start now (every slot it may use is held, or an urgent one waits)."""
        with self._condition:
            return self._partial_blocked()

    @contextlib.contextmanager
    def hold(self, urgent: bool) -> Iterator[None]:
        """Hold a slot for one decode; ``urgent`` ones pass every waiting partial."""
        with self._condition:
            if urgent:
                self._urgent_waiting += 1
                self.urgent_waits += self._holders >= self.capacity
                while self._holders >= self.capacity:
                    self._condition.wait()
                self._urgent_waiting -= 1
            else:
                self.partial_waits += self._partial_blocked()
                while self._partial_blocked():
                    self._condition.wait()
                self._partials += 1
            self._holders += 1
        try:
            yield
        finally:
            with self._condition:
                self._holders -= 1
                self._partials -= not urgent
                self._condition.notify_all()


_gates: weakref.WeakKeyDictionary[Any, DecodeGate] = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def gate_for(model: Any, capacity: int = 1) -> DecodeGate:
    """The gate of a shared model object (one per loaded model, node-wide; ``capacity``: its workers)."""
    with _lock:
        found = _gates.get(model)
        if found is None:
            found = _gates[model] = DecodeGate(capacity)
        return found
