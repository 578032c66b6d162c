"""What every speech engine shares: it is opened for one stage and closed when the stage stops.

``open`` may load (or borrow, through ``acquire_model``) a model; ``close`` gives it
back. Blocking model calls on an engine are made by the stage on its own thread
(``Stage.run_blocking``); ``open`` itself runs on the event loop and keeps heavy work
in ``acquire_model``'s loader (a thread).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar


class Engine:
    """A vendor's model behind one family interface; ``name`` is its ``engine:`` key."""

    name: ClassVar[str] = ""

    def __init__(self, release: Callable[[], None] | None = None) -> None:
        self._release = release

    def close(self) -> None:
        """Give back what ``open`` acquired; safe to call twice."""
        release, self._release = self._release, None
        if release is not None:
            release()
