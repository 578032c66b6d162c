"""Fuzz client control messages: every message is applied or answered with a non-fatal ``error``
event, never a crash, on the parser, on a real events WebSocket and on a real data channel.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest
from fuzz_support import ErrorLog, NodeThread
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamai.server.app import SESSIONS
from streamai.server.settings import ServerSettings
from streamai.testing.artifacts import record_fuzz_counts
from streamai.testing.peer import Probe
from streamai.transport.control import ControlParser, ControlRejected

TRIED: Counter[str] = Counter()
CODES = {"too_large", "rate_limited", "bad_encoding", "bad_json", "bad_message", "too_deep", "bad_params"}

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=20), st.sampled_from(["prompt", "ping"])
)
json_values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
)
typed = st.fixed_dictionaries(
    {"type": st.sampled_from(["prompt", "params", "interrupt", "ping", "pong", "", "PROMPT"])},
    optional={"text": json_values, "params": json_values, "t": json_values, "extra": json_values},
)


def nested(depth: int) -> str:
    return '{"type": "params", "params": ' + '{"a": ' * depth + "1" + "}" * depth + "}"


messages = st.one_of(
    typed.map(json.dumps),
    json_values.map(lambda v: json.dumps(v, allow_nan=True)),
    st.text(max_size=200),
    st.binary(max_size=200),
    st.integers(min_value=1, max_value=3000).map(nested),
    st.tuples(st.sampled_from(["x", "é", "\U0001f600"]), st.integers(1, 20_000)).map(lambda p: p[0] * p[1]),
    st.integers(min_value=1900, max_value=2100).map(lambda n: json.dumps({"type": "prompt", "text": "y" * n})),
)


@settings(max_examples=1500, deadline=None)
@given(messages)
def test_parser_accepts_or_rejects_with_a_known_code(raw: str | bytes) -> None:
    parser = ControlParser(rate_per_s=1e9, burst=10**9)
    TRIED["parser"] += 1
    try:
        message = parser.parse(raw)
    except ControlRejected as exc:
        assert exc.code in CODES and str(exc)
        return
    assert message.type in ("prompt", "params", "interrupt", "ping")


@pytest.fixture(scope="module")
def node() -> Iterator[tuple[NodeThread, Any]]:
    """A node, one real session (a data-channel-only peer) and an events WebSocket on it."""
    node_settings = ServerSettings(port=0, ice_loopback=True, control_rate_per_s=1e6, control_burst=10**6)
    errors = ErrorLog()
    import logging

    logging.getLogger().addHandler(errors)
    try:
        with NodeThread(node_settings) as running:

            async def connect() -> tuple[aiohttp.ClientSession, Probe, aiohttp.ClientWebSocketResponse]:
                http = aiohttp.ClientSession()
                probe = Probe(f"http://127.0.0.1:{running.port}", "transform")
                await probe.connect(http)
                for _ in range(100):
                    if probe.channel.readyState == "open":
                        break
                    await asyncio.sleep(0.05)
                ws = await http.ws_connect(
                    f"http://127.0.0.1:{running.port}/v1/sessions/{probe.report.session_id}/events",
                    headers=probe.session_headers(),
                )
                return http, probe, ws

            http, probe, ws = running.call(connect())
            yield running, (http, probe, ws)
            alive = probe.report.session_id in running.app[SESSIONS].sessions

            async def close() -> None:
                await ws.close()
                await probe.close(http)
                await http.close()

            running.call(close())
    finally:
        logging.getLogger().removeHandler(errors)
    assert alive, "the fuzzed session did not survive"
    assert not errors.records, [r.getMessage() for r in errors.records[:5]]
    record_fuzz_counts("control", TRIED)


async def _ws_round(ws: aiohttp.ClientWebSocketResponse, batch: list[str | bytes], marker: float) -> list[dict]:
    for raw in batch:
        if isinstance(raw, bytes):
            await ws.send_bytes(raw)
        else:
            await ws.send_str(raw)
    await ws.send_json({"type": "ping", "t": marker})
    replies: list[dict] = []
    ends = time.monotonic() + 10
    while time.monotonic() < ends:
        event = await ws.receive_json(timeout=10)
        if event.get("type") == "pong" and event.get("t") == marker:
            return replies
        replies.append(event)
    raise AssertionError("no pong after the batch")


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(messages, min_size=1, max_size=8))
def test_websocket_control_messages(node: tuple[NodeThread, Any], batch: list[str | bytes]) -> None:
    running, (_http, _probe, ws) = node
    marker = time.time()
    replies = running.call(_ws_round(ws, batch, marker))
    TRIED["websocket"] += len(batch)
    for event in replies:
        if event["type"] == "error":
            assert event["code"] in CODES and event["fatal"] is False
    assert not ws.closed


async def _channel_round(probe: Probe, batch: list[str | bytes], marker: float) -> list[dict]:
    seen = len(probe.report.events)
    for raw in batch:
        probe.send(raw)
    probe.send({"type": "ping", "t": marker})
    ends = time.monotonic() + 10
    while time.monotonic() < ends:
        events = probe.report.events[seen:]
        if any(e.get("type") == "pong" and e.get("t") == marker for e in events):
            return events
        await asyncio.sleep(0.01)
    raise AssertionError("no pong after the batch")


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(messages, min_size=1, max_size=8))
def test_data_channel_control_messages(node: tuple[NodeThread, Any], batch: list[str | bytes]) -> None:
    running, (_http, probe, _ws) = node
    marker = time.time()
    events = running.call(_channel_round(probe, batch, marker))
    TRIED["data_channel"] += len(batch)
    for event in events:
        if event.get("type") == "error":
            assert event["code"] in CODES and event["fatal"] is False
    assert probe.channel.readyState == "open"
