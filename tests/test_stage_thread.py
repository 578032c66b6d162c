"""A stage's model calls run on its own daemon thread: a call that never returns cannot hold
the node's process open after its pipeline has stopped."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from streamai.executor import StageThread

STUCK_NODE = """
import asyncio, numpy as np
from streamai.config import parse_pipeline
from streamai.engine import CollectingSink, PipelineRunner
from streamai.frames import VideoFrame
from streamai.stage import StageRegistry

async def main():
    registry = StageRegistry()
    text = "name: stuck\\nstages:\\n  - {type: fault, params: {hang_s: 3600, blocking: true}}\\n"
    runner = PipelineRunner(parse_pipeline(text, "<t>", registry), registry, CollectingSink())
    await runner.start()
    runner.submit(VideoFrame(image=np.zeros((8, 8, 3), np.uint8)))
    await asyncio.sleep(0.5)          # the model call is now stuck for an hour
    await runner.stop()
    print("stopped", flush=True)

asyncio.run(main())
"""


def test_a_stuck_model_call_does_not_keep_the_process_alive() -> None:
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", STUCK_NODE], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "stopped" in done.stdout
    assert time.monotonic() - started < 30  # not the hour the call would take


def test_stage_thread_runs_calls_in_order_and_passes_errors() -> None:
    thread = StageThread("test-stage")
    order: list[int] = []
    futures = [thread.submit(order.append, i) for i in range(5)]
    for future in futures:
        future.result(5)
    assert order == [0, 1, 2, 3, 4]
    with pytest.raises(ZeroDivisionError):
        thread.submit(lambda: 1 / 0).result(5)
    thread.shutdown(wait=True)
    assert not thread.alive
