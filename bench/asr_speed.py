"""Figures for speech recognition: how soon the final text is ready after the user stops.

For a ~3 s English utterance (Piper) fed in 20 ms chunks, with 0.3 s of pre-roll and the
VAD's trailing silence (``--tail-ms``, default: the ``vad_min_silence_ms`` setting's default):

- ``finish_ms``: time of the ``finish()`` call itself, after feeding with partials;
- ``final_after_vad_end_ms``: fed at real-time pace, from the moment the last chunk (the
  VAD "end") was due until the final text was ready: what the user waits for (includes a
  decode still running in ``feed`` when the end arrives);
- ``one_shot_decode_ms`` / ``rtf``: one decode of the whole utterance, and that divided by
  the audio's length; for Whisper also with the stock 30 s encoder context;
- ``partial_work_share``: decoding time spent in ``feed`` per second of audio;
- ``wer``: word error rate of the final.

Run: .venv/bin/python bench/asr_speed.py [--repeat 3] [--tail-ms MS]
(the multilingual model is joined into a temporary data dir on first use, ~1 s)
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from realtime_avatar.evaluate.intelligibility import error_rate
from realtime_avatar.settings import Settings

TEXT = "Please send me the weather forecast for tomorrow morning."
CHUNK = 320
RATE = 16_000


def _words(text: str) -> list[str]:
    return re.sub(r"[^\w\s']", " ", text.lower()).split()


def _wer(reference: str, hypothesis: str) -> float:
    return error_rate(reference, hypothesis, "en").rate


def _utterance_audio(tail_ms: int) -> tuple[np.ndarray, float]:
    from realtime_avatar.media.audio import resample
    from realtime_avatar.tts.registry import get_synthesizer

    speech = get_synthesizer("en").synthesize(TEXT, "en")
    pcm = resample(speech.pcm, speech.sample_rate_hz, RATE)
    padded = np.concatenate(
        [np.zeros(int(0.3 * RATE), np.float32), pcm, np.zeros(tail_ms * RATE // 1000, np.float32)]
    )
    return padded, len(pcm) / RATE


def _stream(recognizer, pcm: np.ndarray, realtime: bool) -> dict:  # type: ignore[no-untyped-def]
    """Feed in 20 ms chunks (optionally paced in real time), then finish."""
    utterance = recognizer.start(turn_id=1, language="en")
    partials = 0
    feed_s = 0.0
    started = time.perf_counter()
    for i in range(0, len(pcm), CHUNK):
        if realtime:
            due = started + (i + CHUNK) / RATE  # when this chunk has been fully spoken
            delay = due - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
        t = time.perf_counter()
        if utterance.feed(pcm[i : i + CHUNK]) is not None:
            partials += 1
        feed_s += time.perf_counter() - t
    end_due = started + len(pcm) / RATE  # the VAD "end" event, at real-time pace
    t = time.perf_counter()
    final = utterance.finish()
    done = time.perf_counter()
    return {
        "text": final.text,
        "partials": partials,
        "feed_s": feed_s,
        "finish_s": done - t,
        "after_end_s": done - end_due,
        "reused": bool(getattr(utterance, "final_reused_decode", False)),
    }


def _figures(name: str, make, pcm: np.ndarray, speech_s: float, repeat: int) -> dict:  # type: ignore[no-untyped-def]
    t = time.perf_counter()
    recognizer = make()
    load_s = time.perf_counter() - t
    if hasattr(recognizer, "warm_up"):
        recognizer.warm_up()
    else:
        recognizer.transcribe(pcm[: RATE // 2])
    audio_s = len(pcm) / RATE

    one_shot = []
    for _ in range(repeat):
        t = time.perf_counter()
        recognizer.transcribe(pcm)
        one_shot.append(time.perf_counter() - t)
    fast = [_stream(recognizer, pcm, realtime=False) for _ in range(repeat)]
    paced = [_stream(recognizer, pcm, realtime=True) for _ in range(repeat)]
    result = {
        "load_s": round(load_s, 2),
        "audio_s": round(audio_s, 2),
        "speech_s": round(speech_s, 2),
        "one_shot_decode_ms": round(1000 * statistics.median(one_shot)),
        "rtf": round(statistics.median(one_shot) / audio_s, 3),
        "partials": fast[0]["partials"],
        "partial_work_share": round(statistics.median(r["feed_s"] for r in fast) / audio_s, 3),
        "finish_ms": round(1000 * statistics.median(r["finish_s"] for r in fast), 1),
        "final_reused_settled_decode": all(r["reused"] for r in fast),
        "final_after_vad_end_ms": round(1000 * statistics.median(r["after_end_s"] for r in paced)),
        "wer": round(_wer(TEXT, fast[0]["text"]), 3),
        "text": fast[0]["text"],
    }
    if hasattr(recognizer, "short_context"):
        # The same model without the latency measures, for comparison.
        from realtime_avatar.asr.whisper import WhisperRecognizer

        stock = WhisperRecognizer(
            recognizer.model_dir, short_context=False, reuse_settled_decode=False
        )
        full = []
        for _ in range(repeat):
            t = time.perf_counter()
            stock.transcribe(pcm)
            full.append(time.perf_counter() - t)
        result["one_shot_decode_30s_context_ms"] = round(1000 * statistics.median(full))
        no_reuse = WhisperRecognizer(recognizer.model_dir, reuse_settled_decode=False)
        runs = [_stream(no_reuse, pcm, realtime=False) for _ in range(repeat)]
        result["finish_ms_without_reuse"] = round(
            1000 * statistics.median(r["finish_s"] for r in runs)
        )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--tail-ms",
        type=int,
        default=int(Settings.model_fields["vad_min_silence_ms"].default),
        help="silence after the speech (default: the VAD's min_silence_ms)",
    )
    parser.add_argument(
        "--only", nargs="*", default=["whisper-tiny-en", "whisper-base", "pocketsphinx"]
    )
    args = parser.parse_args()

    from realtime_avatar.asr.registry import get_recognizer
    from realtime_avatar.settings import get_settings

    data_dir = os.environ.get("AVATAR_DATA_DIR") or tempfile.mkdtemp(prefix="asr-bench-")
    settings = get_settings(data_dir=Path(data_dir))
    pcm, speech_s = _utterance_audio(args.tail_ms)
    result: dict = {"cpu_count": os.cpu_count(), "tail_ms": args.tail_ms, "text": TEXT}
    for name in args.only:
        result[name] = _figures(
            name, lambda name=name: get_recognizer(name, settings), pcm, speech_s, args.repeat
        )
    print(json.dumps(result, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
