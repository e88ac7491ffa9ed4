"""The HTTP half of the bad-input catalogue: Host, Origin, CORS, sizes, tokens, fuzzing.

Fast tests run the real app in process (``create_app(..., warm_up=False)`` loads no model
as long as no session opens); the slow ones start ``avatar serve`` and race real WebRTC
offers against the session limit.
"""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import httpx
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from realtime_avatar.dialogue.base import DialogueError
from realtime_avatar.dialogue.openai_compat import OpenAIResponder
from realtime_avatar.errors import AvatarError, ConfigurationError
from realtime_avatar.events import ErrorEvent, TranscriptEvent
from realtime_avatar.server.app import create_app
from realtime_avatar.server.guard import RateLimiter, host_name
from realtime_avatar.settings import Settings

from .llm_server import BAD_STREAM_MODES, bad_stream_server

if TYPE_CHECKING:
    from aiortc import RTCPeerConnection

LOCAL = "http://127.0.0.1:8000"
TOKEN = "s3cret-token-for-tests"
# A session description as far as the route's own checks go; never a usable one.
FAKE_SDP = "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n"


def _fake_avatar(data_dir: Path, name: str) -> None:
    """An avatar folder as the list sees it (a manifest), for routes that only list names."""
    folder = data_dir / "avatars" / name
    folder.mkdir(parents=True)
    (folder / "manifest.json").write_text("{}")


@pytest.fixture
def make_client(tmp_path: Path) -> Iterator[Any]:
    clients: list[TestClient] = []

    def make(base_url: str = LOCAL, **options: Any) -> TestClient:
        app = create_app(Settings(data_dir=tmp_path, **options), warm_up=False)
        client = TestClient(app, base_url=base_url, raise_server_exceptions=False)
        client.__enter__()
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


ROUTES = [
    ("GET", "/"),
    ("GET", "/static/app.js"),
    ("GET", "/api/v1/options"),
    ("GET", "/api/v1/avatars"),
    ("GET", "/api/v1/avatars/default/image"),
    ("GET", "/api/v1/sessions/abc/turns"),
    ("POST", "/api/v1/rtc/offer"),
]


# ---------------------------------------------------------------- DNS rebinding: Host
@pytest.mark.parametrize(("method", "path"), ROUTES)
@pytest.mark.parametrize("host", ["evil.example", "evil.example:8000", "127.0.0.1.evil.example"])
def test_a_foreign_host_gets_nothing(make_client: Any, method: str, path: str, host: str) -> None:
    res = make_client().request(method, path, headers={"Host": host}, json={"sdp": FAKE_SDP})
    assert res.status_code == 421
    assert "AVATAR_ALLOWED_HOSTS" in res.json()["error"]


@pytest.mark.parametrize(
    "host", ["127.0.0.1:8000", "localhost:8000", "LOCALHOST", "[::1]:8000", "app.localhost"]
)
def test_loopback_hosts_are_served(make_client: Any, host: str) -> None:
    assert make_client().get("/", headers={"Host": host}).status_code == 200


def test_allowed_hosts_setting_adds_names(make_client: Any) -> None:
    client = make_client(allowed_hosts="avatar.lan, Other.Example")
    assert client.get("/", headers={"Host": "avatar.lan:8000"}).status_code == 200
    assert client.get("/", headers={"Host": "other.example"}).status_code == 200
    assert client.get("/", headers={"Host": "third.example"}).status_code == 421


def test_host_name_parsing() -> None:
    assert host_name("[::1]:8000") == "::1"
    assert host_name("Example.COM:80") == "example.com"
    assert host_name("::1") == "::1"


# ---------------------------------------------------------------- Origin and CORS
@pytest.mark.parametrize("origin", ["https://evil.example", "null", "http://127.0.0.1:9999"])
def test_a_foreign_origin_cannot_post(make_client: Any, origin: str) -> None:
    res = make_client().post("/api/v1/rtc/offer", headers={"Origin": origin}, json={"sdp": "x"})
    assert res.status_code == 403
    assert "AVATAR_CORS_ORIGINS" in res.json()["error"]


def test_the_own_origin_may_post(make_client: Any) -> None:
    # Not an SDP: refused by the route itself, so the Origin got through.
    res = make_client().post(
        "/api/v1/rtc/offer", headers={"Origin": LOCAL}, json={"sdp": "not sdp"}
    )
    assert res.status_code == 400 and "v=0" in res.json()["error"]


def test_cors_is_closed_by_default(make_client: Any) -> None:
    client = make_client()
    preflight = client.options(
        "/api/v1/rtc/offer",
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
    )
    assert "access-control-allow-origin" not in preflight.headers
    res = client.get("/api/v1/options", headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in res.headers


def test_cors_opens_only_to_configured_origins(make_client: Any) -> None:
    client = make_client(cors_origins="https://app.example")
    ok = client.get("/api/v1/options", headers={"Origin": "https://app.example"})
    assert ok.headers["access-control-allow-origin"] == "https://app.example"
    other = client.get("/api/v1/options", headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in other.headers
    posted = client.post(
        "/api/v1/rtc/offer", headers={"Origin": "https://app.example"}, json={"sdp": "x"}
    )
    assert posted.status_code == 400


# ---------------------------------------------------------------- sizes and shapes
def test_a_declared_oversized_body_is_refused_before_reading(make_client: Any) -> None:
    client = make_client(max_json_bytes=1000)
    res = client.post("/api/v1/rtc/offer", content=b"{" + b" " * 5000 + b"}")
    assert res.status_code == 413
    assert res.json() == {"error": "the request body is larger than 1000 bytes; send a smaller one"}


def test_a_streamed_oversized_body_is_stopped_while_reading(make_client: Any) -> None:
    sent = 0

    def chunks() -> Iterator[bytes]:
        nonlocal sent
        for _ in range(1000):  # 64 MB if nothing stopped it
            sent += 65536
            yield b" " * 65536

    client = make_client(max_json_bytes=100_000)
    res = client.post(
        "/api/v1/rtc/offer", content=chunks(), headers={"Content-Type": "application/json"}
    )
    assert res.status_code == 413 and "100000 bytes" in res.json()["error"]
    assert len(res.content) < 200


def test_uploads_are_bounded_by_max_upload_bytes(make_client: Any) -> None:
    client = make_client(max_upload_bytes=2000, max_json_bytes=100)
    files = {"photo": ("a.png", b"x" * 5000, "image/png")}
    assert client.post("/api/v1/rtc/offer", files=files).status_code == 413
    small = {"photo": ("a.png", b"x" * 500, "image/png")}
    assert client.post("/api/v1/rtc/offer", files=small).status_code == 422


def test_a_validation_error_never_echoes_the_body(make_client: Any) -> None:
    marker = "ECHO" * 30_000  # 120 KB, over the SDP field's limit, under the body's
    res = make_client().post("/api/v1/rtc/offer", json={"sdp": marker})
    assert res.status_code == 422
    assert "ECHO" not in res.text and len(res.content) < 500
    assert res.json()["error"].startswith("invalid request: sdp:")


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("text/plain", b"v=0"),
        ("application/x-www-form-urlencoded", b"sdp=v%3D0"),
        ("application/json", b"[1, 2, 3]"),
        ("application/json", b'{"sdp": 5}'),
        ("application/json", b"{not json"),
        ("application/json", b""),
        ("application/xml", b"<offer/>"),
    ],
)
def test_wrong_content_types_and_shapes_get_a_short_422(
    make_client: Any, content_type: str, body: bytes
) -> None:
    res = make_client().post(
        "/api/v1/rtc/offer", content=body, headers={"Content-Type": content_type}
    )
    assert res.status_code == 422, res.text
    assert res.json()["error"].startswith("invalid request") and len(res.content) < 500


def test_an_offer_with_no_audio_is_refused_clearly(make_client: Any) -> None:
    video_only = FAKE_SDP.replace("m=audio", "m=video")
    res = make_client().post("/api/v1/rtc/offer", json={"sdp": video_only})
    assert res.status_code == 400 and "no audio" in res.json()["error"]


@pytest.mark.parametrize(
    "sdp", ["", "garbage", "v=0", "v=0\r\nm=", "\x00" * 100, "v=0\r\nm=audio ☃ ☃\r\n" * 50]
)
def test_garbage_sdp_is_a_400_not_a_traceback(
    make_client: Any, sdp: str, caplog: pytest.LogCaptureFixture
) -> None:
    res = make_client(max_sessions=0).post("/api/v1/rtc/offer", json={"sdp": sdp})
    assert res.status_code in (400, 503), res.text
    assert "error" in res.json() and "Traceback" not in caplog.text


# ---------------------------------------------------------------- path traversal
TRAVERSALS = [
    "..",
    "../../etc/passwd",
    "%2e%2e",
    "%2e%2e%2f%2e%2e%2fetc%2fpasswd",
    "%252e%252e%252f",
    "..%5c..%5cwindows",
    "%c0%ae%c0%ae",
    "default%00",
    "....//....//",
    "%2E%2E",
    "..;",
    "~root",
]


@pytest.mark.parametrize("name", TRAVERSALS)
def test_path_traversal_in_the_avatar_name(make_client: Any, tmp_path: Path, name: str) -> None:
    (tmp_path / "avatars").mkdir(exist_ok=True)
    (tmp_path / "face.png").write_bytes(b"\x89PNG secret")  # what a traversal would reach
    res = make_client().get(f"/api/v1/avatars/{name}/image")
    assert res.status_code in (400, 404), res.text
    assert b"secret" not in res.content and "error" in res.json()


@pytest.mark.parametrize("session_id", TRAVERSALS)
def test_path_traversal_in_the_session_id(make_client: Any, session_id: str) -> None:
    res = make_client().get(f"/api/v1/sessions/{session_id}/turns")
    assert res.status_code in (200, 404), res.text
    assert res.json().get("turns", []) == []


@pytest.mark.parametrize(
    "path", ["/static/../app.py", "/static/%2e%2e/app.py", "/static/..%2fapp.py"]
)
def test_path_traversal_in_static_files(make_client: Any, path: str) -> None:
    res = make_client().get(path)
    assert res.status_code == 404 and b"create_app" not in res.content


# ---------------------------------------------------------------- the token
def test_the_token_rule_lives_in_the_app() -> None:
    with pytest.raises(ConfigurationError, match="AVATAR_TOKEN"):
        create_app(Settings(host="0.0.0.0"), warm_up=False)
    create_app(Settings(host="0.0.0.0", token=TOKEN), warm_up=False)


def test_a_request_over_the_network_without_a_token_is_refused(make_client: Any) -> None:
    # Bound to every address by something other than our CLI: a LAN peer gets nothing.
    client = make_client(base_url="http://192.168.1.20:8000")
    res = client.get("/api/v1/options")
    assert res.status_code == 403 and "AVATAR_TOKEN" in res.json()["error"]


def test_with_a_token_nothing_names_an_avatar_without_it(make_client: Any, tmp_path: Path) -> None:
    _fake_avatar(tmp_path, "default")
    _fake_avatar(tmp_path, "private-face")
    client = make_client(token=TOKEN)
    bare = client.get("/api/v1/options").json()
    assert bare["avatars"] == [] and bare["token_required"] and not bare["token_ok"]
    assert "private-face" not in json.dumps(bare)
    wrong = client.get("/api/v1/options", headers={"Authorization": "Bearer nope"}).json()
    assert wrong["avatars"] == []
    auth = {"Authorization": f"Bearer {TOKEN}"}
    good = client.get("/api/v1/options", headers=auth).json()
    assert good["avatars"] == ["default", "private-face"] and good["token_ok"]
    for path in (
        "/api/v1/avatars",
        "/api/v1/avatars/private-face/image",
        "/api/v1/sessions/x/turns",
    ):
        assert client.get(path).status_code == 401
        assert client.get(path, headers={"Authorization": "Bearer nope"}).status_code == 401
    assert client.post("/api/v1/rtc/offer", json={"sdp": FAKE_SDP}).status_code == 401
    assert client.get("/api/v1/avatars", headers=auth).json()["avatars"] == [
        "default",
        "private-face",
    ]


def test_the_token_never_reaches_the_access_log(
    make_client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    make_client()  # installs the filter, as any app start does
    access = logging.getLogger("uvicorn.access")
    with caplog.at_level(logging.INFO, logger="uvicorn.access"):
        access.info(
            '%s - "%s %s HTTP/%s" %d', "127.0.0.1:5", "GET", f"/?token={TOKEN}&x=1", "1.1", 200
        )
    assert TOKEN not in caplog.text and "token=***&x=1" in caplog.text
    # A video job's stream link carries a per-job key that opens its video.
    with caplog.at_level(logging.INFO, logger="uvicorn.access"):
        access.info(
            '%s - "%s %s HTTP/%s" %d',
            "127.0.0.1:5",
            "GET",
            "/api/v1/videos/j1/stream?key=s3cr3t",
            "1.1",
            200,
        )
    assert "s3cr3t" not in caplog.text and "stream?key=***" in caplog.text


def test_the_page_keeps_the_token_out_of_urls() -> None:
    page = (Path(__file__).parents[1] / "src/realtime_avatar/server/static/app.js").read_text()
    assert "location.hash" in page and "history.replaceState" in page
    # The poster is fetched with the header and shown as a blob, not loaded by URL.
    assert "createObjectURL" in page and "video.poster = `/api" not in page


# ---------------------------------------------------------------- offers: limit and rate
def test_the_session_limit_holds_under_a_flood(make_client: Any) -> None:
    """50 offers at once against a limit of 2: exactly 2 get a slot, 48 a clear 503."""
    client = make_client(max_sessions=2, offer_burst=100)
    app = client.app
    services = app.state.services  # type: ignore[attr-defined]
    opened: list[str] = []
    release = asyncio.Event()

    async def slow_open(*_args: Any) -> Any:
        # Holds its slot across awaits, as building a real session does.
        opened.append("x")
        await release.wait()
        raise AvatarError("stand-in session refused after the race")

    services.open_session = slow_open

    async def flood() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
        async with httpx.AsyncClient(transport=transport, base_url=LOCAL) as http:
            posts = [
                asyncio.ensure_future(http.post("/api/v1/rtc/offer", json={"sdp": FAKE_SDP}))
                for _ in range(50)
            ]
            while len(opened) < 2 or sum(p.done() for p in posts) < 48:
                await asyncio.sleep(0.01)
            release.set()
            return list(await asyncio.gather(*posts))

    responses = asyncio.run(flood())
    codes = sorted(r.status_code for r in responses)
    assert codes == [400, 400] + [503] * 48
    assert len(opened) == 2
    busy = [r.json()["error"] for r in responses if r.status_code == 503]
    assert all("the limit is 2" in e and "try again" in e for e in busy)
    # The slots were given back when the stand-in failed.
    assert client.get("/health").json()["sessions"] == 0


def test_offers_are_rate_limited_per_client() -> None:
    limiter = RateLimiter(burst=2, per_minute=6)
    assert limiter.take("a", now=0.0) == 0.0
    assert limiter.take("a", now=0.0) == 0.0
    assert limiter.take("a", now=0.0) == pytest.approx(10.0)
    assert limiter.take("b", now=0.0) == 0.0  # per client
    assert limiter.take("a", now=10.0) == 0.0
    small = RateLimiter(burst=1, per_minute=1, max_clients=3)
    for client in "abcdef":
        small.take(client, now=0.0)
    assert len(small._buckets) == 3  # bounded table


def test_an_offer_past_the_rate_gets_429_with_retry_after(make_client: Any) -> None:
    client = make_client(max_sessions=5, offer_burst=1, offers_per_minute=2)
    app = client.app

    async def refused(*_args: Any) -> Any:
        raise AvatarError("stand-in: no session")

    app.state.services.open_session = refused  # type: ignore[attr-defined]
    first = client.post("/api/v1/rtc/offer", json={"sdp": FAKE_SDP})
    assert first.status_code == 400
    second = client.post("/api/v1/rtc/offer", json={"sdp": FAKE_SDP})
    assert second.status_code == 429
    assert 1 <= int(second.headers["retry-after"]) <= 30
    assert "wait" in second.json()["error"]


# ---------------------------------------------------------------- fuzzing from OpenAPI
def _openapi_routes(client: TestClient) -> list[tuple[str, str, list[str], bool]]:
    """(method, path template, path parameters, takes a JSON body) of every API route."""
    spec = client.get("/openapi.json").json()
    routes = []
    for path, methods in spec["paths"].items():
        for method, op in methods.items():
            params = [p["name"] for p in op.get("parameters", []) if p["in"] == "path"]
            routes.append((method.upper(), path, params, "requestBody" in op))
    return routes


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=40),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=10,
)
_offer_like = st.fixed_dictionaries(
    {},
    optional={
        "sdp": st.text(max_size=200) | st.sampled_from(["v=0", FAKE_SDP, "v=0\r\nm=video"]),
        "type": st.sampled_from(["offer", "answer", "", "pranswer"]) | st.text(max_size=10),
        "avatar": st.text(max_size=50) | st.sampled_from(["default", "..", "../x", "A" * 41]),
        "language": st.none() | st.text(max_size=10),
        "dialogue": st.none() | st.text(max_size=10) | st.sampled_from(["openai", "persona"]),
    },
)
_segment = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=60
) | st.sampled_from(TRAVERSALS)


@pytest.mark.parametrize("token", [None, TOKEN])
def test_every_route_fuzzed_from_its_openapi_description(
    make_client: Any, tmp_path: Path, token: str | None
) -> None:
    _fake_avatar(tmp_path, "default")  # so listing never registers the real one
    client = make_client(token=token, max_sessions=0)
    routes = _openapi_routes(client)
    assert {path for _, path, _, _ in routes} >= {
        "/api/v1/rtc/offer",
        "/api/v1/avatars/{name}/image",
        "/api/v1/sessions/{session_id}/turns",
    }

    @settings(
        max_examples=150,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(
        route=st.sampled_from(routes),
        segment=_segment,
        body=_offer_like | _json,
        auth=st.sampled_from([None, f"Bearer {TOKEN}", "Bearer x", TOKEN, ""]),
    )
    def check(route: tuple[str, str, list[str], bool], segment: str, body: Any, auth: str) -> None:
        method, path, params, has_body = route
        for param in params:
            # The traversal list goes as written (already encoded); the rest percent-encoded.
            value = segment if segment in TRAVERSALS else quote(segment, safe="")
            path = path.replace("{" + param + "}", value)
        headers = {"Authorization": auth} if auth is not None else {}
        headers["Content-Type"] = "application/json"
        # Python's json writes NaN and Infinity too: what a sloppy client might send.
        content = json.dumps(body).encode() if has_body else None
        res = client.request(method, path, content=content, headers=headers)
        # max_sessions=0: an offer that passes every check is refused as busy, never opened.
        busy = res.status_code == 503 and "busy" in res.text
        assert res.status_code < 500 or busy, (method, path, body, res.text[:300])
        if res.status_code >= 400 and res.headers.get("content-type") == "application/json":
            assert set(res.json()) == {"error"} and len(res.content) < 2000, res.text[:300]

    check()


# ---------------------------------------------------------------- the LLM sends garbage
@pytest.mark.parametrize("mode", BAD_STREAM_MODES)
def test_a_malformed_llm_stream_is_a_dialogue_error(mode: str) -> None:
    async def scenario() -> tuple[list[str], BaseException | None]:
        async with bad_stream_server(mode) as url:
            responder = OpenAIResponder(url, "tiny", timeout_s=5.0, first_token_timeout_s=2.0)
            got: list[str] = []
            try:
                async for piece in responder.respond([], "hello", "en"):
                    got.append(piece)
            except DialogueError as error:
                return got, error
            finally:
                await responder.aclose()
            return got, None

    got, error = asyncio.run(scenario())
    if mode == "wrong-shape":  # events of no known shape carry no text: skipped
        assert got == ["Hello"] and error is None
        return
    assert error is not None, got
    message = str(error)
    assert "127.0.0.1" in message and len(message) < 400
    if mode == "error":
        assert "upstream model crashed" in message


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
@pytest.mark.parametrize("mode", ["garbage", "error", "html"])
async def test_a_malformed_llm_stream_still_answers_and_records_the_turn(
    mode: str, anyio_backend: str, caplog: pytest.LogCaptureFixture
) -> None:
    from .test_engine import Harness

    async with bad_stream_server(mode) as url:
        h = Harness()
        responder = OpenAIResponder(url, "tiny", timeout_s=5.0, first_token_timeout_s=2.0)
        h.conv.stages.responder = responder
        await h.conv.start()
        try:
            await h.say("are you there")
            turn = await h.play_turn()
        finally:
            await h.conv.close()
    assert h.turns == [turn.turn_id]  # recorded
    errors = [e.message for e in h.of(ErrorEvent)]
    assert len(errors) == 1 and len(errors[0]) < 400 and "Traceback" not in errors[0]
    final = [e.text for e in h.of(TranscriptEvent) if e.role == "avatar" and e.final][-1]
    assert final.endswith("Sorry, I lost my train of thought.")
    assert "Traceback" not in caplog.text


# ---------------------------------------------------------------- a real server (slow)
# The figures of the flood (fps and latency of the admitted calls) are bench/flood.py's.
@pytest.fixture(scope="module")
def strict_server(data_dir: Path) -> Iterator[str]:
    """`avatar serve` with short connect and silence limits, so dead slots free quickly."""
    from .live_server import running_server

    env = {
        "AVATAR_MAX_SESSIONS": "2",
        "AVATAR_SESSION_CONNECT_TIMEOUT_S": "3",
        "AVATAR_PEER_SILENT_TIMEOUT_S": "3",
        "AVATAR_OFFER_BURST": "50",
    }
    with running_server(data_dir, **env) as base:
        yield base


async def _offer_body() -> tuple[RTCPeerConnection, dict[str, str]]:
    """A real aiortc offer (mic and video), as a browser would post it."""
    from aiortc import RTCConfiguration, RTCPeerConnection
    from aiortc.mediastreams import AudioStreamTrack

    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTrack(AudioStreamTrack())
    pc.addTransceiver("video", direction="recvonly")
    await pc.setLocalDescription(await pc.createOffer())
    return pc, {"sdp": pc.localDescription.sdp, "type": "offer"}


def _sessions(base: str) -> int:
    return int(httpx.get(f"{base}/health", timeout=10).json()["sessions"])


def _wait_sessions(base: str, wanted: int, guard_s: float = 60.0) -> None:
    """Poll /health until it reads ``wanted`` (the guard only stops a hang)."""
    deadline = time.monotonic() + guard_s
    while _sessions(base) != wanted:
        assert time.monotonic() < deadline, f"sessions stuck at {_sessions(base)}"
        time.sleep(0.25)


@pytest.mark.slow
def test_real_offers_racing_past_the_limit_and_never_connecting(strict_server: str) -> None:
    """12 real offers at once: 2 calls, 10 clear 503s; the two never connect and are freed."""

    async def race() -> None:
        prepared = [await _offer_body() for _ in range(12)]
        try:
            async with httpx.AsyncClient(timeout=60) as http:
                responses = await asyncio.gather(
                    *(
                        http.post(f"{strict_server}/api/v1/rtc/offer", json=body)
                        for _, body in prepared
                    )
                )
            codes = sorted(r.status_code for r in responses)
            assert codes == [200, 200] + [503] * 10, [r.text[:200] for r in responses]
            busy = [r.json()["error"] for r in responses if r.status_code == 503]
            assert all("the limit is 2" in error for error in busy), busy
            assert _sessions(strict_server) == 2
            # The answers are never applied, the clients stay up and silent: only the
            # connect limit (3 s here) frees the slots.
            deadline = time.monotonic() + 60
            while _sessions(strict_server) != 0:
                assert time.monotonic() < deadline, "slots held by calls that never connected"
                await asyncio.sleep(0.25)
        finally:
            for pc, _ in prepared:
                await pc.close()

    _wait_sessions(strict_server, 0)
    asyncio.run(race())


@pytest.mark.slow
def test_a_connected_client_that_sends_no_media_is_closed(strict_server: str) -> None:
    from realtime_avatar.evaluate.rtc_client import AvatarCall

    async def call_then_mute() -> None:
        call = AvatarCall(strict_server, [], measure_mouth=False)
        await call.start()
        try:
            assert _sessions(strict_server) == 1
            assert call.mic is not None

            async def never() -> Any:
                await asyncio.Future()  # the mic hands over nothing: no RTP goes out

            call.mic.recv = never  # type: ignore[method-assign]
            deadline = time.monotonic() + 60
            while _sessions(strict_server) != 0:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.25)
        finally:
            await call.close()

    _wait_sessions(strict_server, 0)
    asyncio.run(call_then_mute())


_VANISHING_CLIENT = """
import asyncio, sys, time
from realtime_avatar.evaluate.rtc_client import AvatarCall

async def main():
    call = AvatarCall(sys.argv[1], [], measure_mouth=False)
    await call.start()
    print("connected", flush=True)
    await asyncio.sleep(600)

asyncio.run(main())
"""


@pytest.mark.slow
def test_a_client_that_vanishes_frees_its_slot(strict_server: str) -> None:
    """A client killed mid-call (no goodbye, no DTLS close) is noticed by its silence."""
    _wait_sessions(strict_server, 0)
    client = subprocess.Popen(
        [sys.executable, "-c", _VANISHING_CLIENT, strict_server],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert client.stdout is not None
        line = client.stdout.readline()
        assert line.strip() == "connected", line + client.stdout.read()[-2000:]
        assert _sessions(strict_server) == 1
        client.kill()
        client.wait(timeout=10)
        _wait_sessions(strict_server, 0)
    finally:
        if client.poll() is None:
            client.kill()
            client.wait(timeout=10)


@pytest.mark.slow
def test_a_real_server_refuses_a_foreign_host_and_origin(strict_server: str) -> None:
    assert httpx.get(strict_server, headers={"Host": "evil.example"}).status_code == 421
    res = httpx.post(
        f"{strict_server}/api/v1/rtc/offer",
        headers={"Origin": "https://evil.example"},
        json={"sdp": FAKE_SDP},
    )
    assert res.status_code == 403
    huge = httpx.post(
        f"{strict_server}/api/v1/rtc/offer",
        content=b"{" + b" " * 10_000_000 + b"}",
        headers={"Content-Type": "application/json"},
    )
    assert huge.status_code == 413 and len(huge.content) < 200
