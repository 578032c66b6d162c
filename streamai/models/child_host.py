"""The child side of ``ChildModel``: load one model, answer calls on a socket until it closes.

``python -m streamai.models.child_host --fd N --factory module:function --threads T``.
The first message is ``("ready", pid)`` or ``("error", reason)``; then each request
``(id, method, args)`` runs on a pool of ``T`` threads and is answered ``(id, True,
result)`` or ``(id, False, exception)``. End of the socket (the parent closed it or
died) ends the process at once, calls in flight included.
"""

from __future__ import annotations

import argparse
import importlib
import os
import pickle
import threading
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.connection import Connection
from typing import Any


def load(factory: str) -> Any:
    """The model ``factory`` (``"module:function"``) returns."""
    module_name, _, function = factory.partition(":")
    return getattr(importlib.import_module(module_name), function)()


def portable(exc: BaseException) -> BaseException:
    """``exc`` if it pickles, else a RuntimeError with its type and message."""
    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:
        return RuntimeError(f"{type(exc).__name__}: {exc}")


def serve(conn: Connection, model: Any, threads: int) -> None:
    send_lock = threading.Lock()

    def answer(call_id: int, method: str, args: tuple[Any, ...]) -> None:
        try:
            reply = (call_id, True, getattr(model, method)(*args))
        except Exception as exc:
            reply = (call_id, False, portable(exc))
        try:
            with send_lock:
                conn.send(reply)
        except OSError:
            os._exit(0)

    with ThreadPoolExecutor(threads, thread_name_prefix="model") as pool:
        while True:
            try:
                call_id, method, args = conn.recv()
            except (EOFError, OSError):
                os._exit(0)  # the parent is gone: calls in flight are nobody's now
            pool.submit(answer, call_id, method, args)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--fd", type=int, required=True)
    parser.add_argument("--factory", required=True)
    parser.add_argument("--threads", type=int, default=4)
    options = parser.parse_args()
    conn = Connection(options.fd)
    try:
        model = load(options.factory)
    except Exception as exc:
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
        raise SystemExit(1) from exc
    conn.send(("ready", os.getpid()))
    serve(conn, model, max(1, options.threads))


if __name__ == "__main__":
    main()
