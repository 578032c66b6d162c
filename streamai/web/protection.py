"""Entry-point protection: per-client rate limits, concurrent-session caps, body limits, slow clients.

Every refusal is a clear JSON error (429 with ``Retry-After``, 413, 408) and is
counted by reason for ``/metrics``. Used by edge nodes and by the router.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter, OrderedDict
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from aiohttp import web
from prometheus_client.core import CounterMetricFamily, Metric
from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..errors import ClientError
from ..ratelimit import TokenBucket
from .auth import bearer_token
from .clients import ClientAddresses, limit_key, parse_networks

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
SIGNALING_PREFIXES = ("/v1/", "/whip", "/whep")
CLIENT = web.RequestKey("client", str)  # the client address the guard judged
Limiter = Callable[[str, float, int], Awaitable[bool]]  # (bucket key, rate per s, burst) -> a token taken


class ProtectionSettings(BaseModel):
    """Limits on the signaling entry point; defaults suit one edge node."""

    model_config = ConfigDict(extra="forbid")

    requests_per_s: float = Field(20, gt=0)  # signaling requests per client address
    requests_burst: int = Field(40, ge=1)
    sessions_per_min: float = Field(60, gt=0)  # session creations per client address
    sessions_burst: int = Field(20, ge=1)
    # concurrent, per client address (an IPv6 /64); None: half the node's capacity, so that one
    # address can never fill a node on its own
    max_sessions_per_client: int | None = Field(None, ge=1)
    max_sessions_per_token: int = Field(16, ge=1)  # concurrent, per API token
    body_timeout_s: float = Field(10, gt=0)  # a client must send its whole body within this
    # proxies in front of this server (CIDRs): only from them is X-Forwarded-For believed, read from the right
    trusted_proxies: list[str] = Field(default_factory=list)
    tracked_clients: int = Field(10_000, ge=100)  # bounded memory for per-client buckets

    @field_validator("trusted_proxies")
    @classmethod
    def _valid_proxies(cls, value: list[str]) -> list[str]:
        parse_networks(value)
        return value

    def sessions_per_client(self, capacity: int | None) -> int | None:
        """The per-address cap in force for a server of ``capacity`` sessions (None: no cap)."""
        if self.max_sessions_per_client is not None:
            return self.max_sessions_per_client
        return max(1, capacity // 2) if capacity else None


class Refused(ClientError):
    """A request refused by a limit; its code is the reason counted in ``/metrics``."""

    @property
    def reason(self) -> str:
        return self.code

    def response(self) -> web.Response:
        """The JSON refusal, with ``Retry-After`` where it fits."""
        return web.json_response(self.body(), status=self.status, headers=self.headers())


class EntryGuard:
    """The limits' state: buckets per client (LRU-bounded) and refusal counters."""

    def __init__(
        self, settings: ProtectionSettings, capacity: int | None = None, limiter: Limiter | None = None
    ) -> None:
        self.settings = settings
        self.limiter = limiter  # shared buckets (a router replica's Redis); None: this process's own
        self.max_per_client = settings.sessions_per_client(capacity)
        self.addresses = ClientAddresses(settings.trusted_proxies)
        self.refusals: Counter[str] = Counter()
        self._requests: OrderedDict[str, TokenBucket] = OrderedDict()
        self._sessions: OrderedDict[str, TokenBucket] = OrderedDict()

    def client_of(self, request: web.Request) -> str:
        """The client's address (behind trusted proxies only)."""
        return self.addresses.address_of(request)

    def _bucket(self, table: OrderedDict[str, TokenBucket], key: str, rate: float, burst: int) -> TokenBucket:
        bucket = table.get(key)
        if bucket is None:
            bucket = table[key] = TokenBucket(rate, burst)
            while len(table) > self.settings.tracked_clients:
                table.popitem(last=False)
        else:
            table.move_to_end(key)
        return bucket

    async def _take(self, table: OrderedDict[str, TokenBucket], kind: str, key: str, rate: float, burst: int) -> bool:
        if self.limiter is not None:
            return await self.limiter(f"{kind}:{key}", rate, burst)
        return self._bucket(table, key, rate, burst).take()

    async def check_request(self, client: str) -> None:
        s = self.settings
        if not await self._take(self._requests, "requests", limit_key(client), s.requests_per_s, s.requests_burst):
            raise Refused(429, "request_rate", "too many signaling requests from this address", 1 / s.requests_per_s)

    async def check_session(self, client: str, token: str | None, open_by_client: int, open_by_token: int) -> None:
        s = self.settings
        if self.max_per_client is not None and open_by_client >= self.max_per_client:
            raise Refused(429, "client_sessions", f"at most {self.max_per_client} sessions per address", 5)
        if token is not None and open_by_token >= s.max_sessions_per_token:
            raise Refused(429, "token_sessions", f"at most {s.max_sessions_per_token} sessions per API token", 5)
        rate = s.sessions_per_min / 60
        if not await self._take(self._sessions, "sessions", limit_key(client), rate, s.sessions_burst):
            raise Refused(429, "session_rate", "too many new sessions from this address", 1 / rate)

    def refuse(self, exc: Refused) -> web.Response:
        self.refusals[exc.reason] += 1
        return exc.response()

    def collect(self) -> Iterator[Metric]:
        """``streamai_refusals_total`` by reason (prometheus_client collector protocol)."""
        refusals = CounterMetricFamily("streamai_refusals", "Requests refused at the entry point, by reason.",
                                       labels=["reason"])  # fmt: skip
        for reason, count in sorted(self.refusals.items()):
            refusals.add_metric([reason], count)
        yield refusals


def creates_session(request: web.Request) -> bool:
    """``POST /v1/sessions`` or a WHIP ingest ``POST /whip/{pipeline}``."""
    if request.method != "POST":
        return False
    path = request.path.rstrip("/")
    return path == "/v1/sessions" or (path.startswith("/whip/") and not path.startswith("/whip/sessions/"))


def guard_middleware(
    guard: EntryGuard,
    open_sessions: Callable[[str, str | None], tuple[int, int]],
    client_of: Callable[[web.Request], str] | None = None,
) -> Any:
    """Rate limits on signaling, session caps on session creation; stores the client address on the request.

    ``client_of`` decides who is asking (default: the socket peer, or ``X-Forwarded-For`` from
    trusted proxies); a node behind the router passes one that believes the router's signed grant.
    """
    resolve = client_of or guard.client_of

    @web.middleware
    async def protect(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not request.path.startswith(SIGNALING_PREFIXES) or request.method == "OPTIONS":
            return await handler(request)
        client = resolve(request)
        request[CLIENT] = client
        try:
            await guard.check_request(client)
            if creates_session(request):
                token = bearer_token(request)
                by_client, by_token = open_sessions(limit_key(client), token)
                await guard.check_session(client, token, by_client, by_token)
        except Refused as exc:
            return guard.refuse(exc)
        return await handler(request)

    return protect


async def read_body(request: web.Request, limit: int, timeout: float, guard: EntryGuard | None = None) -> bytes:
    """The whole request body, or a 413 (too large) / 408 (sent too slowly) ``Refused``."""
    if request.content_length is not None and request.content_length > limit:
        raise _counted(guard, Refused(413, "too_large", f"request body over {limit} bytes"))
    chunks: list[bytes] = []
    size = 0
    deadline = time.monotonic() + timeout
    try:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError
            chunk = await asyncio.wait_for(request.content.read(65536), remaining)
            if not chunk:
                break
            size += len(chunk)
            if size > limit:
                raise _counted(guard, Refused(413, "too_large", f"request body over {limit} bytes"))
            chunks.append(chunk)
    except TimeoutError:
        raise _counted(guard, Refused(408, "slow_body", f"request body not received within {timeout:g} s")) from None
    return b"".join(chunks)


def _counted(guard: EntryGuard | None, exc: Refused) -> Refused:
    if guard is not None:
        guard.refusals[exc.reason] += 1
    return exc


def json_body(request: web.Request, body: bytes) -> Any:
    """``body`` as JSON: 415 unless the request says application/json, 400 when it does not parse."""
    if request.content_type != "application/json":
        raise ClientError(415, "unsupported_media_type", "Content-Type must be application/json")
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        raise ClientError(400, "bad_json", "request body is not valid JSON") from None
