"""Request controls in front of every route: Host, Origin, the token off loopback, body size.

A pure ASGI middleware, so that it sees each request before FastAPI parses anything and
can stop a body while it is being read rather than after.
"""

from __future__ import annotations

import ipaddress
import json
import math
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import urlsplit

from fastapi import HTTPException

from ..settings import Settings

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def split_list(value: str) -> list[str]:
    """The items of a comma-separated setting, trimmed and lower-cased."""
    return [item.strip().lower() for item in value.split(",") if item.strip()]


def host_name(host: str) -> str:
    """The name part of a Host header (``[::1]:8000`` -> ``::1``, ``a.b:80`` -> ``a.b``)."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    if host.count(":") > 1:  # a bare IPv6 address has no port
        return host
    name, _, port = host.rpartition(":")
    return name if name and port.isdigit() else host


def is_ip(name: str) -> bool:
    """Whether ``name`` is an IP literal."""
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def is_loopback(name: str) -> bool:
    """Whether ``name`` is a loopback address or name."""
    if name in LOOPBACK_NAMES or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


class HostPolicy:
    """Which Host headers and Origins the server accepts.

    An IP literal in the Host header cannot come from DNS rebinding (the page that sent it
    was served from that very address), nor can a loopback name (browsers resolve
    ``localhost`` themselves); any other name must be the bound host or listed in
    ``AVATAR_ALLOWED_HOSTS``.
    """

    def __init__(self, settings: Settings) -> None:
        self.names = {host_name(settings.host), *split_list(settings.allowed_hosts)}
        self.cors_origins = set(split_list(settings.cors_origins))

    def host_allowed(self, host: str) -> bool:
        """Whether a request with this Host header may be served."""
        name = host_name(host)
        return is_ip(name) or is_loopback(name) or name in self.names

    def origin_allowed(self, origin: str, host: str) -> bool:
        """Whether a browser page from ``origin`` may change state on this server."""
        origin = origin.strip().lower()
        if origin in self.cors_origins:
            return True
        parts = urlsplit(origin)
        return parts.scheme in ("http", "https") and parts.netloc == host.strip().lower()


class Guard:
    """The ASGI middleware: refuses before the app runs, with one short JSON error."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.policy = HostPolicy(settings)
        self.token_set = bool(settings.token)
        self.max_json_bytes = settings.max_json_bytes
        self.max_upload_bytes = settings.max_upload_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # lifespan (the app has no websocket routes)
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        refusal = self._refusal(scope, headers)
        if refusal is not None:
            status, message = refusal
            await _send_error(send, status, message)
            return
        if scope["method"] in UNSAFE_METHODS:
            receive = self._bounded(receive, headers)
        await self.app(scope, receive, send)

    def _refusal(self, scope: Scope, headers: dict[str, str]) -> tuple[int, str] | None:
        # uvicorn reports the local address the connection came in on: a request that
        # reached us over the network is refused unless a token guards the API.
        server = scope.get("server")
        if server and not self.token_set and is_ip(server[0]) and not is_loopback(server[0]):
            return 403, (
                "this server is reachable from the network without a token; set AVATAR_TOKEN "
                "to a secret, or bind to 127.0.0.1"
            )
        host = headers.get("host", "")
        if host and not self.policy.host_allowed(host):
            return 421, (
                f"this server does not answer to the host name {host_name(host)[:100]!r}; "
                "add it to AVATAR_ALLOWED_HOSTS if it is yours"
            )
        origin = headers.get("origin")
        if (
            origin is not None
            and scope["method"] in UNSAFE_METHODS
            and not self.policy.origin_allowed(origin, host)
        ):
            return 403, (
                f"requests from the web page at {origin[:100]!r} are not allowed; add it to "
                "AVATAR_CORS_ORIGINS if it is yours"
            )
        declared = headers.get("content-length", "")
        limit = self._limit(headers)
        if declared.isdigit() and int(declared) > limit:
            return 413, _too_large(limit)
        return None

    def _limit(self, headers: dict[str, str]) -> int:
        content_type = headers.get("content-type", "")
        return (
            self.max_upload_bytes if content_type.startswith("multipart/") else self.max_json_bytes
        )

    def _bounded(self, receive: Receive, headers: dict[str, str]) -> Receive:
        """``receive`` that counts body bytes and stops the request at the limit."""
        limit = self._limit(headers)
        seen = 0

        async def bounded_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    # FastAPI lets an HTTPException through its body parsing untouched.
                    raise HTTPException(status_code=413, detail=_too_large(limit))
            return message

        return bounded_receive


def _too_large(limit: int) -> str:
    return f"the request body is larger than {limit} bytes; send a smaller one"


async def _send_error(send: Send, status: int, message: str) -> None:
    body = json.dumps({"error": message}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class RateLimiter:
    """A token bucket per client address: ``burst`` at once, then ``per_minute``."""

    def __init__(self, burst: int, per_minute: float, max_clients: int = 10_000) -> None:
        self.burst = max(burst, 1)
        self.rate_per_s = max(per_minute, 1e-6) / 60.0
        self.max_clients = max_clients  # the table is bounded: the stalest client goes
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def take(self, client: str, now: float | None = None) -> float:
        """Take one token for ``client``: 0.0 if granted, else the seconds to wait."""
        now = time.monotonic() if now is None else now
        tokens, last = self._buckets.pop(client, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - last) * self.rate_per_s)
        wait_s = 0.0
        if tokens >= 1.0:
            tokens -= 1.0
        else:
            wait_s = (1.0 - tokens) / self.rate_per_s
        self._buckets[client] = (tokens, now)
        while len(self._buckets) > self.max_clients:
            self._buckets.popitem(last=False)
        return wait_s

    def give_back(self, client: str) -> None:
        """Return a token taken for a request that was refused for another reason."""
        if client in self._buckets:
            tokens, last = self._buckets[client]
            self._buckets[client] = (min(float(self.burst), tokens + 1.0), last)


def retry_after(wait_s: float) -> str:
    """A Retry-After header value: whole seconds, at least 1."""
    return str(max(1, math.ceil(wait_s)))
