"""The FastAPI app: the page, WebRTC signalling, avatars, health, metrics."""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import hmac
import logging
import re
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import __version__
from ..avatars.registry import list_avatars, load_avatar, validate_name, voice_fits
from ..errors import AvatarError, ConfigurationError
from ..events import ServerEvent, events_schema
from ..jobs.service import VideoJobs
from ..settings import Settings, get_settings
from . import metrics
from .avatars_api import avatars_router
from .cluster import Node
from .guard import Guard, RateLimiter, is_loopback, retry_after, split_list
from .live import LiveServices
from .rtc import RtcSession
from .videos_api import videos_router

log = logging.getLogger(__name__)


GIL_SWITCH_S = 0.001  # Python's default is 5 ms
M_ARENA_MAX = -8  # glibc's mallopt parameter


class Offer(BaseModel):
    """The signalling body: the browser's SDP offer, plus optional session choices."""

    sdp: str = Field(max_length=100_000)
    type: str = "offer"
    avatar: str = "default"
    language: str | None = None
    dialogue: str | None = None


class Answer(BaseModel):
    """The answer to an offer."""

    sdp: str
    type: str = "answer"
    session_id: str
    node: str | None = None  # with several nodes: the URL of the node holding the session


class BusyError(AvatarError):
    """Too many live sessions."""

    status_code = 503


class AuthError(AvatarError):
    """Missing or wrong bearer token."""

    status_code = 401


class TooManyOffersError(AvatarError):
    """A client opening calls faster than its rate allows."""

    status_code = 429

    def __init__(self, message: str, wait_s: float) -> None:
        super().__init__(message)
        self.wait_s = wait_s


class _RedactTokens(logging.Filter):
    """Masks ``token=...`` (an old page link may still carry it) and a video stream's
    ``key=...`` (it opens that job's video to whoever reads the log) in log records."""

    pattern = re.compile(r"((?:token|\bkey)=)[^&\s\"']+", re.IGNORECASE)

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(
                self.pattern.sub(r"\1***", a) if isinstance(a, str) else a for a in record.args
            )
        record.msg = self.pattern.sub(r"\1***", str(record.msg))
        return True


def _redact_access_log() -> None:
    access = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, _RedactTokens) for f in access.filters):
        access.addFilter(_RedactTokens())


def _short_validation_error(exc: RequestValidationError) -> str:
    """What was wrong with a request, without echoing what was sent."""
    parts = []
    for error in exc.errors()[:3]:
        where = ".".join(str(p) for p in error.get("loc", ()) if p != "body") or "body"
        parts.append(f"{where[:60]}: {str(error.get('msg', 'invalid'))[:120]}")
    return "invalid request: " + "; ".join(parts)


def _libc() -> Any:
    """glibc, or None where there is none (macOS, musl)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    return libc if hasattr(libc, "malloc_trim") and hasattr(libc, "mallopt") else None


def _bound_heap_arenas(arenas: int) -> None:
    """Each session's threads (VAD, ASR, speech, render) take glibc heap arenas; freed
    memory stays in them, so RSS crept up session after session. Fewer arenas, shared."""
    libc = _libc()
    if libc is not None and arenas > 0:
        libc.mallopt(M_ARENA_MAX, arenas)


def _trim_heap() -> None:
    """Give the memory a closed session freed back to the OS."""
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)


async def _watch_loop_lag(every_s: float = 0.05, report_s: float = 10.0) -> None:
    """How late the event loop runs a timer: frames, mic audio and events wait that long.

    Always on and cheap (20 wake-ups a second): every lateness goes to the
    ``avatar_event_loop_lag_seconds`` histogram; at DEBUG a summary is logged every
    ``report_s`` seconds.
    """
    loop = asyncio.get_running_loop()
    lags: list[float] = []
    window = loop.time()
    while True:
        due = loop.time() + every_s
        await asyncio.sleep(every_s)
        now = loop.time()
        lag = max(now - due, 0.0)  # a timer may fire a hair early (clock resolution)
        metrics.LOOP_LAG_SECONDS.observe(lag)
        if not log.isEnabledFor(logging.DEBUG):
            continue
        lags.append(lag)
        if now - window >= report_s:
            window = now
            lags.sort()
            log.debug(
                "event loop lag: p50 %.1f ms, p95 %.1f ms, max %.1f ms",
                lags[len(lags) // 2] * 1e3,
                lags[int(len(lags) * 0.95)] * 1e3,
                lags[-1] * 1e3,
            )
            lags.clear()


def create_app(settings: Settings | None = None, *, warm_up: bool = True) -> FastAPI:
    """Build the app; ``warm_up`` loads the speech models before the first visitor."""
    settings = settings or get_settings()
    if not settings.token and not is_loopback(settings.host):
        raise ConfigurationError(
            f"binding to {settings.host} exposes the avatar to the network; "
            "set AVATAR_TOKEN to a secret first"
        )
    services = LiveServices(settings)
    video_jobs = VideoJobs(settings)  # in-process, or on Redis with AVATAR_REDIS_URL
    sessions: set[RtcSession] = set()
    # Slots taken by offers still being answered: taken before the first await, so the
    # limit holds however many offers arrive at once.
    reserved = 0
    offer_rate = RateLimiter(settings.offer_burst, settings.offers_per_minute)
    # This server among several (Redis) and its drain on SIGTERM: server/cluster.py.
    node = Node(settings, lambda: len(sessions) + reserved)
    if video_jobs.mode == "in-process":  # on SIGTERM its running job goes back to queued
        node.on_drain(lambda: asyncio.to_thread(video_jobs.queue.close))
    _redact_access_log()

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        _bound_heap_arenas(settings.heap_arenas)
        if warm_up:
            await asyncio.to_thread(services.warm_up)
        lag_monitor = asyncio.ensure_future(_watch_loop_lag())
        await asyncio.to_thread(video_jobs.start)
        await node.start()
        # Render, encode and speech threads hold the GIL for up to the switch interval at a
        # time; the loop, which moves every packet, waits that long each time it wants it.
        switch_s = sys.getswitchinterval()
        sys.setswitchinterval(GIL_SWITCH_S)
        yield
        sys.setswitchinterval(switch_s)
        lag_monitor.cancel()
        await asyncio.gather(*(s.close("server stopping") for s in list(sessions)))
        await node.stop()
        services.close()
        await asyncio.to_thread(video_jobs.close)

    app = FastAPI(title="realtime-avatar", version=__version__, lifespan=lifespan)
    app.state.services = services
    app.state.sessions = sessions
    app.state.node = node
    metrics.FRAMES.live = lambda: sum(s.frames_sent for s in sessions)  # fps on /metrics
    cors_origins = split_list(settings.cors_origins)
    if cors_origins:  # closed unless configured
        app.add_middleware(
            CORSMiddleware,
            allow_origins=cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type"],
        )
    app.add_middleware(Guard, settings=settings)  # outermost: before CORS and every route

    @app.exception_handler(AvatarError)
    async def avatar_error(_request: Request, exc: AvatarError) -> JSONResponse:
        headers = (
            {"Retry-After": retry_after(exc.wait_s)}
            if isinstance(exc, TooManyOffersError)
            else None
        )
        return JSONResponse({"error": exc.message}, status_code=exc.status_code, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"error": _short_validation_error(exc)}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse(
            {"error": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers
        )

    def has_token(request: Request) -> bool:
        if not settings.token:
            return True
        given = request.headers.get("authorization", "")
        return hmac.compare_digest(given.encode(), f"Bearer {settings.token}".encode())

    def require_token(request: Request) -> None:
        if not has_token(request):
            raise AuthError(
                "missing or wrong bearer token; send 'Authorization: Bearer <AVATAR_TOKEN>'"
            )

    app.include_router(videos_router(video_jobs, settings, require_token))

    app.include_router(avatars_router(settings, require_token, services.forget_avatar))

    @app.get("/health")
    async def health() -> JSONResponse:
        body = {
            "status": "draining" if node.draining else "ok",
            "version": __version__,
            "sessions": len(sessions),
            "max_sessions": settings.max_sessions,
            **await node.health(),
        }
        return JSONResponse(body, status_code=503 if node.draining else 200)

    @app.get("/metrics")
    async def prometheus() -> Response:
        return Response(generate_latest(metrics.REGISTRY), media_type=CONTENT_TYPE_LATEST)

    @app.get("/api/v1/avatars", dependencies=[Depends(require_token)])
    async def avatars() -> dict[str, Any]:
        await asyncio.to_thread(services.ensure_default)
        names = await asyncio.to_thread(list_avatars, settings)
        fits = await asyncio.to_thread(voice_fits, names, settings)
        return {"avatars": names, "default": "default", "voice_fits": fits}

    @app.get("/api/v1/avatars/{name}/image", dependencies=[Depends(require_token)])
    async def avatar_image(name: str) -> FileResponse:
        avatar = await asyncio.to_thread(load_avatar, validate_name(name), settings=settings)
        return FileResponse(avatar.path / "face.png", media_type="image/png")

    @app.get("/api/v1/events.schema.json")
    async def event_schema() -> dict[str, Any]:
        """The JSON Schema of the data channel's events (see ``realtime_avatar.events``)."""
        return events_schema()

    @app.get("/api/v1/options")
    async def options(request: Request) -> dict[str, Any]:
        """What the page may choose from; avatar names only with the token, when one is set."""
        choices = await asyncio.to_thread(services.options)
        choices["token_required"] = bool(settings.token)
        choices["token_ok"] = has_token(request)
        if not choices["token_ok"]:
            choices["avatars"] = []
        return choices

    @app.get("/api/v1/sessions/{session_id}/turns", dependencies=[Depends(require_token)])
    async def session_turns(session_id: str) -> dict[str, Any]:
        return {"turns": await asyncio.to_thread(services.store.turns, session_id)}

    @app.post("/api/v1/rtc/offer", response_model=Answer, dependencies=[Depends(require_token)])
    async def rtc_offer(offer: Offer, request: Request) -> Answer:
        nonlocal reserved
        if offer.type != "offer":
            raise AvatarError(f"expected an SDP offer, got type {offer.type!r}")
        if not offer.sdp.lstrip().startswith("v=0") or "m=" not in offer.sdp:
            raise AvatarError(
                "the offer's sdp is not a session description (it must start with v=0)"
            )
        if "m=audio" not in offer.sdp:
            raise AvatarError(
                "the offer has no audio: the avatar listens to a microphone; add an audio "
                "track (or transceiver) to the peer connection"
            )
        # Check and take the slot with no await in between: the limit holds under a flood.
        full = node.draining or len(sessions) + reserved >= settings.max_sessions
        if full and not node.may_forward(request):
            metrics.SESSIONS_REFUSED.inc()
            raise BusyError(node.busy_message(len(sessions) + reserved))
        client = request.client.host if request.client else "unknown"
        wait_s = 0.0 if node.from_peer(request) else offer_rate.take(client)
        if wait_s > 0:
            raise TooManyOffersError(
                f"too many calls opened from {client}; wait {retry_after(wait_s)} s", wait_s
            )
        if full:  # a node with room answers it (server/cluster.py), or nobody can
            answer = await node.forward_offer(offer.model_dump(), client)
            if answer is None:
                metrics.SESSIONS_REFUSED.inc()
                raise BusyError(node.busy_message(len(sessions) + reserved))
            return Answer.model_validate(answer)
        reserved += 1
        try:
            return await _open_call(offer)
        finally:
            reserved -= 1
            node.changed()  # a refused offer frees its slot: say so before the heartbeat

    async def _open_call(offer: Offer) -> Answer:
        rtc_holder: dict[str, RtcSession] = {}

        def emit(event: ServerEvent) -> None:
            if "rtc" in rtc_holder:
                rtc_holder["rtc"].emit(event)

        live = await services.open_session(
            validate_name(offer.avatar), offer.language, offer.dialogue, emit
        )

        def closed(rtc: RtcSession, reason: str) -> None:
            sessions.discard(rtc)
            metrics.SESSIONS.set(len(sessions))
            node.changed()
            metrics.FRAMES.inc(rtc.frames_sent)
            services.close_session(live.session_id, reason)
            log.info("session %s closed: %s", live.session_id, reason)
            asyncio.get_running_loop().run_in_executor(None, _trim_heap)

        rtc = RtcSession(
            live.session,
            closed,
            video_kbps=settings.video_bitrate_kbps,
            connect_timeout_s=settings.session_connect_timeout_s,
            silent_timeout_s=settings.peer_silent_timeout_s,
        )
        rtc_holder["rtc"] = rtc
        sessions.add(rtc)
        metrics.SESSIONS.set(len(sessions))
        node.changed()
        try:
            answer = await rtc.answer(offer.sdp, offer.type)
        except Exception as exc:
            await rtc.close("bad offer")
            raise AvatarError(f"could not use this SDP offer: {exc}") from None
        return Answer(
            sdp=answer.sdp,
            type=answer.type,
            session_id=live.session_id,
            node=node.load.url if node.cluster is not None else None,
        )

    static = Path(str(resources.files("realtime_avatar") / "server" / "static"))
    app.mount("/static", StaticFiles(directory=static), name="static")

    @app.get("/")
    async def index() -> FileResponse:
        return FileResponse(static / "index.html", media_type="text/html")

    return app
