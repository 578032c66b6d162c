"""One daemon thread per heavy stage: model calls run off the event loop, and a call that
never returns can neither block the loop nor keep the process from exiting.

``concurrent.futures.ThreadPoolExecutor`` joins its threads at interpreter exit, so one
stuck model call would hang a node's shutdown forever; this executor's thread is a
daemon and is abandoned when it is stuck. When it is not, the process waits for it a
little at exit (``EXIT_GRACE_S``): a daemon thread that finishes a C++ model call
(onnxruntime, CTranslate2) after the interpreter began finalizing is cancelled inside
that library's frames, which aborts the whole process ("terminate called without an
active exception").
"""

from __future__ import annotations

import atexit
import queue
import threading
import time
import weakref
from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import Any

EXIT_GRACE_S = 5.0  # at interpreter exit, how long in all to wait for stage threads to finish their call
_LIVE: weakref.WeakSet[StageThread] = weakref.WeakSet()


def _join_at_exit() -> None:
    """Let stage threads that are shut down finish their last call before the interpreter finalizes."""
    ends = time.monotonic() + EXIT_GRACE_S
    for executor in list(_LIVE):
        executor._work.put(None)  # idle threads return at once; a busy one after its call
        executor._thread.join(max(0.0, ends - time.monotonic()))


atexit.register(_join_at_exit)


class StageThread(Executor):
    """A single daemon worker thread running submitted calls in order."""

    def __init__(self, name: str) -> None:
        self._work: queue.SimpleQueue[tuple[Future[Any], Callable[[], Any]] | None] = queue.SimpleQueue()
        self._shutdown = False
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()
        _LIVE.add(self)

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        with self._lock:
            if self._shutdown:
                raise RuntimeError("cannot schedule new calls after shutdown")
            future: Future[Any] = Future()
            self._work.put((future, lambda: fn(*args, **kwargs)))
            return future

    def _run(self) -> None:
        while True:
            item = self._work.get()
            if item is None:
                return
            future, call = item
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(call())
            except BaseException as exc:  # handed to the awaiting coroutine
                future.set_exception(exc)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._lock:
            self._shutdown = True
            if cancel_futures:
                while True:
                    try:
                        item = self._work.get_nowait()
                    except queue.Empty:
                        break
                    if item is not None:
                        item[0].cancel()
            self._work.put(None)
        if wait and threading.current_thread() is not self._thread:
            self._thread.join()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()
