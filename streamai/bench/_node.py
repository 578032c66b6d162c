"""A node in a subprocess for benchmarks: its CPU and memory are measured apart from the peers."""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import psutil

from ..testing.node import free_port


@dataclass
class NodeProcess:
    url: str
    process: psutil.Process

    def cpu_percent(self) -> float:
        """CPU % of one core used by the node since the previous call (children included)."""
        total = self.process.cpu_percent(None)
        for child in self.process.children(recursive=True):
            try:
                total += child.cpu_percent(None)
            except psutil.Error:
                continue
        return total

    def rss_mb(self) -> float:
        return self.process.memory_info().rss / 2**20


@contextmanager
def node_process(*extra: str, timeout: float = 60.0) -> Iterator[NodeProcess]:
    """``streamai serve`` on a free loopback port until the block ends."""
    port = free_port()
    command = [sys.executable, "-m", "streamai", "serve", "--port", str(port), "--ice-loopback", *extra]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        started = time.monotonic()
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"node exited: {proc.stderr.read().decode()[-2000:] if proc.stderr else ''}")
            try:
                with urllib.request.urlopen(f"{url}/healthz", timeout=1):
                    break
            except OSError:
                if time.monotonic() - started > timeout:
                    raise RuntimeError("node did not become healthy in time") from None
                time.sleep(0.2)
        yield NodeProcess(url, psutil.Process(proc.pid))
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
