"""Fuzz the node's HTTP API with hypothesis: every answer is a 4xx with a JSON error (or a 200 for
input that happens to be valid), never a 500, never a crash, never a leaked session.

One real node serves every example from a thread of its own; requests go over real
sockets with ``http.client`` so that any bytes at all can be sent. The offer that
the SDP mutations start from is a real aiortc offer (audio, video, data channel).
"""

from __future__ import annotations

import http.client
import json
import logging
import urllib.parse
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from fuzz_support import ErrorLog, NodeThread
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from streamai.server.app import SESSIONS
from streamai.server.settings import ServerSettings
from streamai.testing.artifacts import record_fuzz_counts
from streamai.web.protection import ProtectionSettings

FUZZ = settings(max_examples=250, deadline=None, suppress_health_check=list(HealthCheck), derandomize=False)
TRIED: Counter[str] = Counter()


@pytest.fixture(scope="module")
def node() -> Iterator[NodeThread]:
    lifted = ProtectionSettings(
        requests_per_s=1e6, requests_burst=10**6, sessions_per_min=1e6, sessions_burst=10**6, max_sessions_per_client=50
    )
    node_settings = ServerSettings(port=0, ice_loopback=True, max_sessions=50, protection=lifted)
    errors = ErrorLog()
    logging.getLogger().addHandler(errors)
    try:
        with NodeThread(node_settings) as running:
            running.errors = errors  # type: ignore[attr-defined]
            yield running
            leftover = len(running.app[SESSIONS].sessions)
    finally:
        logging.getLogger().removeHandler(errors)
    assert not errors.records, [r.getMessage() for r in errors.records[:5]]
    assert leftover == 0
    record_fuzz_counts("http", TRIED)


def request(node: NodeThread, method: str, path: str, body: bytes | None = None, **headers: str) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", node.port, timeout=30)
    try:
        connection.request(method, path, body=body, headers={"Content-Type": "application/json", **headers})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def check(node: NodeThread, kind: str, status: int, body: bytes, ok: tuple[int, ...] = ()) -> dict[str, Any] | None:
    """A 4xx with ``{"error": {"code", "message"}}``, or one of the ``ok`` statuses; the node still answers."""
    TRIED[kind] += 1
    assert status < 500, (status, body[:300])
    if status in ok:
        TRIED[f"{kind}.accepted"] += 1
        return json.loads(body) if body.startswith(b"{") else None
    assert 400 <= status < 500, (status, body[:300])
    answer = json.loads(body)
    assert isinstance(answer["error"]["code"], str) and answer["error"]["code"]
    assert isinstance(answer["error"]["message"], str) and answer["error"]["message"]
    return None


def post_session(node: NodeThread, kind: str, body: bytes) -> None:
    status, answer = request(node, "POST", "/v1/sessions", body)
    parsed = check(node, kind, status, answer, ok=(200,))
    if parsed is not None:  # valid input: a real session was opened; close it (with its own token)
        own = f"Bearer {parsed['session_token']}"
        status, _ = request(node, "DELETE", f"/v1/sessions/{parsed['session_id']}", Authorization=own)
        assert status == 200
    assert not node.app[SESSIONS].sessions and node.app[SESSIONS].pending == 0


# -- strategies -----------------------------------------------------------------------------

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False),
    st.text(max_size=30),
    st.sampled_from(["transform", "passthrough", "offer", "answer", "v=0", "", "\x00", "ü" * 3]),
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)
FIELDS = ["pipeline", "sdp", "type", "params"]
PATHS = ["/v1/sessions", "/v1/sessions/{x}", "/v1/sessions/{x}/events", "/v1/pipelines", "/healthz", "/metrics"]
PATHS += ["/v1/{x}", "/{x}", "/web/{x}", "/js/{x}", "/v1/sessions/{x}/{x}", "/whip/{x}", "/whep/{x}"]


@FUZZ
@given(json_values)
def test_random_json_bodies(node: NodeThread, value: Any) -> None:
    post_session(node, "random_json", json.dumps(value).encode())


@FUZZ
@given(st.dictionaries(st.sampled_from([*FIELDS, "extra"]), json_values, max_size=5), st.booleans())
def test_session_fields_of_wrong_types(node: NodeThread, body: dict[str, Any], real_offer: bool) -> None:
    if real_offer and "sdp" not in body:
        body["sdp"] = node.offer
    post_session(node, "wrong_types", json.dumps(body).encode())


@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.sampled_from(FIELDS), st.integers(min_value=1000, max_value=400_000), st.sampled_from(["x", "é", "\\u0000"]))
def test_huge_strings(node: NodeThread, field: str, length: int, unit: str) -> None:
    body = {"pipeline": "transform", "sdp": node.offer, "type": "offer"}
    raw = json.dumps(body).encode().replace(b"}", b', "' + field.encode() + b'": "' + unit.encode() * length + b'"}')
    post_session(node, "huge_strings", raw)


@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.integers(min_value=1, max_value=120_000), st.sampled_from(["[", '{"a":']), st.sampled_from(FIELDS))
def test_deeply_nested_values(node: NodeThread, depth: int, opener: str, field: str) -> None:
    closer = "]" if opener == "[" else "}"
    nested = opener * depth + "1" + closer * depth
    raw = f'{{"pipeline": "transform", "{field}": {nested}}}'.encode()
    post_session(node, "deep_nesting", raw)


@FUZZ
@given(st.binary(max_size=2000), st.sampled_from([b"", b'{"sdp": "', b'{"pipeline": "']))
def test_invalid_utf8_and_random_bytes(node: NodeThread, junk: bytes, prefix: bytes) -> None:
    post_session(node, "bytes", prefix + junk)


@st.composite
def mutated_offer(draw: st.DrawFn, offer: str) -> str:
    """A real offer with a few line-level or character-level mutations."""
    lines = offer.split("\r\n")
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        if not lines:
            break
        at = draw(st.integers(min_value=0, max_value=len(lines) - 1))
        operation = draw(st.sampled_from(["drop", "dup", "swap", "chars", "number", "truncate", "insert", "value"]))
        if operation == "drop":
            del lines[at]
        elif operation == "dup":
            lines.insert(at, lines[at])
        elif operation == "swap":
            other = draw(st.integers(min_value=0, max_value=len(lines) - 1))
            lines[at], lines[other] = lines[other], lines[at]
        elif operation == "chars":
            line = lines[at]
            cut = draw(st.integers(min_value=0, max_value=len(line)))
            lines[at] = line[:cut] + draw(st.text(max_size=6)) + line[cut + 1 :]
        elif operation == "number":
            lines[at] = "".join(
                str(draw(st.sampled_from([0, -1, 65536, 2**40, 99999999999999999999]))) if c.isdigit() else c
                for c in lines[at]
            )
        elif operation == "truncate":
            lines[at] = lines[at][: draw(st.integers(min_value=0, max_value=max(0, len(lines[at]) - 1)))]
        elif operation == "insert":
            lines.insert(at, draw(st.sampled_from(["m=", "a=", "a=rtpmap:", "c=IN IP4", "m=video 0 RTP/AVP"])))
        else:
            key = lines[at].split(":", 1)[0] if ":" in lines[at] else lines[at][:2]
            lines[at] = key + ":" + draw(st.text(max_size=12))
    return "\r\n".join(lines)


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.data())
def test_malformed_sdp_mutations_of_a_real_offer(node: NodeThread, data: st.DataObject) -> None:
    sdp = data.draw(mutated_offer(node.offer))
    post_session(node, "sdp_mutations", json.dumps({"pipeline": "transform", "sdp": sdp, "type": "offer"}).encode())


@FUZZ
@given(
    st.sampled_from(["GET", "POST", "DELETE", "PUT", "PATCH", "OPTIONS", "HEAD"]),
    st.sampled_from(PATHS),
    st.text(max_size=40),
    st.binary(max_size=200),
    st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=40),
)
@example("GET", "/js/{x}", "\x00", b"", "")  # found on a fresh machine: resolve() raised on the NUL -> 500
@example("GET", "/js/{x}", "lib/\x00.js", b"", "")
@example("GET", "/web/{x}", "\x00", b"", "")
def test_other_endpoints_methods_and_paths(
    node: NodeThread, method: str, template: str, segment: str, body: bytes, header: str
) -> None:
    path = template.replace("{x}", urllib.parse.quote(segment, safe="") or "x")
    status, answer = request(node, method, path, body or None, Authorization=header)
    ok = (200, 204) if method in ("GET", "HEAD", "OPTIONS") else ()
    if method == "HEAD" or template.startswith(("/web/", "/js/")):  # no body / static files: not the JSON API
        TRIED["endpoints"] += 1
        assert status < 500
        return
    check(node, "endpoints", status, answer, ok=ok)
    assert not node.app[SESSIONS].sessions
