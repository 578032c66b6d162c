"""Real-browser test plumbing: fake camera/mic files, a loopback-only network namespace, a
``streamai serve`` subprocess inside it, and the Playwright driver (tests/browser/driver.mjs).

Debian's Chromium (``/usr/lib/chromium/chromium``) is driven by ``playwright-core`` installed in
``clients/js/node_modules`` (``npm install`` there; never ``npx playwright install``).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
JS_DIR = ROOT / "clients" / "js"
DRIVER = ROOT / "tests" / "browser" / "driver.mjs"
CHROMIUM_CANDIDATES = ("/usr/lib/chromium/chromium", "/usr/bin/chromium")

CHROMIUM_ARGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
    "--allow-loopback-in-peer-connection",
    "--autoplay-policy=no-user-gesture-required",
)


# -- tools ----------------------------------------------------------------------------------


def chromium_path() -> str | None:
    for candidate in CHROMIUM_CANDIDATES:
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def playwright_installed() -> bool:
    return (JS_DIR / "node_modules" / "playwright-core" / "package.json").is_file()


def ensure_browser_tools(install: bool = True) -> str | None:
    """Installs chromium (apt, as root) and playwright-core (npm) when missing.

    Returns None when everything is there, else the reason the browser tests cannot run.
    """
    if shutil.which("node") is None:
        return "node is not installed"
    if chromium_path() is None and install and os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], capture_output=True, env=env, timeout=600)
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "chromium"],
            capture_output=True,
            env=env,
            timeout=900,
        )
    if chromium_path() is None:
        return "chromium is not installed (apt-get install -y chromium)"
    if not playwright_installed() and install and shutil.which("npm"):
        subprocess.run(
            ["npm", "install", "--no-audit", "--no-fund", "--silent"], cwd=JS_DIR, capture_output=True, timeout=600
        )
    if not playwright_installed():
        return "playwright-core is not installed (cd clients/js && npm install)"
    return None


# -- fake media -----------------------------------------------------------------------------


def write_fake_camera(path: Path, seconds: float = 2.0, width: int = 640, height: int = 480, fps: int = 30) -> Path:
    """A moving 4:2:0 y4m test pattern (Chromium loops it)."""
    from ..media.y4m import write_y4m
    from .media import TestPattern

    pattern = TestPattern(width, height, fps)
    write_y4m(path, pattern.frames(int(seconds * fps)), fps)
    return path


def write_fake_face_camera(path: Path, seconds: float = 1.0, fps: int = 30) -> Path:
    """A still face (for avatar pipelines) as a 640x480 y4m."""
    from ..media.y4m import write_y4m
    from .face_media import camera_frame

    frame = camera_frame()
    write_y4m(path, (frame for _ in range(int(seconds * fps))), fps)
    return path


def write_fake_tone(path: Path, seconds: float = 2.0, rate: int = 48_000, hz: float = 440.0) -> Path:
    """A soft tone with a 0.25 s pause each second: audio with energy for loopback checks."""
    from ..media.wav import write_wav

    t = np.arange(int(seconds * rate)) / rate
    wave = 0.25 * np.sin(2 * np.pi * hz * t) * ((t % 1.0) < 0.75)
    write_wav(path, np.round(wave * 32767).astype(np.int16).reshape(-1, 1), rate)
    return path


def write_fake_speech(path: Path, text: str, voice: str = "en-us", lead_s: float = 0.5, trail_s: float = 1.5) -> Path:
    """espeak-ng speech between silences (raises ``EspeakMissing`` without espeak-ng)."""
    from ..media.wav import write_wav
    from .speech import RATE, utterance_clip

    write_wav(path, utterance_clip(text, lead_s=lead_s, trail_s=trail_s, voice=voice), RATE)
    return path


def chromium_args(camera: Path | None, microphone: Path | None) -> list[str]:
    args = list(CHROMIUM_ARGS)
    if camera is not None:
        args.append(f"--use-file-for-fake-video-capture={camera}")
    if microphone is not None:
        args.append(f"--use-file-for-fake-audio-capture={microphone}")
    return args


# -- loopback-only network namespace ----------------------------------------------------------


class LoopbackNamespace:
    """A network namespace holding only ``lo``; ``wrap(cmd)`` runs a command inside it.

    Root: ``unshare -n``; otherwise ``unshare -rn`` (user namespace). When neither works the
    commands run unwrapped on the host (``reason`` says why) and still use 127.0.0.1 only.
    """

    def __init__(self) -> None:
        self.holder: subprocess.Popen[bytes] | None = None
        self.rootless = False
        self.reason: str | None = None

    @property
    def active(self) -> bool:
        return self.holder is not None and self.holder.poll() is None

    def start(self) -> LoopbackNamespace:
        if not (shutil.which("unshare") and shutil.which("nsenter") and shutil.which("ip")):
            self.reason = "unshare/nsenter/ip not available"
            return self
        attempts = [["unshare", "-n"]] if os.geteuid() == 0 else []
        attempts.append(["unshare", "-rn"])
        for prefix in attempts:
            holder = subprocess.Popen(
                [*prefix, "--", "sh", "-c", "ip link set lo up && echo up && exec sleep 86400"],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            line = holder.stdout.readline() if holder.stdout else b""
            if line.strip() == b"up":
                self.holder = holder
                self.rootless = prefix[1] == "-rn"
                probe = subprocess.run(self.wrap(["true"]), capture_output=True, timeout=10)
                if probe.returncode == 0:
                    return self
                self.stop()
            else:
                holder.kill()
                holder.wait()
        self.reason = "could not create a network namespace (needs root or unprivileged user namespaces)"
        return self

    def wrap(self, cmd: list[str]) -> list[str]:
        if not self.active:
            return list(cmd)
        assert self.holder is not None
        if self.rootless:
            return ["nsenter", "-t", str(self.holder.pid), "-U", "-n", "--preserve-credentials", "--", *cmd]
        return ["nsenter", "-t", str(self.holder.pid), "-n", "--", *cmd]

    def free_port(self) -> int:
        if self.active:
            return 8080  # a fresh namespace has every port free
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]

    def http_json(self, url: str, timeout: float = 5.0, token: str | None = None) -> tuple[int, Any]:
        """GET ``url`` from inside the namespace (with ``token`` as bearer): (status, parsed JSON or text)."""
        code = (
            "import json,sys,urllib.request,urllib.error\n"
            "try:\n"
            "    h={'Authorization': 'Bearer '+sys.argv[2]} if sys.argv[2] else {}\n"
            "    q=urllib.request.Request(sys.argv[1], headers=h)\n"
            f"    r=urllib.request.urlopen(q, timeout={timeout})\n"
            "    print(json.dumps([r.status, r.read().decode()]))\n"
            "except urllib.error.HTTPError as e:\n"
            "    print(json.dumps([e.code, e.read().decode()]))\n"
            "except Exception as e:\n"
            "    print(json.dumps([0, str(e)]))\n"
        )
        out = subprocess.run(
            self.wrap([sys.executable, "-c", code, url, token or ""]),
            capture_output=True,
            text=True,
            timeout=timeout + 10,
        )
        status, body = json.loads(out.stdout.strip().splitlines()[-1])
        with contextlib.suppress(ValueError):
            body = json.loads(body)
        return status, body

    def stop(self) -> None:
        if self.holder is not None:
            with contextlib.suppress(ProcessLookupError):
                self.holder.kill()
            self.holder.wait()
            self.holder = None

    def __enter__(self) -> LoopbackNamespace:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# -- the server -------------------------------------------------------------------------------


class ServerProcess:
    """``streamai serve --ice-loopback`` in the namespace; ready when /healthz answers 200."""

    def __init__(self, ns: LoopbackNamespace, log_path: Path, extra_args: list[str] | None = None) -> None:
        self.ns = ns
        self.port = ns.free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.extra_args = extra_args or []
        self.admin_token = secrets.token_urlsafe(24)  # the tests list sessions as the node's admin
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, ready_timeout: float = 60.0) -> ServerProcess:
        cmd = [sys.executable, "-m", "streamai", "serve", "--host", "127.0.0.1", "--port", str(self.port)]
        cmd += ["--ice-loopback", *self.extra_args]
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("wb")
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "STREAMAI_ADMIN_TOKEN": self.admin_token}
        self.proc = subprocess.Popen(self.ns.wrap(cmd), stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env=env)
        deadline = time.monotonic() + ready_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"streamai serve exited with {self.proc.returncode}:\n{self.log_tail()}")
            status, _ = self.ns.http_json(f"{self.base}/healthz", timeout=2)
            if status == 200:
                return self
            time.sleep(0.3)
        raise RuntimeError(f"streamai serve not ready within {ready_timeout:.0f} s:\n{self.log_tail()}")

    def get(self, path: str) -> tuple[int, Any]:
        """GET ``path`` on the node as its admin."""
        return self.ns.http_json(f"{self.base}{path}", token=self.admin_token)

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        # nsenter forwards signals to the server it runs
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


# -- the driver --------------------------------------------------------------------------------


def run_driver(
    ns: LoopbackNamespace, scenario: dict[str, Any], timeout: float = 120.0, driver: Path = DRIVER
) -> dict[str, Any]:
    """Runs ``driver`` (default tests/browser/driver.mjs) with ``scenario``; returns its JSON result (``ok``, ...)."""
    scenario = {"chromium": chromium_path(), "jsDir": str(JS_DIR), **scenario}
    with tempfile.TemporaryDirectory(prefix="streamai-chromium-") as profile:
        scenario.setdefault("userDataDir", profile)
        config = Path(profile) / "scenario.json"
        config.write_text(json.dumps(scenario))
        try:
            out = subprocess.run(
                ns.wrap(["node", str(driver), str(config)]), capture_output=True, text=True, timeout=timeout, cwd=ROOT
            )
        except subprocess.TimeoutExpired as exc:
            return {"ok": False, "error": f"driver timed out after {timeout:.0f} s", "stderr": str(exc.stderr)[-4000:]}
    result: dict[str, Any] = {"ok": False, "error": "driver printed no result"}
    for line in reversed(out.stdout.splitlines()):
        if line.startswith("RESULT "):
            result = json.loads(line[len("RESULT ") :])
            break
    result["returncode"] = out.returncode
    result["stderr"] = out.stderr[-4000:]
    return result


@contextlib.contextmanager
def browser_server(log_dir: Path, extra_args: list[str] | None = None) -> Iterator[ServerProcess]:
    """A namespace and a ready server in it, torn down afterwards."""
    ns = LoopbackNamespace().start()
    server = ServerProcess(ns, log_dir / "server.log", extra_args)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        ns.stop()
