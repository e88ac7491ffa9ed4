"""Which English voice for the default avatar? Piper joe and hibari heart, with and without
WORLD matching toward the avatar's voice sample, through the product's speech stage.

Each candidate is ``engine.voice.AvatarVoice`` for the default avatar with
``Settings(tts_english=..., voice_matcher=...)``, so what is measured is what a call plays:

- speaker similarity: resemblyzer GE2E cosine of each test sentence to the avatar's
  reference recording (``evaluate/speaker.py``), mean over the sentences;
- ASR round trip: Whisper (the evaluator's judge, ``evaluate/intelligibility.py``) word
  error rate over the test sentences;
- first audio: ``AvatarVoice.speak`` of the first chunker piece of 20 short replies, as a
  live turn makes it (synthesis + trims + matching), p50 and p95 over the replies;
- RTF: ``speak`` time over audio length on the whole test sentences;
- median pitch of the voiced frames (WORLD dio + stonemask), beside the reference's.

Times are the fastest of ``--repeats`` runs of each piece: on a machine shared with other
work that is the cost of the work itself, not of waiting for a core.

Usage:

    .venv/bin/python bench/hibari_vs_piper.py [--repeats 3] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

import numpy as np  # noqa: E402

from realtime_avatar.avatars.registry import load_avatar  # noqa: E402
from realtime_avatar.constants import ASR_RATE_HZ  # noqa: E402
from realtime_avatar.engine.voice import AvatarVoice, as_spoken, reply_chunker  # noqa: E402
from realtime_avatar.evaluate.intelligibility import AsrJudge, error_rate  # noqa: E402
from realtime_avatar.evaluate.speaker import SpeakerJudge  # noqa: E402
from realtime_avatar.media.audio import decode_audio, resample  # noqa: E402
from realtime_avatar.settings import Settings  # noqa: E402
from realtime_avatar.voice.profile import live_f0  # noqa: E402

log = logging.getLogger("hibari_vs_piper")

# (label, synthesizer, voice matcher)
CANDIDATES = (
    ("piper+world", "piper", "world"),
    ("hibari+world", "hibari", "world"),
    ("hibari raw", "hibari", "identity"),
    ("piper raw", "piper", "identity"),
)
TEST_SENTENCES = (
    "The quick brown fox jumps over the lazy dog while the children watch from the window.",
    "Tomorrow morning we will travel to the mountains and look for a quiet place to camp.",
    "She opened the old wooden box and found a letter that her grandmother had written.",
    "If you want to learn a new language, practice a little every single day.",
    "The train was late again, so we waited on the platform and talked about the weather.",
    "I think the best part of my job is meeting people from all over the world.",
)
# Replies as the dialogue writes them; only their first chunker piece is timed.
REPLIES = (
    "Sure, I can help with that.",
    "Hello there! It is nice to meet you.",
    "That's a great question, and the answer is simple.",
    "Well, it depends on the weather.",
    "Yes, the library opens at nine tomorrow.",
    "Of course. Let me think about it for a moment.",
    "I love reading science fiction, especially old novels.",
    "Good morning! How did you sleep?",
    "No problem at all.",
    "Right, so the first step is to boil the water.",
    "Absolutely, we can meet on Friday.",
    "Hmm, I am not sure about that one.",
    "My favorite book is about a lighthouse keeper.",
    "Thanks for asking, I am doing well today.",
    "The museum is about ten minutes from the river.",
    "Okay, here is what I would do.",
    "It takes most people a few months to learn the guitar.",
    "Coffee first, then water, if you ask me.",
    "Japan is beautiful in the spring.",
    "Great idea! Let's plan it together.",
)


@dataclass
class Row:
    label: str
    similarity: float
    wer: float
    first_audio_p50_ms: float
    first_audio_p95_ms: float
    rtf: float
    median_f0_hz: float


def first_piece(reply: str) -> tuple[str, bool]:
    """The first piece a streaming reply speaks, worded as the live session words it."""
    chunker = reply_chunker()
    pieces = chunker.push(reply)
    more = bool(pieces)
    return as_spoken((pieces or chunker.flush())[0], more), more


def median_f0(pcm: np.ndarray, rate_hz: int) -> float:
    f0 = live_f0(pcm.astype(np.float64), rate_hz)
    voiced = f0[f0 > 0]
    return float(np.median(voiced)) if voiced.size else 0.0


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def fastest_ms(repeats: int, run: Callable[[], object]) -> float:
    """The fastest of ``repeats`` runs of ``run``, in milliseconds."""
    spent = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        spent.append((time.perf_counter() - start) * 1000)
    return min(spent)


def measure(
    label: str,
    voice: AvatarVoice,
    speaker: SpeakerJudge,
    reference: np.ndarray,
    asr: AsrJudge,
    repeats: int,
) -> Row:
    voice.warm_up("en")  # loads the model, measures the synthesizer's voice once (cached)
    pieces = [first_piece(reply) for reply in REPLIES]
    voice.speak(pieces[0][0], "en", first=True, more=pieces[0][1])
    first_ms = [
        fastest_ms(repeats, partial(voice.speak, text, "en", turn_id=1, first=True, more=more))
        for text, more in pieces
    ]

    similarities, errors, words, pitches = [], 0, 0, []
    spent_s = audio_s = 0.0
    for sentence in TEST_SENTENCES:
        speech = voice.speak(sentence, "en")
        spent_s += fastest_ms(repeats, partial(voice.speak, sentence, "en")) / 1000
        audio_s += speech.duration_s
        embedding = speaker.embed(speech.pcm, speech.sample_rate_hz)
        if embedding is not None:
            similarities.append(speaker.similarity(embedding, reference))
        heard, _model = asr.transcribe(
            resample(speech.pcm, speech.sample_rate_hz, ASR_RATE_HZ), "en"
        )
        rate = error_rate(sentence, heard, "en")
        errors += rate.errors
        words += rate.reference_length
        pitches.append(median_f0(speech.pcm, speech.sample_rate_hz))
        log.info("%s: heard %r", label, heard)
    return Row(
        label=label,
        similarity=statistics.fmean(similarities),
        wer=errors / max(words, 1),
        first_audio_p50_ms=percentile(first_ms, 50),
        first_audio_p95_ms=percentile(first_ms, 95),
        rtf=spent_s / audio_s,
        median_f0_hz=float(np.median(pitches)),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="runs of each timed piece")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    import torch

    torch.set_num_threads(1)

    base = Settings()
    avatar = load_avatar("default", settings=base)
    speaker = SpeakerJudge()
    reference_pcm = decode_audio(avatar.voice_path, ASR_RATE_HZ)
    reference = speaker.embed(reference_pcm, ASR_RATE_HZ)
    assert reference is not None, "the avatar's voice sample holds too little speech"
    reference_f0 = median_f0(reference_pcm, ASR_RATE_HZ)
    asr = AsrJudge(base, cpu_threads=1)

    rows = []
    for label, synthesizer, matcher in CANDIDATES:
        settings = Settings(tts_english=synthesizer, voice_matcher=matcher)
        voice = AvatarVoice.for_avatar(avatar, settings)
        rows.append(measure(label, voice, speaker, reference, asr, max(1, args.repeats)))

    judge = asr.model_for("en")
    print()
    print(f"Default avatar; reference median F0 {reference_f0:.0f} Hz; ASR judge Whisper {judge}")
    print(
        f"{'candidate':<14} {'similarity':>10} {'WER':>6} {'first p50':>10} "
        f"{'first p95':>10} {'RTF':>7} {'median F0':>10}"
    )
    for row in rows:
        print(
            f"{row.label:<14} {row.similarity:>10.3f} {row.wer:>6.1%} "
            f"{row.first_audio_p50_ms:>8.1f}ms {row.first_audio_p95_ms:>8.1f}ms "
            f"{row.rtf:>7.3f} {row.median_f0_hz:>8.0f}Hz"
        )
    if args.json:
        payload = {
            "reference_median_f0_hz": reference_f0,
            "asr_judge": judge,
            "rows": [asdict(row) for row in rows],
        }
        args.json.write_text(json.dumps(payload, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
