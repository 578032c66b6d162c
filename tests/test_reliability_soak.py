"""A short soak: 4 concurrent sessions, recycled, for 45 s against a node in a subprocess; nothing leaks.

After every session has ended the node must hold no more fds, asyncio tasks or open
peer connections than at the baseline (taken after one warm-up session), no more
Python threads than the baseline plus the event loop's bounded default executor, and
its RSS must be back within 150 MB of the baseline (closed sessions are kept, bounded
at 64, for /metrics; the allocator keeps some freed memory). Figures and the plot go
to test-artifacts/.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import pytest

from streamai.bench import soak

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
RSS_BOUND_MB = 150.0


@pytest.mark.slow
async def test_short_soak_leaks_nothing() -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    parser = argparse.ArgumentParser()
    soak.add_arguments(parser)
    args = parser.parse_args(["--sessions", "4", "--minutes", "0.75", "--session-s", "15", "--interval", "10"])
    args.out = str(ARTIFACTS / "soak-short.json")
    result = await soak.measure(args)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(result["summary"])

    baseline, after, growth = result["baseline"], result["after"], result["growth"]
    assert result["node_alive"]
    assert result["failures"] == [] and result["sessions_refused"] == 0
    assert result["sessions_opened"] >= 8  # recycled at least once per slot
    assert result["peak_sessions"] == 4
    loaded = [row for row in result["samples"] if row["sessions"] == 4]
    assert loaded and all(row["frames_out"] > 0 for row in loaded)
    assert sum(row["video_latency_samples"] for row in result["samples"]) > 100  # peers measured real video
    # nothing left behind by the sessions
    assert growth["open_fds"] <= 0, (baseline["open_fds"], after["open_fds"])
    assert growth["asyncio_tasks"] <= 0, after["tasks_by_name"]
    assert after["peer_connections_open"] == 0
    assert after["peer_connections"] <= 1  # finished sessions are folded into totals, not kept
    python_threads = {k: v for k, v in after["threads_by_name"].items() if k != "asyncio"}
    assert python_threads == {k: v for k, v in baseline["threads_by_name"].items() if k != "asyncio"}
    assert after["threads_by_name"].get("asyncio", 0) <= min(32, (os.cpu_count() or 1) + 4)  # default executor
    native = after["threads"] - sum(after["threads_by_name"].values())
    assert native <= baseline["threads"] - sum(baseline["threads_by_name"].values()), after["threads"]
    assert growth["rss_mb"] <= RSS_BOUND_MB, growth["rss_mb"]
    # every session had an events WebSocket, and the node closed each one with its session
    sockets = result["events_sockets"]
    assert sockets["opened"] >= 8 and sockets["events_read"] > 0
    assert sockets["left_open"] == 0 and sockets["closed_by_node_with_their_session"] == sockets["opened"]
    assert Path(result["plot"]).exists()
