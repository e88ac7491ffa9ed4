"""Call the example pipecat bot with the project's aiortc client, and measure it.

``PipecatCall`` is the project's ``AvatarCall`` (scripted microphone, per-frame mouth
opening, audio levels) connected through SmallWebRTC's signalling (``POST /api/offer``,
answered with ``pc_id``) instead of ``avatar serve``'s. Run as a script it gives the
figures in docs/BENCHMARKS.md ("pipecat face"): it starts the bot in a subprocess, talks
to it for ``--seconds``, and prints the bot process's CPU and the latency from the end of
each question to the first audible answer audio:

    .venv/bin/python examples/pipecat_call.py --seconds 30            # with the face
    .venv/bin/python examples/pipecat_call.py --seconds 30 --no-face  # voice only
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import httpx
import numpy as np
from aiortc import MediaStreamTrack, RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from realtime_avatar.evaluate.rtc_client import AvatarCall, Clip, ScriptedMic, mic_audio
from realtime_avatar.rtc_buffers import use_low_latency_buffers

BOT = Path(__file__).with_name("pipecat_bot.py")
QUESTIONS = [
    "What is your name?",
    "What is the weather like today?",
    "Tell me something about yourself.",
    "Hello, can you hear me?",
]


class PipecatCall(AvatarCall):
    """An ``AvatarCall`` to a pipecat SmallWebRTC bot: same recording, pipecat's signalling."""

    async def start(self) -> None:
        """Offer audio (the scripted mic) and a receive-only video; wait until connected."""
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self._pc = pc
        self.mic = ScriptedMic(self.clips)
        pc.addTrack(self.mic)
        pc.addTransceiver("video", direction="recvonly")
        if self.low_latency:
            use_low_latency_buffers(pc, audio=True, video=True)

        @pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            reader = self._read_video if track.kind == "video" else self._read_audio
            self._tasks.append(asyncio.ensure_future(reader(track)))

        connected = asyncio.Event()

        @pc.on("connectionstatechange")
        def on_state() -> None:
            if pc.connectionState == "connected":
                self.record.connected_at = time.monotonic()
                connected.set()

        await pc.setLocalDescription(await pc.createOffer())
        body = {"sdp": pc.localDescription.sdp, "type": pc.localDescription.type}
        async with httpx.AsyncClient(timeout=60) as http:
            res = await http.post(f"{self.base_url}/api/offer", json=body)
        if res.status_code != 200:
            await pc.close()
            raise RuntimeError(f"offer refused: {res.status_code} {res.text}")
        answer = res.json()
        self.record.session_id = answer.get("pc_id", "")
        await pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type=answer["type"]))
        await asyncio.wait_for(connected.wait(), timeout=30)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Bot:
    """The example bot running in a subprocess."""

    url: str
    pid: int
    log_path: Path

    def logged(self, needle: str) -> list[float]:
        """When the bot logged lines containing ``needle``, as ``time.monotonic()`` values."""
        to_monotonic = time.monotonic() - time.time()
        times = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            if needle in line and line[:4].isdigit():
                wall = datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S.%f").timestamp()
                times.append(wall + to_monotonic)
        return times


@contextlib.contextmanager
def running_bot(*, face: bool = True, timeout_s: float = 120.0) -> Iterator[Bot]:
    """The example bot in a subprocess on a free loopback port, its log in $TMPDIR."""
    port = free_port()
    args = [sys.executable, str(BOT), "--port", str(port)] + ([] if face else ["--no-face"])
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "ORT_DISABLE_TELEMETRY": "1"}
    log = open(Path(os.environ.get("TMPDIR", "/tmp")) / f"pipecat_bot_{port}.log", "w")  # noqa: SIM115
    proc = subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"the bot exited with {proc.returncode}; see {log.name}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url, timeout=1).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise TimeoutError(f"the bot did not answer on {url}; see {log.name}")
            time.sleep(0.3)
        yield Bot(url, proc.pid, Path(log.name))
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def wait_until_ready(call: AvatarCall, *, face: bool, timeout_s: float = 60.0) -> None:
    """Until the bot's pipeline runs: its first video frame (face), or a moment (voice only)."""
    if not face:
        await asyncio.sleep(2.0)  # its models loaded before the answer to the offer
        return
    deadline = time.monotonic() + timeout_s
    while not call.record.video:
        if time.monotonic() > deadline:
            raise TimeoutError(f"no video from the bot within {timeout_s} s")
        await asyncio.sleep(0.05)
    await asyncio.sleep(1.0)


async def measure(url: str, pid: int, seconds: float, *, face: bool) -> dict[str, float]:
    """Talk to the bot for ``seconds``: its CPU share and end-of-question -> answer latency."""
    every_s = 10.0  # an answer (up to ~4 s) and its latency fit before the next question
    speech = [mic_audio(q) for q in QUESTIONS]
    call = PipecatCall(url, [], measure_mouth=face)
    await call.start()
    await wait_until_ready(call, face=face)
    assert call.mic is not None
    cpu0, t0 = cpu_seconds(pid), time.monotonic()
    clips: list[Clip] = []
    while time.monotonic() - t0 < seconds:
        clips.append(call.mic.say_now(speech[len(clips) % len(speech)]))
        await asyncio.sleep(every_s)
    cpu1, t1 = cpu_seconds(pid), time.monotonic()
    await call.close()
    latencies = []
    for clip in clips:
        if clip.speech_end_s:
            answer = call.record.first_answer_audio(clip.speech_end_s)
            if answer is not None and answer - clip.speech_end_s < every_s - 1:
                latencies.append(answer - clip.speech_end_s)
    return {
        "cpu_percent_of_a_core": 100 * (cpu1 - cpu0) / (t1 - t0),
        "answers": len(latencies),
        "questions": len(clips),
        "latency_median_ms": 1000 * float(np.median(latencies)) if latencies else float("nan"),
        "latency_max_ms": 1000 * float(np.max(latencies)) if latencies else float("nan"),
        "fps": call.record.fps(),
    }


async def service_delay(repeats: int = 10) -> list[float]:
    """Seconds from a TTS chunk entering ``AvatarVideoService`` (default avatar, mesh2d) to
    its first re-timed audio leaving it: the latency the face itself adds, before transport."""
    from pipecat.frames.frames import Frame, TTSAudioRawFrame
    from pipecat.pipeline.pipeline import Pipeline
    from pipecat.pipeline.task import PipelineTask
    from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
    from pipecat.workers.runner import WorkerRunner

    from realtime_avatar.integrations.pipecat import AvatarVideoService

    first_out: list[float] = []

    class Sink(FrameProcessor):
        async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
            await super().process_frame(frame, direction)
            if isinstance(frame, TTSAudioRawFrame) and len(first_out) < len(sent):
                first_out.append(time.monotonic())
            await self.push_frame(frame, direction)

    rate = 22_050
    t = np.arange(int(1.0 * rate)) / rate
    tone = (0.4 * np.sin(2 * np.pi * 180 * t) * 32767).astype(np.int16)
    task = PipelineTask(Pipeline([AvatarVideoService(), Sink()]), idle_timeout_secs=None)
    runner = WorkerRunner()
    await runner.add_workers(task)
    run = asyncio.create_task(runner.run())
    await asyncio.sleep(10.0)  # the avatar and its renderer load at StartFrame
    sent: list[float] = []
    for _ in range(repeats):
        sent.append(time.monotonic())
        for i in range(0, len(tone), 2205):  # 100 ms chunks, as a TTS streams them
            await task.queue_frame(TTSAudioRawFrame(tone[i : i + 2205].tobytes(), rate, 1))
        await asyncio.sleep(2.0)  # the second of speech plays out, the face falls idle
    await task.cancel()
    await run
    return [b - a for a, b in zip(sent, first_out, strict=False)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--no-face", action="store_true")
    parser.add_argument(
        "--service-delay", action="store_true", help="only the delay the face adds, in-process"
    )
    args = parser.parse_args()
    if args.service_delay:
        delays = 1000 * np.array(asyncio.run(service_delay()))
        print(f"service delay ms: median {np.median(delays):.0f} max {delays.max():.0f}")
        return
    face = not args.no_face
    with running_bot(face=face) as bot:
        figures = asyncio.run(measure(bot.url, bot.pid, args.seconds, face=face))
    print(("face" if face else "no face"), " ".join(f"{k}={v:.1f}" for k, v in figures.items()))


if __name__ == "__main__":
    main()
