"""Figures for several nodes: what passing an offer to another node costs.

Starts a loopback redis-server and two real ``avatar serve`` nodes sharing it: node A
takes no session itself (``AVATAR_MAX_SESSIONS=0``, so it passes every offer on), node B
takes one. Then, alternating direct and passed-on, ``--repeat`` times each:

- ``call_ms``: an aiortc client's offer until its call is connected (POST, answer, ICE,
  DTLS), to B directly and to A (which hands the offer to B);
- ``refusal_ms``: an offer for an avatar that does not exist, answered 404 by B: to B
  directly and through A; the difference is the hop alone (A's Redis read and its POST
  to B), with no session set up.

Run: .venv/bin/python bench/cluster_offers.py [--repeat 8] [--json out.json]
(needs Debian's redis-server; ~2 minutes, most of it the two nodes loading their models)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from realtime_avatar.evaluate.rtc_client import AvatarCall
from realtime_avatar.evaluate.server_proc import free_port

READY_S = 300.0


@contextlib.contextmanager
def _redis(folder: Path) -> Iterator[str]:
    binary = shutil.which("redis-server")
    if binary is None:
        sys.exit("redis-server is not installed: apt-get install redis-server (or make deps)")
    port = free_port()
    args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", str(folder)]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        url = f"redis://127.0.0.1:{port}/0"
        deadline = time.monotonic() + 20
        while True:
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", port), timeout=1) as sock,
            ):
                sock.sendall(b"*1\r\n$4\r\nPING\r\n")
                if sock.recv(16).startswith(b"+PONG"):
                    break
            if time.monotonic() > deadline:
                sys.exit("redis-server did not answer")
            time.sleep(0.05)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


@contextlib.contextmanager
def _nodes(folder: Path, redis_url: str) -> Iterator[tuple[str, str]]:
    procs = []
    bases = []
    try:
        for node_id, max_sessions in (("a", "0"), ("b", "1")):
            port = free_port()
            env = dict(
                os.environ,
                AVATAR_PORT=str(port),
                AVATAR_REDIS_URL=redis_url,
                AVATAR_NODE_ID=node_id,
                AVATAR_MAX_SESSIONS=max_sessions,
                AVATAR_NODE_HEARTBEAT_S="0.5",
                AVATAR_OFFER_BURST="1000",  # the bench knocks often from one address
                AVATAR_OFFERS_PER_MINUTE="6000",
            )
            env.pop("AVATAR_TOKEN", None)
            log = open(folder / f"node-{node_id}.log", "wb")  # noqa: SIM115 - lives with proc
            cmd = [sys.executable, "-m", "realtime_avatar.cli", "serve", "--port", str(port)]
            procs.append(subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT))
            bases.append(f"http://127.0.0.1:{port}")
        deadline = time.monotonic() + READY_S
        for base, proc in zip(bases, procs, strict=True):
            while True:
                if proc.poll() is not None:
                    sys.exit(f"a node exited; see {folder}")
                with contextlib.suppress(httpx.HTTPError):
                    nodes = httpx.get(f"{base}/health", timeout=2).json()["cluster"]["nodes"]
                    if len(nodes) == 2:
                        break
                if time.monotonic() > deadline:
                    sys.exit("the nodes did not come up")
                time.sleep(0.5)
        yield bases[0], bases[1]
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(60)


async def _call_ms(base: str, b: str) -> float:
    call = AvatarCall(base, [], measure_mouth=False)
    started = time.perf_counter()
    await call.start()
    elapsed = (time.perf_counter() - started) * 1000
    assert call.record.node == b, call.record.node
    await call.close()
    # B's one slot is free again before the next call.
    async with httpx.AsyncClient() as http:
        for _ in range(200):
            if (await http.get(f"{b}/health")).json()["sessions"] == 0:
                break
            await asyncio.sleep(0.05)
    return elapsed


async def _refusal_ms(base: str, sdp: str) -> float:
    body = {"sdp": sdp, "type": "offer", "avatar": "nobody-here"}
    async with httpx.AsyncClient(timeout=30) as http:
        started = time.perf_counter()
        res = await http.post(f"{base}/api/v1/rtc/offer", json=body)
        elapsed = (time.perf_counter() - started) * 1000
    assert res.status_code == 404, (res.status_code, res.text)
    return elapsed


async def _offer_sdp() -> str:
    from aiortc import RTCPeerConnection

    pc = RTCPeerConnection()
    pc.addTransceiver("audio", direction="sendrecv")
    pc.addTransceiver("video", direction="recvonly")
    await pc.setLocalDescription(await pc.createOffer())
    sdp = str(pc.localDescription.sdp)
    await pc.close()
    return sdp


def _summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "p50": round(statistics.median(ordered), 1),
        "min": round(ordered[0], 1),
        "max": round(ordered[-1], 1),
    }


async def _measure(a: str, b: str, repeat: int) -> dict[str, object]:
    sdp = await _offer_sdp()
    calls: dict[str, list[float]] = {"direct": [], "via_full_node": []}
    refusals: dict[str, list[float]] = {"direct": [], "via_full_node": []}
    await _call_ms(b, b)  # warm both paths once, unrecorded
    await _call_ms(a, b)
    for _ in range(repeat):
        calls["direct"].append(await _call_ms(b, b))
        calls["via_full_node"].append(await _call_ms(a, b))
        refusals["direct"].append(await _refusal_ms(b, sdp))
        refusals["via_full_node"].append(await _refusal_ms(a, sdp))
    return {
        "repeat": repeat,
        "call_ms": {k: _summary(v) for k, v in calls.items()},
        "refusal_ms": {k: _summary(v) for k, v in refusals.items()},
        "hop_ms_p50": round(
            statistics.median(refusals["via_full_node"]) - statistics.median(refusals["direct"]),
            1,
        ),
    }


def main() -> None:
    """Run the measurement and print (and optionally save) the figures as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=8)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="cluster-bench-") as tmp:
        folder = Path(tmp)
        # One data folder for both nodes, the default avatar made once before they start.
        os.environ.setdefault("AVATAR_DATA_DIR", str(folder / "data"))
        from realtime_avatar.avatars.registry import ensure_default_avatar
        from realtime_avatar.settings import get_settings

        ensure_default_avatar(get_settings())
        with _redis(folder) as redis_url, _nodes(folder, redis_url) as (a, b):
            result = asyncio.run(_measure(a, b, args.repeat))
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
