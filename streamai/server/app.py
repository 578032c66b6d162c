"""The aiohttp application of an edge node: session API, events WebSocket, metrics, demo page."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from aiohttp import web

from ..config import PipelineConfig, PipelineLibrary
from ..engine import RemoteStageFactory
from ..errors import ClientError
from ..models.shared import SharedModels
from ..stage import StageRegistry
from ..web.auth import bearer_token
from ..web.clients import RegionPrefixes, is_loopback
from ..web.errors import errors_as_json
from ..web.metrics import metrics_response
from ..web.protection import CLIENT, EntryGuard, guard_middleware
from .access import Access
from .event_socket import serve_event_socket
from .metrics import node_metrics
from .requests import read_json
from .residency import check_region, client_resolver
from .rooms import add_routes as add_room_routes
from .scale import NodeScaler
from .sessions import NewSession, SessionError, SessionManager
from .settings import ServerSettings
from .state import (
    ACCESS,
    GUARD,
    LIBRARY,
    METRICS,
    MODELS,
    PREFIXES,
    PRELOADED,
    SCALER,
    SESSIONS,
    SETTINGS,
    default_pipeline,
    describe_pipeline,
)
from .whip import add_routes as add_whip_routes

log = logging.getLogger(__name__)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def cors_middleware(settings: ServerSettings) -> Any:
    @web.middleware
    async def cors(request: web.Request, handler: Handler) -> web.StreamResponse:
        origin = request.headers.get("Origin")
        allowed = origin if origin and ("*" in settings.cors_origins or origin in settings.cors_origins) else None
        if request.method == "OPTIONS" and allowed:
            response: web.StreamResponse = web.Response(status=204)
        else:
            response = await handler(request)
        if allowed:
            response.headers["Access-Control-Allow-Origin"] = allowed
            response.headers["Access-Control-Allow-Headers"] = "Authorization, Content-Type, If-Match"
            response.headers["Access-Control-Allow-Methods"] = "GET, POST, PATCH, DELETE, OPTIONS"
            response.headers["Access-Control-Expose-Headers"] = (
                "Location, ETag, Link, Retry-After, Streamai-Session-Token, Streamai-Viewer-Token"
            )
        return response

    return cors


LOOPBACK_HOSTS = {"localhost", "127.0.0.1", "[::1]", "::1"}


def same_site_middleware(settings: ServerSettings) -> Any:
    """A loopback node answers only requests addressed to a loopback name (DNS rebinding), and no
    page of another origin may open the events WebSocket (cross-site WebSocket hijacking)."""
    loopback_bound = is_loopback(settings.host) or settings.host == "localhost"

    @web.middleware
    async def same_site(request: web.Request, handler: Handler) -> web.StreamResponse:
        host = (request.host or "").rsplit(":", 1)[0] if not (request.host or "").startswith("[") else "[::1]"
        if loopback_bound and host.lower() not in LOOPBACK_HOSTS:
            raise ClientError(421, "wrong_host", "this node answers only to localhost names")
        origin = request.headers.get("Origin")
        if origin and request.headers.get("Upgrade", "").lower() == "websocket":
            own = f"{request.scheme}://{request.host}"
            if origin != own and origin not in settings.cors_origins and "*" not in settings.cors_origins:
                raise ClientError(403, "forbidden_origin", "pages of another origin may not open this WebSocket")
        return await handler(request)

    return same_site


def session_answer(new: NewSession, config: PipelineConfig) -> dict[str, Any]:
    session = new.session
    return {
        "session_id": session.id,
        "sdp": new.answer,
        "type": "answer",
        "pipeline": config.name,
        "events_url": f"/v1/sessions/{session.id}/events",
        "session_token": new.token,  # reads and steers this session; shown once
        "viewer_token": new.viewer_token,  # watches it over WHEP, nothing else
    }


# -- handlers ----------------------------------------------------------------------
async def create_session(request: web.Request) -> web.Response:
    request.app[ACCESS].require_api(request)
    body = await read_json(request)
    library = request.app[LIBRARY]
    name = body.get("pipeline") or default_pipeline(request.app[SETTINGS], library)
    if not isinstance(name, str):
        raise SessionError(400, "bad_request", "'pipeline' must be a string")
    config = library.get(name)
    if config is None:
        offered = ", ".join(library.pipelines)
        raise SessionError(404, "unknown_pipeline", f"unknown pipeline {name[:64]!r}; offered: {offered}")
    offer_type = body.get("type", "offer")
    if offer_type != "offer":
        raise SessionError(400, "bad_sdp", "'type' must be 'offer'")
    check_region(request, config)
    new = await request.app[SESSIONS].create(
        config, body.get("sdp"), "offer", body.get("params"), client=request.get(CLIENT), token=bearer_token(request)
    )
    return web.json_response(session_answer(new, config))


async def list_sessions(request: web.Request) -> web.Response:
    request.app[ACCESS].require_admin(request)
    return web.json_response({"sessions": [s.summary() for s in request.app[SESSIONS].sessions.values()]})


async def get_session(request: web.Request) -> web.Response:
    session = request.app[ACCESS].session(request, request.app[SESSIONS], request.match_info["id"])
    return web.json_response({**session.summary(), "stats": session.runner.snapshot()})


async def delete_session(request: web.Request) -> web.Response:
    session = request.app[ACCESS].session(request, request.app[SESSIONS], request.match_info["id"])
    await session.close("deleted by the client")
    return web.json_response({"ok": True, "id": session.id})


async def session_events(request: web.Request) -> web.StreamResponse:
    """The session's events as a WebSocket; accepts the same control messages as the data channel.

    The socket needs the session's token (``Authorization``, or the subprotocol
    ``streamai.bearer.<token>`` beside ``streamai.v1`` from a browser); it closes when the
    session ends, and a session takes at most ``max_event_subscribers`` of them.
    """
    session = request.app[ACCESS].session(request, request.app[SESSIONS], request.match_info["id"])
    settings = request.app[SETTINGS]
    if len(session.subscribers) >= settings.max_event_subscribers:
        raise SessionError(429, "too_many_subscribers", f"at most {settings.max_event_subscribers} event sockets "
                           "per session", retry_after=settings.retry_after_s)  # fmt: skip
    if session.state == "closed":
        raise SessionError(404, "session_ended", "this session has ended")
    return await serve_event_socket(
        request,
        session,
        settings,
        greeting={"state": session.state, "session": session.id},
        closed=lambda: session.state == "closed",
        farewell=b"session ended",
    )


async def list_pipelines(request: web.Request) -> web.Response:
    request.app[ACCESS].require_api(request)
    library = request.app[LIBRARY]
    registry = library.registry
    return web.json_response(
        {
            "pipelines": [describe_pipeline(c, registry) for _, c in sorted(library.pipelines.items())],
            "default": default_pipeline(request.app[SETTINGS], library),
            "invalid": sorted(library.errors),  # file names only: the reasons are in the node's log
        }
    )


async def healthz(request: web.Request) -> web.Response:
    manager = request.app[SESSIONS]
    settings = request.app[SETTINGS]
    return web.json_response(
        {
            "ok": True,
            "sessions": len(manager.sessions),
            "capacity": settings.max_sessions,
            "pipelines": sorted(request.app[LIBRARY].pipelines),
        }
    )


async def list_models(request: web.Request) -> web.Response:
    """The catalog as this node sees it: installed or not, and which models are loaded now."""
    from ..models.catalog import Catalog, catalog_row

    request.app[ACCESS].require_api(request)
    return web.json_response(
        {
            "models": [catalog_row(entry) for entry in Catalog().entries.values()],
            "loaded": request.app[MODELS].loaded(),
            "node": request.app[SCALER].report(),  # warm/cold, idle time (scale to zero)
        }
    )


async def metrics_text(request: web.Request) -> web.Response:
    return metrics_response(request.app[METRICS])


def add_static(app: web.Application, static_dir: Path) -> None:
    web_dir, js_dir = static_dir / "web", static_dir / "js"

    async def index(request: web.Request) -> web.StreamResponse:
        page = web_dir / "index.html"
        if page.exists():
            return web.FileResponse(page)
        return web.Response(text=MINIMAL_PAGE, content_type="text/html")

    async def client_file(request: web.Request) -> web.StreamResponse:
        """The JS client's published files only (not its tests or node_modules)."""
        relative = request.match_info["path"]
        top = relative.split("/", 1)[0]
        published = top in JS_PUBLISHED or (top == "lib" and relative.endswith(".js"))
        path = safe_child(js_dir, relative) if published else None
        if path is None or not path.is_file():
            raise web.HTTPNotFound(text="no such client file")
        return web.FileResponse(path)

    app.router.add_get("/", index)
    if web_dir.is_dir():
        app.router.add_static("/web/", web_dir)
    if js_dir.is_dir():
        app.router.add_get("/js/{path:.+}", client_file)


def safe_child(folder: Path, relative: str) -> Path | None:
    """``folder / relative`` when it is a plain path inside ``folder``; None for anything else.

    A request path may hold a NUL, a lone surrogate or ``..``: none of them reaches the
    filesystem as a 500 (``resolve()`` raises on NUL) or escapes the folder.
    """
    if not relative or "\x00" in relative or not relative.isprintable():
        return None
    try:
        relative.encode("utf-8")
        path = (folder / relative).resolve()
        root = folder.resolve()
    except (ValueError, OSError):  # NUL, surrogates, names the OS refuses
        return None
    return path if root in path.parents else None


JS_PUBLISHED = {"streamai.js", "streamai.d.ts", "whep.js", "package.json"}


MINIMAL_PAGE = """<!doctype html><meta charset="utf-8"><title>streamai</title>
<p>streamai node. The demo page lives in clients/web/ (not found next to this server).
API: <a href="/v1/pipelines">/v1/pipelines</a>, <a href="/v1/sessions">/v1/sessions</a>,
<a href="/metrics">/metrics</a>.</p>"""


class _NullSink:
    def deliver(self, frame: object) -> None:
        """Preloaded pipelines only hold models; they never get frames."""


async def preload_pipelines(app: web.Application) -> None:
    """Load the models of ``settings.preload`` now, so the first session does not wait for them."""
    from ..engine import PipelineRunner

    library = app[LIBRARY]
    for name in app[SETTINGS].preload:
        config = library.get(name)
        if config is None:
            raise RuntimeError(f"cannot preload unknown pipeline {name!r}; offered: {', '.join(library.pipelines)}")
        started = time.monotonic()
        print(f"preloading models of {name} ...", flush=True)
        runner = PipelineRunner(config, library.registry, _NullSink(), resources=app[MODELS])
        await runner.start()
        app[PRELOADED].append(runner)
        print(f"preloaded {name} in {time.monotonic() - started:.1f} s", flush=True)


async def release_preloaded(app: web.Application) -> None:
    for runner in app[PRELOADED]:
        await runner.stop()


async def unload_models(app: web.Application) -> None:
    """At shutdown, after the sessions: free every model (a model's child process ends with it)."""
    app[MODELS].unload_idle()


def create_app(
    settings: ServerSettings,
    registry: StageRegistry | None = None,
    *,
    remote: RemoteStageFactory | None = None,
    extensions: Sequence[Callable[[web.Application], None]] = (),
) -> web.Application:
    """The node's application; sessions are closed on shutdown.

    ``remote`` builds stand-ins for stages placed off the node; each of ``extensions`` is
    called with the finished app (a fleet agent adds its start/stop hooks there). The node
    itself knows neither: ``streamai serve`` wires them (``streamai.fleet.node``).
    """
    registry = registry or StageRegistry()
    models = SharedModels(idle_timeout_s=settings.model_idle_timeout_s, keep_released=True)
    manager = SessionManager(settings, registry, resources=models)
    manager.remote = remote
    guard = EntryGuard(settings.protection, capacity=settings.max_sessions)
    app = web.Application(
        client_max_size=settings.max_body_bytes,
        middlewares=[
            cors_middleware(settings),
            errors_as_json,
            same_site_middleware(settings),
            guard_middleware(guard, manager.open_sessions, client_resolver(settings, guard)),
        ],
    )
    app[SETTINGS] = settings
    app[LIBRARY] = PipelineLibrary(settings.pipelines_dir, registry)
    app[MODELS] = models
    app[SESSIONS] = manager
    app[GUARD] = guard
    app[ACCESS] = Access(settings)
    app[PREFIXES] = RegionPrefixes(settings.client_prefixes)
    app[PRELOADED] = []
    app[SCALER] = scaler = NodeScaler(settings, models, manager)
    app[METRICS] = node_metrics(manager, guard, scaler, remote)
    app.on_startup.append(scaler.start)
    app.on_cleanup.append(scaler.stop)
    app.on_startup.append(preload_pipelines)
    app.on_cleanup.append(release_preloaded)
    app.on_cleanup.append(unload_models)
    for problem in app[LIBRARY].errors.values():
        log.warning("pipeline not offered: %s", problem)
    app.router.add_post("/v1/sessions", create_session)
    app.router.add_get("/v1/sessions", list_sessions)
    app.router.add_get("/v1/sessions/{id}", get_session)
    app.router.add_delete("/v1/sessions/{id}", delete_session)
    app.router.add_get("/v1/sessions/{id}/events", session_events)
    app.router.add_get("/v1/pipelines", list_pipelines)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/v1/models", list_models)
    app.router.add_get("/metrics", metrics_text)
    add_whip_routes(app)
    add_room_routes(app)
    if settings.debug_endpoints:
        from .debug import debug_resources

        app.router.add_get("/v1/debug/resources", debug_resources)
    add_static(app, settings.static_dir)

    async def close_sessions(app: web.Application) -> None:
        await app[SESSIONS].close_all()

    app.on_shutdown.append(close_sessions)
    for extend in extensions:
        extend(app)
    if settings.ice_loopback:
        from ..transport.ice import offer_loopback_candidates_only

        offer_loopback_candidates_only()
    return app
