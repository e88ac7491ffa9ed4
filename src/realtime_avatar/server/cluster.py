"""Live sessions across several ``avatar serve`` nodes, and the drain on SIGTERM.

With ``AVATAR_REDIS_URL`` set, every node publishes its load to Redis (``Cluster``): its
id, the URL its peers reach it at, sessions and ``max_sessions``, whether it is draining,
re-published every ``AVATAR_NODE_HEARTBEAT_S`` under a key that expires after
``AVATAR_NODE_TTL_S`` (a node that dies vanishes on its own). Any node takes an offer; a
node that is full (or draining) **proxies the signalling**: it POSTs the offer to the peer
with the most room and returns that peer's answer. The media then flows straight between
the client and that peer (the answer carries the peer's ICE candidates), so the entry node
carries only one HTTP exchange. Proxying, rather than a redirect, is chosen because every
client works unchanged (the page, the aiortc client, pipecat, curl): no CORS between
nodes, no client that must follow a redirect, the token never sent to another origin.

A forwarded offer carries ``X-Avatar-Forwarded-By`` (never forwarded again: no loops) and
``X-Avatar-Peer``, a secret every node reads from Redis: a peer proven by it is not
rate-limited again (the entry node already counted the client).

``Node`` exists with or without Redis: it owns the drain. On SIGTERM (``DrainingServer``)
the node takes no new sessions (a full or draining node passes offers on, or answers 503),
runs the drain hooks (the video jobs hand back their work), lets the running sessions go
on until they end or ``AVATAR_DRAIN_TIMEOUT_S`` passes, then stops: the remaining sessions
are closed and the node leaves Redis. A second SIGTERM, or Ctrl-C, stops at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import secrets
import signal
import socket
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from types import FrameType
from typing import Any
from urllib.parse import urlsplit

import httpx
import uvicorn
from fastapi import FastAPI, Request

from .. import __version__
from ..errors import AvatarError, ConfigurationError
from ..settings import Settings
from . import metrics

log = logging.getLogger(__name__)

NODE_KEY_PREFIX = "avatar:node:"  # + node id: the node's load as JSON, with a TTL
NODES_KEY = "avatar:nodes"  # the set of node ids (members whose key expired are pruned)
PEER_SECRET_KEY = "avatar:cluster:peer-secret"
PEER_HEADER = "X-Avatar-Peer"
FORWARDED_HEADER = "X-Avatar-Forwarded-By"
OFFER_PATH = "/api/v1/rtc/offer"
MAX_FORWARD_TRIES = 3  # peers tried per offer before answering busy
PEER_CONNECT_TIMEOUT_S = 3.0
PEER_ANSWER_TIMEOUT_S = 30.0  # a peer answers after its session opens and ICE gathers
REDIS_TIMEOUT_S = 2.0
HEALTH_CACHE_S = 1.0  # /health needs no token: a flood of it reads Redis once a second
WILDCARD_HOSTS = frozenset({"0.0.0.0", "::", ""})

DrainHook = Callable[[], Awaitable[None]]


class PeerRefusedError(AvatarError):
    """A peer refused a forwarded offer for a reason of the offer's own (not busy)."""

    def __init__(self, message: str, status_code: int) -> None:
        super().__init__(message)
        self.status_code = status_code


@dataclass(frozen=True)
class NodeLoad:
    """One node's load as published in Redis."""

    node_id: str
    url: str
    sessions: int
    max_sessions: int
    draining: bool = False
    version: str = ""
    updated_at: float = 0.0  # unix time of the heartbeat that wrote it

    @property
    def free(self) -> int:
        """Sessions it would take now; a draining node takes none."""
        return 0 if self.draining else max(self.max_sessions - self.sessions, 0)

    def to_json(self) -> str:
        """The record as stored in Redis."""
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, raw: str | bytes | None) -> NodeLoad | None:
        """Parse a stored record; None for a missing or malformed one (skipped, not fatal)."""
        if raw is None:
            return None
        try:
            data = json.loads(raw)
            return cls(
                node_id=str(data["node_id"]),
                url=str(data["url"]),
                sessions=int(data["sessions"]),
                max_sessions=int(data["max_sessions"]),
                draining=bool(data.get("draining", False)),
                version=str(data.get("version", "")),
                updated_at=float(data.get("updated_at", 0.0)),
            )
        except (ValueError, TypeError, KeyError):
            return None

    def public(self) -> dict[str, Any]:
        """What ``/health`` shows of a node (its URL stays out of the unauthenticated page)."""
        return {
            "node": self.node_id,
            "sessions": self.sessions,
            "max_sessions": self.max_sessions,
            "draining": self.draining,
        }


def pick_peers(nodes: list[NodeLoad], self_id: str) -> list[NodeLoad]:
    """Peers with room, the most free first (ties: fewest sessions, then by id)."""
    peers = [n for n in nodes if n.node_id != self_id and n.free > 0]
    return sorted(peers, key=lambda n: (-n.free, n.sessions, n.node_id))


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def default_public_url(host: str, port: int) -> str:
    """``http://HOST:PORT``; a wildcard bind (0.0.0.0) names the machine instead."""
    name = socket.gethostname() if host in WILDCARD_HOSTS else host
    return f"http://{_url_host(name)}:{port}"


def public_url(settings: Settings) -> str:
    """The URL peers reach this node at: ``AVATAR_PUBLIC_URL`` checked, or the default."""
    if not settings.public_url:
        return default_public_url(settings.host, settings.port)
    url = settings.public_url.strip().rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.path:
        raise ConfigurationError(
            f"AVATAR_PUBLIC_URL={settings.public_url!r} is not a node's base URL; give it "
            "as http(s)://HOST:PORT (how the other nodes reach this one), with no path"
        )
    return url


def node_id(settings: Settings) -> str:
    """``AVATAR_NODE_ID``, or ``HOSTNAME:PORT``."""
    given = (settings.node_id or "").strip()
    if given:
        if len(given) > 100 or any(c.isspace() for c in given):
            raise ConfigurationError(
                f"AVATAR_NODE_ID={settings.node_id!r} must be 1-100 characters with no spaces"
            )
        return given
    return f"{socket.gethostname()}:{settings.port}"


def _redis_module() -> Any:
    try:
        import redis.asyncio as aioredis
    except ImportError:  # pragma: no cover - a dependency, but say what to do
        raise ConfigurationError(
            "AVATAR_REDIS_URL is set but the 'redis' package is missing; run `make deps`"
        ) from None
    return aioredis


class Cluster:
    """This node's place in Redis: publishes its load, reads its peers', forwards offers."""

    def __init__(self, settings: Settings, load: NodeLoadSource) -> None:
        if settings.node_ttl_s <= settings.node_heartbeat_s:
            raise ConfigurationError(
                f"AVATAR_NODE_TTL_S ({settings.node_ttl_s}) must be longer than "
                f"AVATAR_NODE_HEARTBEAT_S ({settings.node_heartbeat_s}), or a live node "
                "would vanish between heartbeats; make it three heartbeats or more"
            )
        url = settings.redis_url or ""
        if urlsplit(url).scheme not in ("redis", "rediss", "unix"):
            raise ConfigurationError(
                f"AVATAR_REDIS_URL={url!r} is not a Redis URL; give redis://HOST:PORT/DB"
            )
        self.settings = settings
        self.load = load
        self.redis: Any = _redis_module().from_url(
            url,
            socket_timeout=REDIS_TIMEOUT_S,
            socket_connect_timeout=REDIS_TIMEOUT_S,
            decode_responses=True,
        )
        self.http = httpx.AsyncClient(
            timeout=httpx.Timeout(PEER_ANSWER_TIMEOUT_S, connect=PEER_CONNECT_TIMEOUT_S),
            trust_env=False,  # peers are reached directly, never through a proxy
        )
        self.peer_secret: str | None = None
        self.redis_up: bool | None = None  # None until the first heartbeat
        self._wake = asyncio.Event()
        self._stopping = False
        self._seen: tuple[float, list[NodeLoad]] = (-HEALTH_CACHE_S, [])
        self._task: asyncio.Task[None] | None = None

    @property
    def key(self) -> str:
        """This node's Redis key."""
        return NODE_KEY_PREFIX + self.load.node_id

    async def start(self) -> None:
        """First heartbeat (a Redis that is down is retried, not fatal), then the loop."""
        await self.beat()
        self._task = asyncio.ensure_future(self._heartbeats())

    def changed(self) -> None:
        """A session opened or closed: publish now rather than at the next heartbeat."""
        self._wake.set()

    async def _heartbeats(self) -> None:
        # The flag, not cancellation alone, ends the loop: Python 3.11's wait_for loses a
        # cancel that arrives as the event it waits on is set (a session closing at stop).
        while not self._stopping:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.settings.node_heartbeat_s)
            self._wake.clear()
            if not self._stopping:
                await self.beat()

    async def beat(self) -> None:
        """Publish this node's load and read the peer secret; log once per Redis outage."""
        try:
            await self._publish()
            self.peer_secret = await self._read_secret()
        except Exception as exc:  # redis.RedisError, OSError: keep serving on our own
            if self.redis_up is not False:  # up before, or the first try: once per outage
                log.warning(
                    "Redis at %s unreachable (%s); this node serves on its own until it is back",
                    _redact_url(self.settings.redis_url or ""),
                    exc,
                )
            self.redis_up = False
            metrics.CLUSTER_REDIS_UP.set(0)
            return
        if self.redis_up is not True:
            log.info("node %s registered in Redis as %s", self.load.node_id, self.load.url)
        self.redis_up = True
        metrics.CLUSTER_REDIS_UP.set(1)

    async def _publish(self) -> None:
        record = self.load.snapshot()
        ttl_ms = int(self.settings.node_ttl_s * 1000)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(self.key, record.to_json(), px=ttl_ms)
            pipe.sadd(NODES_KEY, record.node_id)
            await pipe.execute()

    async def _read_secret(self) -> str:
        await self.redis.set(PEER_SECRET_KEY, secrets.token_urlsafe(32), nx=True)
        secret = await self.redis.get(PEER_SECRET_KEY)
        return str(secret)

    async def nodes(self) -> list[NodeLoad]:
        """Every live node's load (this one included); expired members are pruned."""
        ids = sorted(await self.redis.smembers(NODES_KEY))
        if not ids:
            return []
        raws = await self.redis.mget([NODE_KEY_PREFIX + i for i in ids])
        found: list[NodeLoad] = []
        gone: list[str] = []
        for member, raw in zip(ids, raws, strict=True):
            record = NodeLoad.from_json(raw)
            if record is None:
                gone.append(member)
            else:
                found.append(record)
        if gone:
            await self.redis.srem(NODES_KEY, *gone)
        metrics.CLUSTER_NODES.set(len(found))
        return found

    async def recent_nodes(self) -> list[NodeLoad]:
        """``nodes()``, read at most once every ``HEALTH_CACHE_S``."""
        read_at, nodes = self._seen
        now = time.monotonic()
        if now - read_at >= HEALTH_CACHE_S:
            nodes = await self.nodes()
            self._seen = (now, nodes)
        return nodes

    def from_peer(self, request: Request) -> bool:
        """Whether a request comes from a node of this cluster (it holds the secret)."""
        given = request.headers.get(PEER_HEADER, "")
        secret = self.peer_secret
        return bool(given and secret) and hmac.compare_digest(given.encode(), str(secret).encode())

    async def forward_offer(self, body: dict[str, Any], client: str) -> dict[str, Any] | None:
        """Pass an offer to peers with room; their answer, or None when none took it.

        A peer that is full by now (503), unreachable or failing is skipped for the next;
        a peer that refuses the offer itself (4xx) raises ``PeerRefusedError``: another
        peer would refuse it too.
        """
        try:
            peers = pick_peers(await self.nodes(), self.load.node_id)[:MAX_FORWARD_TRIES]
        except Exception as exc:
            log.warning("cannot read the other nodes from Redis: %s", exc)
            metrics.OFFERS_FORWARDED.labels(outcome="redis_error").inc()
            return None
        if not peers:
            metrics.OFFERS_FORWARDED.labels(outcome="no_room").inc()
            return None
        headers = {FORWARDED_HEADER: self.load.node_id, "X-Forwarded-For": client}
        if self.peer_secret:
            headers[PEER_HEADER] = self.peer_secret
        if self.settings.token:
            headers["Authorization"] = f"Bearer {self.settings.token}"
        for peer in peers:
            try:
                res = await self.http.post(peer.url + OFFER_PATH, json=body, headers=headers)
            except httpx.HTTPError as exc:
                log.warning("node %s at %s unreachable: %s", peer.node_id, peer.url, exc)
                metrics.OFFERS_FORWARDED.labels(outcome="unreachable").inc()
                continue
            if res.status_code == 200:
                try:
                    answer = dict(res.json())
                except ValueError:
                    answer = {}
                if isinstance(answer.get("sdp"), str) and isinstance(answer.get("session_id"), str):
                    metrics.OFFERS_FORWARDED.labels(outcome="answered").inc()
                    log.info("offer passed to node %s", peer.node_id)
                    return answer
                metrics.OFFERS_FORWARDED.labels(outcome="peer_error").inc()
                continue
            if res.status_code == 503:
                metrics.OFFERS_FORWARDED.labels(outcome="peer_busy").inc()
                continue
            if 400 <= res.status_code < 500 and res.status_code not in (401, 403, 429):
                metrics.OFFERS_FORWARDED.labels(outcome="refused").inc()
                raise PeerRefusedError(_error_of(res), res.status_code)
            # 401/403: the peers do not share the token or host names; 429/5xx: its trouble.
            log.warning(
                "node %s answered a forwarded offer with %s: %s",
                peer.node_id,
                res.status_code,
                _error_of(res),
            )
            metrics.OFFERS_FORWARDED.labels(outcome="peer_error").inc()
        return None

    async def stop(self) -> None:
        """Leave Redis (delete this node's key) and close the connections."""
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait({self._task}, timeout=2 * REDIS_TIMEOUT_S)
        try:
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.delete(self.key)
                pipe.srem(NODES_KEY, self.load.node_id)
                await pipe.execute()
            log.info("node %s left Redis", self.load.node_id)
        except Exception as exc:
            log.warning("could not leave Redis (the key expires on its own): %s", exc)
        await self.http.aclose()
        with contextlib.suppress(Exception):
            await self.redis.aclose()


def _error_of(res: httpx.Response) -> str:
    try:
        body = res.json()
    except ValueError:
        return res.text[:200]
    return str(body.get("error", body))[:300] if isinstance(body, dict) else str(body)[:300]


def _redact_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.password:
        return url.replace(f":{parts.password}@", ":***@")
    return url


class NodeLoadSource:
    """This node's identity and current load, read by the heartbeat."""

    def __init__(self, settings: Settings, sessions: Callable[[], int]) -> None:
        self.node_id = node_id(settings)
        self.url = public_url(settings)
        self.max_sessions = settings.max_sessions
        self.sessions = sessions
        self.draining = False

    def snapshot(self) -> NodeLoad:
        """The record to publish now."""
        return NodeLoad(
            node_id=self.node_id,
            url=self.url,
            sessions=self.sessions(),
            max_sessions=self.max_sessions,
            draining=self.draining,
            version=__version__,
            updated_at=time.time(),
        )


class Node:
    """This server as a node: its load, its drain, and its cluster when Redis is set.

    ``sessions`` counts live sessions plus offers being answered (the slots taken).
    """

    def __init__(self, settings: Settings, sessions: Callable[[], int]) -> None:
        self.settings = settings
        self.load = NodeLoadSource(settings, sessions)
        self.cluster = Cluster(settings, self.load) if settings.redis_url else None
        self._hooks: list[DrainHook] = []
        metrics.NODE_INFO.labels(node=self.load.node_id, url=self.load.url).set(1)
        metrics.SESSIONS_MAX.set(settings.max_sessions)
        metrics.NODE_DRAINING.set(0)

    @property
    def node_id(self) -> str:
        """This node's id."""
        return self.load.node_id

    @property
    def draining(self) -> bool:
        """True once SIGTERM arrived: no new sessions here."""
        return self.load.draining

    def on_drain(self, hook: DrainHook) -> None:
        """Run ``hook`` when the drain starts (the video jobs hand back their work)."""
        self._hooks.append(hook)

    async def start(self) -> None:
        """Join the cluster, if there is one."""
        if self.cluster is not None:
            await self.cluster.start()

    async def stop(self) -> None:
        """Leave the cluster, if there is one."""
        if self.cluster is not None:
            await self.cluster.stop()

    def changed(self) -> None:
        """A session opened or closed."""
        if self.cluster is not None:
            self.cluster.changed()

    def from_peer(self, request: Request) -> bool:
        """Whether the request is an offer forwarded by a proven peer (not rate-limited)."""
        return self.cluster is not None and self.cluster.from_peer(request)

    def may_forward(self, request: Request) -> bool:
        """Whether this node may pass the request's offer on: clustered, and first hop."""
        return self.cluster is not None and FORWARDED_HEADER.lower() not in request.headers

    async def forward_offer(self, body: dict[str, Any], client: str) -> dict[str, Any] | None:
        """A peer's answer to the offer, or None when no peer took it."""
        if self.cluster is None:
            return None
        return await self.cluster.forward_offer(body, client)

    def busy_message(self, running: int) -> str:
        """Why this node refuses an offer no peer took."""
        if self.draining:
            here = "this server is shutting down and takes no new conversations"
        else:
            here = (
                f"busy: {running} conversation(s) already running (the limit is "
                f"{self.settings.max_sessions})"
            )
        if self.cluster is not None:
            return f"{here}, and no other node has room; try again in a moment"
        return f"{here}; try again in a moment"

    async def health(self) -> dict[str, Any]:
        """This node's part of ``/health``; with a cluster, every node's load."""
        report: dict[str, Any] = {
            "node": self.node_id,
            "draining": self.draining,
        }
        if self.cluster is not None:
            try:
                nodes = await asyncio.wait_for(self.cluster.recent_nodes(), REDIS_TIMEOUT_S)
                report["cluster"] = {
                    "redis": "ok",
                    "nodes": [n.public() for n in nodes],
                }
            except Exception as exc:
                report["cluster"] = {"redis": f"unreachable: {type(exc).__name__}"}
        return report

    async def drain(self) -> None:
        """Take no new sessions, hand back jobs, wait for the sessions (bounded)."""
        if self.load.draining:
            return
        self.load.draining = True
        metrics.NODE_DRAINING.set(1)
        bound_s = self.settings.drain_timeout_s
        log.warning(
            "draining: %d session(s) running; no new ones; stopping when they end or in %.0f s",
            self.load.sessions(),
            bound_s,
        )
        deadline = time.monotonic() + bound_s
        if self.cluster is not None:
            await self.cluster.beat()  # peers stop sending offers here at once
        # The hooks (jobs handed back) run while the calls finish, within the same bound.
        hooks = [asyncio.ensure_future(_logged(hook)) for hook in self._hooks]
        while self.load.sessions() > 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        left = self.load.sessions()
        if left:
            log.warning("drain bound reached: closing %d session(s)", left)
        if hooks:
            _, pending = await asyncio.wait(hooks, timeout=max(deadline - time.monotonic(), 1.0))
            for task in pending:
                log.warning("a drain hook did not finish within the bound; stopping anyway")
                task.cancel()


async def _logged(hook: DrainHook) -> None:
    try:
        await hook()
    except Exception:
        log.exception("a drain hook failed")


class DrainingServer(uvicorn.Server):
    """uvicorn's server, but the first SIGTERM drains the node before it stops."""

    def __init__(self, config: uvicorn.Config, node: Node) -> None:
        super().__init__(config)
        self.node = node
        self._loop: asyncio.AbstractEventLoop | None = None
        self._drain_task: asyncio.Task[None] | None = None

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        """Serve, remembering the loop the signal handler hands the drain to."""
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets=sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        """First SIGTERM while serving: drain, then exit; anything else: uvicorn's way."""
        draining = self._drain_task is not None
        if sig == signal.SIGTERM and not draining and not self.should_exit and self._loop:
            self._captured_signals.append(sig)  # re-raised after shutdown, as uvicorn does
            self._loop.call_soon_threadsafe(self._start_drain)
            return
        super().handle_exit(sig, frame)

    def _start_drain(self) -> None:
        self._drain_task = asyncio.ensure_future(self._drain_then_exit())

    async def _drain_then_exit(self) -> None:
        try:
            await self.node.drain()
        finally:
            self.should_exit = True


def serve(app: FastAPI, host: str, port: int) -> None:
    """Run the app like ``uvicorn.run``, with the drain on SIGTERM."""
    config = uvicorn.Config(app, host=host, port=port, log_level="info")
    server = DrainingServer(config, app.state.node)
    with contextlib.suppress(KeyboardInterrupt):  # the re-raised signal, as uvicorn.run
        server.run()
    if not server.started:
        sys.exit(3)  # uvicorn's STARTUP_FAILURE
