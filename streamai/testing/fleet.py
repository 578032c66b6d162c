"""A whole fleet as real processes on loopback (Redis, routers, nodes) for chaos tests and local fleets.

Every process is a real ``streamai router`` / ``streamai serve`` / ``redis-server``, so a
test can SIGKILL one and watch the rest. Nodes get their own credential from the fleet
secret, as in production (SECURITY.md).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import yaml

from ..fleet.membership import node_token
from .node import free_port
from .redis_server import RedisServer

ROOT = Path(__file__).resolve().parents[2]
LIFTED = {"requests_per_s": 1000, "requests_burst": 1000, "sessions_per_min": 60_000, "sessions_burst": 1000}


class FleetProcesses:
    """Redis, router replicas and nodes as subprocesses; ``kill`` / ``respawn`` any of them."""

    def __init__(self, folder: Path, secret: str = "chaos-fleet-secret-0123456789", admin: str = "chaos-admin") -> None:
        self.folder = folder
        self.secret = secret
        self.admin = admin
        self.redis = RedisServer(data_dir=folder / "redis")
        self.routers: dict[str, tuple[str, subprocess.Popen[bytes]]] = {}
        self.nodes: dict[str, tuple[str, subprocess.Popen[bytes]]] = {}
        self._node_args: dict[str, list[str]] = {}

    def start_redis(self) -> None:
        (self.folder / "redis").mkdir(parents=True, exist_ok=True)
        self.redis.start()

    def start_router(self, name: str, heartbeat_s: float = 0.5, missed: float = 3) -> str:
        port = free_port()
        config = {
            "port": port, "heartbeat_interval_s": heartbeat_s, "missed_heartbeats": missed,
            "node_secret": self.secret, "admin_token": self.admin, "redis_url": self.redis.url,
            "sync_interval_s": 0.1, "default_region": "eu-west", "failure_cooldown_s": 30,
            "protection": LIFTED,  # every test client is 127.0.0.1: per-address limits are tested elsewhere
        }  # fmt: skip
        path = self.folder / f"router-{name}.yaml"
        path.write_text(yaml.safe_dump(config))
        url = f"http://127.0.0.1:{port}"
        self.routers[name] = (url, self._spawn(["router", "--config", str(path)], f"router-{name}"))
        return url

    def start_node(self, node_id: str, capacity: int = 4, region: str = "eu-west") -> str:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        settings = self.folder / "node.yaml"
        settings.write_text(yaml.safe_dump({"protection": {**LIFTED, "max_sessions_per_client": capacity}}))
        routers = ",".join(u for u, _ in self.routers.values())
        args = ["serve", "--port", str(port), "--ice-loopback", "--router", routers, "--region", region]
        args += ["--node-id", node_id, "--public-url", url, "--max-sessions", str(capacity), "--config", str(settings)]
        self._node_args[node_id] = args
        env = {"STREAMAI_NODE_TOKEN": node_token(self.secret, node_id)}
        self.nodes[node_id] = (url, self._spawn(args, f"node-{node_id}", env))
        return url

    def _spawn(self, args: list[str], name: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        log = (self.folder / f"{name}.log").open("ab")
        environment = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        command = [sys.executable, "-m", "streamai", *args]
        return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env=environment)

    def healthy(self, router: str) -> set[str]:
        """Node ids a router calls healthy (empty when it does not answer)."""
        request = urllib.request.Request(f"{router}/v1/nodes", headers={"Authorization": f"Bearer {self.admin}"})
        try:
            with urllib.request.urlopen(request, timeout=2) as response:
                return {n["node_id"] for n in json.load(response)["nodes"] if n["state"] == "healthy"}
        except OSError:
            return set()

    def wait_healthy(self, expected: set[str], timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(self.healthy(url) >= expected for url, _ in self.routers.values()):
                return
            for name, (_, process) in [*self.routers.items(), *self.nodes.items()]:
                if process.poll() is not None:
                    raise RuntimeError(f"{name} exited early:\n{self.log_tail(name)}")
            time.sleep(0.2)
        raise RuntimeError(f"nodes {sorted(expected)} never all healthy at every router")

    def kill_node(self, node_id: str) -> None:
        _, process = self.nodes[node_id]
        process.send_signal(signal.SIGKILL)
        process.wait(5)

    def respawn_node(self, node_id: str) -> None:
        env = {"STREAMAI_NODE_TOKEN": node_token(self.secret, node_id)}
        url = self.nodes[node_id][0]
        self.nodes[node_id] = (url, self._spawn(self._node_args[node_id], f"node-{node_id}", env))

    def kill_router(self, name: str) -> None:
        _, process = self.routers[name]
        process.send_signal(signal.SIGKILL)
        process.wait(5)

    def log_tail(self, name: str, lines: int = 30) -> str:
        for prefix in ("", "node-", "router-"):
            path = self.folder / f"{prefix}{name}.log"
            if path.exists():
                return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
        return "(no log)"

    def stop(self) -> None:
        for _, process in [*self.nodes.values(), *self.routers.values()]:
            if process.poll() is None:
                process.terminate()
        for _, process in [*self.nodes.values(), *self.routers.values()]:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
        self.redis.stop()
