"""Live sessions across nodes (server/cluster.py): load in Redis, offers passed on, drain.

Fast: the node records, the choice of peer, the settings' checks and the drain's wait,
with no Redis and no server. Slow: a real Debian redis-server on a loopback port, then two
real `avatar serve` processes with one session each, real aiortc clients, and SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from realtime_avatar.errors import ConfigurationError
from realtime_avatar.server import cluster
from realtime_avatar.server.cluster import (
    NODE_KEY_PREFIX,
    NODES_KEY,
    Cluster,
    Node,
    NodeLoad,
    NodeLoadSource,
    pick_peers,
)
from realtime_avatar.settings import Settings

from .live_server import free_port
from .redis_server import redis_server, redis_url  # noqa: F401

SERVER_READY_S = 240.0  # two servers load their models at once on two busy cores


def _load(node_id: str, sessions: int, max_sessions: int, draining: bool = False) -> NodeLoad:
    return NodeLoad(node_id, f"http://{node_id}:8000", sessions, max_sessions, draining)


# --- fast: records, peers, settings, the drain ------------------------------------------------


def test_node_record_round_trip_and_malformed_records() -> None:
    record = NodeLoad("a:8000", "http://a:8000", 1, 2, False, "0.1.0", 123.5)
    assert NodeLoad.from_json(record.to_json()) == record
    assert record.free == 1
    assert NodeLoad("a", "http://a", 1, 2, draining=True).free == 0
    assert NodeLoad("a", "http://a", 5, 2).free == 0
    for bad in (None, "", "{", "[]", '{"node_id": "a"}', '{"node_id":"a","url":"u",'
                '"sessions":"x","max_sessions":1}'):  # fmt: skip
        assert NodeLoad.from_json(bad) is None, bad
    # /health shows the load, not where the node listens.
    assert "url" not in record.public() and record.public()["sessions"] == 1


def test_peers_with_the_most_room_first_never_self_or_draining() -> None:
    nodes = [
        _load("self", 0, 4),
        _load("full", 2, 2),
        _load("draining", 0, 4, draining=True),
        _load("one-free", 1, 2),
        _load("three-free", 1, 4),
        _load("also-one-free", 0, 1),
    ]
    order = [n.node_id for n in pick_peers(nodes, "self")]
    assert order == ["three-free", "also-one-free", "one-free"]
    assert pick_peers([_load("self", 0, 4)], "self") == []


def test_public_url_and_node_id_settings() -> None:
    assert cluster.public_url(Settings(host="127.0.0.1", port=8123)) == "http://127.0.0.1:8123"
    assert cluster.public_url(Settings(host="::1", port=8123)) == "http://[::1]:8123"
    wildcard = cluster.public_url(Settings(host="0.0.0.0", port=8123, token="t"))
    assert not wildcard.startswith("http://0.0.0.0") and wildcard.endswith(":8123")
    given = Settings(public_url="https://node-2.example:8443/")
    assert cluster.public_url(given) == "https://node-2.example:8443"
    for bad in ("node-2:8000", "ftp://node-2", "http://node-2:8000/api", "http://"):
        with pytest.raises(ConfigurationError, match="AVATAR_PUBLIC_URL"):
            cluster.public_url(Settings(public_url=bad))
    assert cluster.node_id(Settings(node_id="gpu-box-1")) == "gpu-box-1"
    assert cluster.node_id(Settings(port=8123)).endswith(":8123")
    with pytest.raises(ConfigurationError, match="AVATAR_NODE_ID"):
        cluster.node_id(Settings(node_id="two words"))


def test_cluster_settings_are_checked_before_anything_connects() -> None:
    source = NodeLoadSource(Settings(), lambda: 0)
    with pytest.raises(ConfigurationError, match="AVATAR_NODE_TTL_S"):
        Cluster(
            Settings(redis_url="redis://127.0.0.1:1/0", node_ttl_s=1, node_heartbeat_s=2), source
        )
    with pytest.raises(ConfigurationError, match="AVATAR_REDIS_URL"):
        Cluster(Settings(redis_url="http://127.0.0.1:6379"), source)
    # No Redis URL: a node with no cluster, as before.
    assert Node(Settings(redis_url=None), lambda: 0).cluster is None


def test_drain_waits_for_sessions_runs_hooks_and_is_bounded() -> None:
    async def scenario() -> None:
        running = {"n": 1}
        node = Node(Settings(redis_url=None, drain_timeout_s=30.0), lambda: running["n"])
        handed_back: list[str] = []

        async def hand_back() -> None:
            handed_back.append("jobs")

        node.on_drain(hand_back)
        drain = asyncio.ensure_future(node.drain())
        await asyncio.sleep(0.3)
        assert node.draining and not drain.done() and handed_back == ["jobs"]
        assert "shutting down" in node.busy_message(1)
        running["n"] = 0  # the last session hangs up: the drain ends
        await asyncio.wait_for(drain, 10)

        stuck = Node(Settings(redis_url=None, drain_timeout_s=0.2), lambda: 1)

        async def never_done() -> None:
            await asyncio.sleep(3600)

        stuck.on_drain(never_done)
        # The bound ends it though a session runs and a hook hangs.
        await asyncio.wait_for(stuck.drain(), 10)
        assert stuck.draining

    asyncio.run(scenario())


def test_a_node_whose_redis_is_down_serves_on_its_own() -> None:
    """Nothing listens at the Redis URL: the node starts, says so, passes nothing on."""

    async def scenario() -> None:
        dead = f"redis://127.0.0.1:{free_port()}/0"
        node = Node(Settings(redis_url=dead, node_id="alone"), lambda: 0)
        await node.start()  # no exception: the heartbeat retries
        assert node.cluster is not None and node.cluster.redis_up is False
        assert await node.forward_offer({"sdp": "v=0"}, "127.0.0.1") is None
        health = await node.health()
        assert health["node"] == "alone" and "unreachable" in health["cluster"]["redis"]
        await node.stop()

    asyncio.run(scenario())


# --- slow: a real redis-server ----------------------------------------------------------------


@pytest.mark.slow
def test_nodes_publish_their_load_expire_and_leave(redis_url: str) -> None:  # noqa: F811
    import redis.asyncio as aioredis

    async def scenario() -> None:
        counts = {"a": 0, "b": 1}
        quick = {"redis_url": redis_url, "node_heartbeat_s": 0.2, "node_ttl_s": 1.0}
        a = Node(Settings(node_id="a", port=9001, max_sessions=1, **quick), lambda: counts["a"])
        b = Node(Settings(node_id="b", port=9002, max_sessions=2, **quick), lambda: counts["b"])
        await a.start()
        await b.start()
        assert a.cluster is not None and b.cluster is not None
        loads = {n.node_id: n for n in await a.cluster.nodes()}
        assert loads["a"].url == "http://127.0.0.1:9001" and loads["b"].sessions == 1
        assert [p.node_id for p in pick_peers(list(loads.values()), "a")] == ["b"]
        # Both read one peer secret; a forwarded offer is told apart by it.
        assert a.cluster.peer_secret and a.cluster.peer_secret == b.cluster.peer_secret

        counts["a"] = 1
        a.changed()  # published now, not at the next heartbeat
        await _until(lambda: _sessions_of(a, "a"), 1, 5)

        # A draining node says so at once: its peers send it nothing more.
        counts["b"] = 0
        drain = asyncio.ensure_future(b.drain())
        await asyncio.wait_for(drain, 10)
        record = {n.node_id: n for n in await a.cluster.nodes()}["b"]
        assert record.draining and record.free == 0

        # A node that dies without leaving (heartbeats stop) is gone after its TTL ...
        assert b.cluster._task is not None
        b.cluster._task.cancel()
        await _until(lambda: _ids(a), {"a"}, 10)
        # ... and one that stops leaves at once.
        await a.stop()
        client = aioredis.from_url(redis_url, decode_responses=True)
        assert await client.get(NODE_KEY_PREFIX + "a") is None
        assert await client.smembers(NODES_KEY) == set()
        await client.aclose()
        await b.stop()

    asyncio.run(scenario())


async def _ids(node: Node) -> set[str]:
    assert node.cluster is not None
    return {n.node_id for n in await node.cluster.nodes()}


async def _sessions_of(node: Node, node_id: str) -> int:
    assert node.cluster is not None
    return {n.node_id: n for n in await node.cluster.nodes()}[node_id].sessions


async def _until(read, expected, timeout_s: float) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while True:
        value = await read()
        if value == expected:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"still {value!r}, expected {expected!r}")
        await asyncio.sleep(0.1)


# --- slow: two `avatar serve` nodes, real clients -------------------------------------------


@dataclass
class ServeNode:
    """A running `avatar serve` and its process."""

    base: str
    proc: subprocess.Popen[bytes]
    log_path: Path


@contextlib.contextmanager
def _serve_nodes(
    data_dir: Path, logs: Path, envs: list[dict[str, str]]
) -> Iterator[list[ServeNode]]:
    """Start one `avatar serve` per env at once, wait until all are healthy, stop them."""
    logs.mkdir(parents=True, exist_ok=True)
    nodes: list[ServeNode] = []
    try:
        for env in envs:
            port = free_port()
            environ = dict(os.environ, AVATAR_DATA_DIR=str(data_dir), AVATAR_PORT=str(port))
            environ.pop("AVATAR_TOKEN", None)
            environ.update(AVATAR_LOG_LEVEL="INFO", **env)
            log_path = logs / f"node-{port}.log"
            with open(log_path, "wb") as log_file:
                proc = subprocess.Popen(
                    [sys.executable, "-m", "realtime_avatar.cli", "serve", "--port", str(port)],
                    env=environ,
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                )
            nodes.append(ServeNode(f"http://127.0.0.1:{port}", proc, log_path))
        deadline = time.monotonic() + SERVER_READY_S
        for node in nodes:
            while True:
                if node.proc.poll() is not None:
                    raise AssertionError(f"avatar serve exited: {_tail(node)}")
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(f"{node.base}/health", timeout=2).status_code == 200:
                        break
                assert time.monotonic() < deadline, f"not healthy in time: {_tail(node)}"
                time.sleep(0.3)
        yield nodes
    finally:
        for node in nodes:
            if node.proc.poll() is None:
                node.proc.kill()
            node.proc.wait(timeout=15)


def _tail(node: ServeNode) -> str:
    return node.log_path.read_text(encoding="utf-8", errors="replace")[-3000:]


def _health(base: str) -> dict:  # type: ignore[type-arg]
    return dict(httpx.get(f"{base}/health", timeout=5).json())


def _wait_for(predicate, timeout_s: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def _cluster_nodes(base: str) -> dict[str, dict]:  # type: ignore[type-arg]
    return {n["node"]: n for n in _health(base)["cluster"]["nodes"]}


@pytest.mark.slow
def test_two_nodes_one_session_each_and_a_drain(
    redis_url: str,  # noqa: F811
    data_dir: Path,
    tmp_path: Path,
) -> None:
    """Two nodes of one session each: two clients knocking on the same node both get a
    session; SIGTERM on a node with a running session: it takes no new ones (passes them
    on), the session goes on, is closed at the bound, and the node leaves Redis."""
    import redis

    from realtime_avatar.evaluate.rtc_client import AvatarCall

    # Long enough for what happens during the drain, however slow the machine (an offer
    # passed on took 11 s at a load of 12 on two cores).
    drain_s = 30.0
    common = {
        "AVATAR_REDIS_URL": redis_url,
        "AVATAR_MAX_SESSIONS": "1",
        "AVATAR_NODE_HEARTBEAT_S": "0.5",
        "AVATAR_NODE_TTL_S": "5",
        "AVATAR_DRAIN_TIMEOUT_S": str(drain_s),
        # The peer-silence watchdog must not end the drained call before the bound does.
        "AVATAR_PEER_SILENT_TIMEOUT_S": "60",
    }
    envs = [dict(common, AVATAR_NODE_ID="node-a"), dict(common, AVATAR_NODE_ID="node-b")]
    store = redis.Redis.from_url(redis_url, decode_responses=True)
    with _serve_nodes(data_dir, tmp_path / "logs", envs) as (a, b):
        _wait_for(lambda: set(_cluster_nodes(a.base)) == {"node-a", "node-b"}, 30, "both nodes")

        async def scenario() -> None:
            first = AvatarCall(a.base, [], measure_mouth=False)
            second = AvatarCall(a.base, [], measure_mouth=False)
            await first.start()
            # node-a is full now. An offer node-b refuses itself comes back with its words.
            sdp = await _offer_sdp()
            async with httpx.AsyncClient(timeout=60) as http:
                offer = {"sdp": sdp, "type": "offer"}
                refused = await http.post(
                    f"{a.base}/api/v1/rtc/offer", json={**offer, "avatar": "nobody-here"}
                )
                assert refused.status_code == 404 and "nobody-here" in refused.json()["error"]
                # A forged peer header is a client's: never passed on, so node-a is busy.
                forged = await http.post(
                    f"{a.base}/api/v1/rtc/offer",
                    json=offer,
                    headers={"X-Avatar-Forwarded-By": "node-x", "X-Avatar-Peer": "guess"},
                )
                assert forged.status_code == 503 and "busy" in forged.json()["error"]
            # A node in Redis that does not answer (and claims the most room) is skipped.
            ghost = NodeLoad("ghost", f"http://127.0.0.1:{free_port()}", 0, 50)
            store.set(NODE_KEY_PREFIX + "ghost", ghost.to_json(), ex=60)
            store.sadd(NODES_KEY, "ghost")
            await second.start()  # node-a is full: its offer went to node-b, past the ghost
            store.delete(NODE_KEY_PREFIX + "ghost")
            assert first.record.node == a.base and second.record.node == b.base
            for call in (first, second):  # media flows on both, whichever node holds it
                await _frames(call, 10, 30)
                assert await call.ping() < 10
            third = AvatarCall(a.base, [], measure_mouth=False)
            with pytest.raises(RuntimeError, match="503.*no other node has room"):
                await third.start()
            assert _health(a.base)["sessions"] == 1 and _health(b.base)["sessions"] == 1
            metrics = httpx.get(f"{a.base}/metrics", timeout=5).text
            for outcome in ("answered", "refused", "unreachable"):
                assert f'avatar_offers_forwarded_total{{outcome="{outcome}"}} 1.0' in metrics
            assert 'avatar_node_info{node="node-a"' in metrics

            # node-a frees its slot; then node-b, holding `second`, is told to stop.
            await first.close()
            await asyncio.to_thread(
                _wait_for,
                lambda: _cluster_nodes(a.base)["node-a"]["sessions"] == 0,
                30,
                "node-a's slot free again",
            )
            b.proc.send_signal(signal.SIGTERM)
            signalled = time.monotonic()
            await asyncio.to_thread(
                _wait_for,
                lambda: _cluster_nodes(a.base)["node-b"]["draining"],
                10,
                "node-b draining in Redis",
            )
            drained = httpx.get(f"{b.base}/health", timeout=5)
            assert drained.status_code == 503 and drained.json()["status"] == "draining"
            # The running session goes on while the node drains ...
            assert await second.ping() < 10
            # ... and an offer knocking on the draining node lands on node-a.
            fourth = AvatarCall(b.base, [], measure_mouth=False)
            await fourth.start()
            assert fourth.record.node == a.base
            await fourth.close()
            # ... until the bound: then node-b closes it, leaves Redis and exits.
            await asyncio.to_thread(b.proc.wait, drain_s + 60)
            ended_s = time.monotonic() - signalled
            await second.close()
            assert ended_s >= drain_s * 0.9, ended_s  # it waited for the running session
            log = _tail(b)
            assert "server stopping" in log and "left Redis" in log, log

        asyncio.run(scenario())
        assert set(_cluster_nodes(a.base)) == {"node-a"}
    store.close()


async def _offer_sdp() -> str:
    """A WebRTC offer with the microphone's audio, for offers sent by hand."""
    from aiortc import RTCPeerConnection

    pc = RTCPeerConnection()
    pc.addTransceiver("audio", direction="sendrecv")
    pc.addTransceiver("video", direction="recvonly")
    await pc.setLocalDescription(await pc.createOffer())
    sdp = str(pc.localDescription.sdp)
    await pc.close()
    return sdp


async def _frames(call, count: int, timeout_s: float) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while len(call.record.video) < count:
        assert time.monotonic() < deadline, f"only {len(call.record.video)} video frames"
        await asyncio.sleep(0.1)


@pytest.mark.slow
def test_a_drain_ends_as_soon_as_the_last_session_hangs_up(
    redis_url: str,  # noqa: F811
    data_dir: Path,
    tmp_path: Path,
) -> None:
    """SIGTERM with a session running and room for more: new offers are refused (no peer
    has room), and the node stops when the caller hangs up, long before the bound."""
    import redis

    from realtime_avatar.evaluate.rtc_client import AvatarCall

    env = {
        "AVATAR_REDIS_URL": redis_url,
        "AVATAR_NODE_ID": "solo",
        "AVATAR_MAX_SESSIONS": "2",
        "AVATAR_NODE_HEARTBEAT_S": "0.5",
        "AVATAR_DRAIN_TIMEOUT_S": "600",
    }
    store = redis.Redis.from_url(redis_url, decode_responses=True)
    with _serve_nodes(data_dir, tmp_path / "logs", [env]) as (node,):

        async def scenario() -> None:
            call = AvatarCall(node.base, [], measure_mouth=False)
            await call.start()
            await _frames(call, 5, 30)
            node.proc.send_signal(signal.SIGTERM)
            await asyncio.to_thread(
                _wait_for,
                lambda: json.loads(store.get(NODE_KEY_PREFIX + "solo") or "{}").get("draining"),
                10,
                "the node's record to say draining",
            )
            late = AvatarCall(node.base, [], measure_mouth=False)
            with pytest.raises(RuntimeError, match="503.*shutting down"):
                await late.start()
            assert await call.ping() < 10  # still served
            await call.close()
            # Hung up: the node stops now, not after the 600 s bound.
            await asyncio.to_thread(node.proc.wait, 120)

        asyncio.run(scenario())
        assert node.proc.returncode is not None
        assert store.get(NODE_KEY_PREFIX + "solo") is None
        assert "solo" not in store.smembers(NODES_KEY)
    store.close()


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("AVATAR_PUBLIC_URL", "node-2:8000", "AVATAR_PUBLIC_URL='node-2:8000' is not a node's"),
        ("AVATAR_NODE_ID", "two words", "AVATAR_NODE_ID='two words' must be"),
        ("AVATAR_NODE_TTL_S", "1", "AVATAR_NODE_TTL_S (1.0) must be longer"),
    ],
)
def test_serve_says_what_is_wrong_with_a_cluster_setting(
    variable: str,
    value: str,
    expected: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`avatar serve` stops with one clear line before it binds or loads a model."""
    from realtime_avatar import cli

    monkeypatch.setenv("AVATAR_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("AVATAR_REDIS_URL", "redis://127.0.0.1:1/0")  # never reached
    monkeypatch.setenv(variable, value)
    monkeypatch.setattr(sys, "argv", ["avatar", "serve", "--port", str(free_port())])
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with pytest.raises(SystemExit) as ended:
            cli.main()
    finally:  # main installs its own; pytest keeps its
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    err = capsys.readouterr().err
    assert ended.value.code == 2 and "Traceback" not in err
    assert expected in " ".join(err.split()), err
