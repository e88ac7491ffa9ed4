"""Voice-to-first-frame latency, fps, CPU and RSS of `avatar serve`, with a real aiortc client.

Starts the server on a free loopback port (its own data dir unless AVATAR_DATA_DIR is
set), asks it N spoken questions (Piper) one after another in one call, and reports:
- voice-to-first-frame: end of the question's speech in the mic audio -> arrival at the
  client of the first video frame whose mouth opens (conservative: the answer's first
  frame may be a closed-lip consonant), and -> first audible answer audio;
- the server's own stage marks per turn (ASR final, first token, first audio, first frame);
- delivered fps; the server's CPU (per cent of one core) and RSS during the call.

Run: .venv/bin/python bench/live_latency.py --turns 20 [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from realtime_avatar.evaluate.rtc_client import MIC_RATE_HZ, AvatarCall
from realtime_avatar.evaluate.server_proc import running_server
from realtime_avatar.media.audio import resample
from realtime_avatar.tts.registry import get_synthesizer

QUESTIONS = [
    "What is your name?",
    "Where do you run?",
    "Do you speak Spanish?",
    "How are you today?",
    "What can you do?",
    "Who made you?",
    "Can I make my own avatar?",
    "Thank you very much.",
    "Tell me a joke.",
    "What languages do you speak?",
]


def _speech(text: str) -> np.ndarray:
    speech = get_synthesizer("en").synthesize(text, "en")
    return resample(speech.pcm, speech.sample_rate_hz, MIC_RATE_HZ) * 0.8


def _proc_stats(pid: int) -> tuple[float, float]:
    """CPU seconds used and RSS in MiB of a process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    cpu_s = (int(fields[11]) + int(fields[12])) / ticks
    rss_mib = int(fields[21]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    return cpu_s, rss_mib


def _server_pid(port: int) -> int | None:
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"serve" in cmd and str(port).encode() in cmd:
                return int(pid)
    return None


async def _run(base: str, turns: int) -> dict:
    call = AvatarCall(base, [])
    await call.start()
    port = int(base.rsplit(":", 1)[1])
    pid = _server_pid(port)
    cpu0, _ = _proc_stats(pid) if pid else (0.0, 0.0)
    t0 = time.monotonic()
    rss_peak = 0.0
    results = []
    await asyncio.sleep(1.5)
    for i in range(turns):
        question = QUESTIONS[i % len(QUESTIONS)]
        assert call.mic is not None
        seen = len(call.record.events)
        clip = call.mic.say_now(_speech(question), lead_s=0.1)
        try:
            turn = await call.wait_for_event(
                lambda e: e.get("type") == "turn" and not e.get("interrupted"), 40, since=seen
            )
        except TimeoutError:
            results.append({"question": question, "error": "no answer"})
            continue
        await asyncio.sleep(0.8)
        if pid:
            rss_peak = max(rss_peak, _proc_stats(pid)[1])
        end = clip.speech_end_s
        frame = call.record.first_answer_frame(end)
        sound = call.record.first_answer_audio(end)
        results.append(
            {
                "question": question,
                "voice_to_first_frame_ms": round((frame - end) * 1000, 1) if frame else None,
                "voice_to_first_audio_ms": round((sound - end) * 1000, 1) if sound else None,
                "server": {k: v for k, v in turn.items() if k.endswith("_ms")},
                # Same machine, same monotonic clock: where the time goes outside the server.
                "mic_path_ms": round((turn["speech_end_mono"] - end) * 1000, 1),
                "output_path_ms": round((sound - turn["first_frame_mono"]) * 1000, 1)
                if sound
                else None,
            }
        )
    elapsed = time.monotonic() - t0
    cpu1, rss = _proc_stats(pid) if pid else (0.0, 0.0)
    await call.close()
    return {
        "turns": results,
        "fps": round(call.record.fps(since_s=1.0), 2),
        "server_cpu_percent_of_one_core": round(100 * (cpu1 - cpu0) / elapsed, 1),
        "server_rss_mib": round(max(rss, rss_peak), 1),
    }


def _summary(values: list[float]) -> dict:
    if not values:
        return {}
    arr = np.array(values)
    return {
        "n": len(values),
        "min": round(float(arr.min()), 1),
        "p50": round(float(np.percentile(arr, 50)), 1),
        "p95": round(float(np.percentile(arr, 95)), 1),
        "max": round(float(arr.max()), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--turns", type=int, default=20)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    data_dir = Path(os.environ.get("AVATAR_DATA_DIR") or tempfile.mkdtemp(prefix="avatar-bench-"))
    with running_server(data_dir, data_dir) as server:
        report = asyncio.run(_run(server.base_url, args.turns))
    frames = [
        t["voice_to_first_frame_ms"] for t in report["turns"] if t.get("voice_to_first_frame_ms")
    ]
    audio = [
        t["voice_to_first_audio_ms"] for t in report["turns"] if t.get("voice_to_first_audio_ms")
    ]
    report["voice_to_first_frame_ms"] = _summary(frames)
    report["voice_to_first_audio_ms"] = _summary(audio)
    report["mic_path_ms"] = _summary(
        [t["mic_path_ms"] for t in report["turns"] if "mic_path_ms" in t]
    )
    report["output_path_ms"] = _summary(
        [t["output_path_ms"] for t in report["turns"] if t.get("output_path_ms") is not None]
    )
    for stage in ("asr_final_ms", "first_token_ms", "first_audio_ms", "first_frame_ms"):
        report[f"server_{stage}"] = _summary(
            [t["server"][stage] for t in report["turns"] if t.get("server", {}).get(stage)]
        )
    print(json.dumps({k: v for k, v in report.items() if k != "turns"}, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
