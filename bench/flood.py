"""Flood: many WebRTC offers at the same instant against the session limit, loopback only.

Starts `avatar serve` on a free loopback port with AVATAR_MAX_SESSIONS=2 (its own data dir
unless AVATAR_DATA_DIR is set), prepares N real aiortc offers and posts them all at once.
Exactly `max_sessions` should get a call and the rest a clear 503. The admitted calls then
ask a question each (the quiet reference), and ask again while a second wave of N offers
hits the server (all should be refused): their fps and voice-to-first-audio latency in both
phases show whether the flood touched them. The server's event-loop lag p99 comes from
/metrics over the flood phase. Bounded: one server, 2 x N offers, about a minute.

With --churn N it instead opens N short calls one after another and reports the server's
RSS after each (do closed sessions give everything back?).

Run: .venv/bin/python bench/flood.py --offers 50 [--max-sessions 2] [--json out.json]
     .venv/bin/python bench/flood.py --churn 40 [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from realtime_avatar.benchmark.figures import BenchContext
from realtime_avatar.benchmark.live import (
    _loop_lag_buckets,
    proc_stats,
    quantile_from_buckets,
)
from realtime_avatar.evaluate.rtc_client import AvatarCall, ScriptedMic, mic_audio
from realtime_avatar.evaluate.server_proc import running_server
from realtime_avatar.events import TurnEvent
from realtime_avatar.rtc_buffers import use_low_latency_buffers

QUESTIONS = ("What is your name?", "Where do you live?")
TURN_TIMEOUT_S = 40.0


class FloodCall(AvatarCall):
    """An ``AvatarCall`` whose offer is prepared first and posted when the test says."""

    async def prepare(self) -> dict[str, Any]:
        """Build the peer connection and its offer (as ``start`` does), without posting it."""
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self._pc = pc
        self.mic = ScriptedMic(self.clips)
        pc.addTrack(self.mic)
        pc.addTransceiver("video", direction="recvonly")
        use_low_latency_buffers(pc, audio=True, video=True)
        self._channel = pc.createDataChannel("events")
        self._channel.on("message", self.on_message)
        self.connected = asyncio.Event()

        @pc.on("track")
        def on_track(track: Any) -> None:
            reader = self._read_video if track.kind == "video" else self._read_audio
            self._tasks.append(asyncio.ensure_future(reader(track)))

        @pc.on("connectionstatechange")
        def on_state() -> None:
            if pc.connectionState == "connected":
                self.record.connected_at = time.monotonic()
                self.connected.set()

        await pc.setLocalDescription(await pc.createOffer())
        return {"sdp": pc.localDescription.sdp, "type": pc.localDescription.type}

    async def finish(self, answer: dict[str, Any]) -> None:
        """Take the server's answer and wait until media flows."""
        assert self._pc is not None
        self.record.session_id = answer.get("session_id", "")
        await self._pc.setRemoteDescription(
            RTCSessionDescription(sdp=answer["sdp"], type=answer["type"])
        )
        await asyncio.wait_for(self.connected.wait(), timeout=20)


async def _wave(
    base: str, n: int, delay_s: float = 0.0
) -> tuple[list[FloodCall], Counter[int], list[str], float]:
    """Prepare ``n`` offers, post them at once; the admitted calls, codes, refusals, spread.

    With ``delay_s``, says "ready" on stdout once the offers are made and posts that long after.
    """
    calls = [FloodCall(base, [], measure_mouth=False) for _ in range(n)]
    offers = await asyncio.gather(*(c.prepare() for c in calls))
    if delay_s:
        print("ready", flush=True)
        await asyncio.sleep(delay_s)
    limits = httpx.Limits(max_connections=n + 10, max_keepalive_connections=n + 10)
    async with httpx.AsyncClient(timeout=60, limits=limits) as http:
        sent: list[float] = []

        async def post(body: dict[str, Any]) -> httpx.Response:
            sent.append(time.monotonic())
            return await http.post(f"{base}/api/v1/rtc/offer", json=body)

        responses = await asyncio.gather(*(post(o) for o in offers), return_exceptions=True)
    codes: Counter[int] = Counter()
    admitted: list[FloodCall] = []
    refusals: list[str] = []
    for call, res in zip(calls, responses, strict=True):
        if isinstance(res, BaseException):
            codes[0] += 1
            await call.close()
            continue
        codes[res.status_code] += 1
        if res.status_code == 200:
            await call.finish(res.json())
            admitted.append(call)
        else:
            refusals.append(res.json().get("error", res.text[:200]))
            await call.close()
    return admitted, codes, refusals, max(sent) - min(sent)


async def _wave_elsewhere(base: str, n: int, delay_s: float) -> tuple[asyncio.Task[Any], Any]:
    """A wave from another process, so that making its offers does not stall the measuring
    loop; returns once the offers are made (they go ``delay_s`` later) and a task with the
    wave's result."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--wave", base, "--offers", str(n), "--delay", str(delay_s),
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 120)
    if line.strip() != b"ready":
        raise RuntimeError(f"the wave process said {line!r}")

    async def result() -> dict[str, Any]:
        out, _ = await asyncio.wait_for(proc.communicate(), 120)
        return dict(json.loads(out.decode().strip().splitlines()[-1]))

    return asyncio.ensure_future(result()), proc


async def _wave_only(base: str, n: int, delay_s: float) -> None:
    """``--wave``: one wave, its codes as one JSON line; any admitted call hangs up."""
    admitted, codes, _, spread_s = await _wave(base, n, delay_s)
    for call in admitted:
        await call.close()
    print(json.dumps({"codes": dict(codes), "post_spread_ms": spread_s * 1000}), flush=True)


async def _ask_all(calls: list[FloodCall], question: np.ndarray) -> list[float]:
    """Each call asks ``question``; voice-to-first-answer-audio latency per call (ms)."""

    async def ask(call: FloodCall) -> float:
        assert call.mic is not None
        seen = len(call.record.events)
        clip = call.mic.say_now(question, lead_s=0.1)
        await call.wait_for_event(
            lambda e: isinstance(e, TurnEvent) and not e.interrupted, TURN_TIMEOUT_S, since=seen
        )
        sound = call.record.first_answer_audio(clip.speech_end_s)
        return float("nan") if sound is None else (sound - clip.speech_end_s) * 1000

    return list(await asyncio.gather(*(ask(c) for c in calls)))


def _fps_between(call: FloodCall, start: float, end: float) -> float:
    times = [t for t, _ in call.record.video if start <= t <= end]
    return (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 else 0.0


async def flood(base: str, pid: int, offers: int) -> dict[str, Any]:
    """The two phases; every figure in one dict."""
    # Spoken before any call: synthesis blocks this loop, and a silent mic ends a call.
    questions = [mic_audio(text, "en") for text in QUESTIONS]
    rss0 = proc_stats(pid)[1]
    admitted, codes, refusals, spread_s = await _wave(base, offers)
    out: dict[str, Any] = {
        "offers": offers,
        "wave1_codes": dict(codes),
        "wave1_post_spread_ms": spread_s * 1000,
        "refusal_example": refusals[0] if refusals else None,
    }
    try:
        async with httpx.AsyncClient(timeout=10) as http:
            out["health_sessions_after_wave1"] = (await http.get(f"{base}/health")).json()[
                "sessions"
            ]
        await asyncio.sleep(1.0)
        quiet_lag0 = await _loop_lag_buckets(base)
        quiet_start = time.monotonic()
        out["quiet_latency_ms"] = await _ask_all(admitted, questions[0])
        quiet_end = time.monotonic()
        out["quiet_loop_lag_p99_ms"] = (
            quantile_from_buckets(quiet_lag0, await _loop_lag_buckets(base), 0.99) * 1000
        )
        out["quiet_fps"] = [_fps_between(c, quiet_start, quiet_end) for c in admitted]

        lag0 = await _loop_lag_buckets(base)
        flood_start = time.monotonic()
        # The wave lands while the question is spoken (~1.2 s), heard and answered.
        wave, _proc = await _wave_elsewhere(base, offers, delay_s=0.8)
        out["flood_latency_ms"] = await _ask_all(admitted, questions[1])
        second = await wave
        flood_end = time.monotonic()
        lag1 = await _loop_lag_buckets(base)
        out["wave2_codes"] = second["codes"]
        out["wave2_post_spread_ms"] = second["post_spread_ms"]
        out["flood_fps"] = [_fps_between(c, flood_start, flood_end) for c in admitted]
        out["flood_loop_lag_p99_ms"] = quantile_from_buckets(lag0, lag1, 0.99) * 1000
        out["rss_mib_before"] = rss0
        out["rss_mib_after"] = proc_stats(pid)[1]
    finally:
        for call in admitted:
            await call.close()
    return out


async def churn(base: str, pid: int, n: int) -> dict[str, Any]:
    """``n`` short calls one after another (connect, 1 s, hang up): the server's RSS after each."""
    rss: list[float] = []
    async with httpx.AsyncClient(timeout=10) as http:
        for _ in range(n):
            call = AvatarCall(base, [], measure_mouth=False)
            await call.start()
            await asyncio.sleep(1.0)
            await call.close()
            deadline = time.monotonic() + 30
            while (await http.get(f"{base}/health")).json()["sessions"]:
                if time.monotonic() > deadline:
                    raise RuntimeError("a closed call still holds its slot after 30 s")
                await asyncio.sleep(0.1)
            rss.append(proc_stats(pid)[1])
    return {
        "churn_sessions": n,
        "rss_mib_after_each": [round(r, 1) for r in rss],
        "rss_mib_after_first": rss[0],
        "rss_mib_after_last": rss[-1],
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--offers", type=int, default=50, help="offers per wave (max 200)")
    parser.add_argument("--max-sessions", type=int, default=2)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--log-dir", type=Path, help="keep the server's log here")
    parser.add_argument(
        "--churn", type=int, default=0, help="instead: N short calls in a row, RSS after each"
    )
    parser.add_argument("--wave", metavar="URL", help=argparse.SUPPRESS)  # one wave at URL
    parser.add_argument("--delay", type=float, default=0.0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    offers = min(max(args.offers, 1), 200)
    if args.wave:
        asyncio.run(asyncio.wait_for(_wave_only(args.wave, offers, args.delay), 120))
        return
    data_dir = Path(os.environ.get("AVATAR_DATA_DIR") or tempfile.mkdtemp(prefix="avatar-bench-"))
    with tempfile.TemporaryDirectory(prefix="avatar-flood-") as work:
        ctx = BenchContext(data_dir, "quick", Path(work))
        ctx.default_avatar  # noqa: B018 - registered before the server starts
        env = {"AVATAR_MAX_SESSIONS": str(args.max_sessions), "AVATAR_LOG_LEVEL": "INFO"}
        if args.churn:
            env["AVATAR_OFFERS_PER_MINUTE"] = "600"  # one client opening calls in a row
        log_dir = args.log_dir or Path(work) / "logs"
        with running_server(data_dir, log_dir, **env) as server:
            run = (
                churn(server.base_url, server.pid, min(args.churn, 500))
                if args.churn
                else flood(server.base_url, server.pid, offers)
            )
            report = asyncio.run(asyncio.wait_for(run, 1800 if args.churn else 300))
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
