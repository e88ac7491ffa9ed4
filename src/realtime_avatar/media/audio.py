"""Audio decoding, resampling, validation and the int16 conversions used at the edges."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import soxr

from ..errors import InvalidAudioError

MAX_VOICE_S = 120.0
SILENCE_RMS_DBFS = -50.0
CLIP_LEVEL = 0.999
MAX_CLIPPED_FRACTION = 0.01


def decode_audio(path: Path, rate_hz: int, max_s: float = MAX_VOICE_S) -> np.ndarray:
    """Decode any format FFmpeg reads (WAV, MP3, M4A, OGG, FLAC…) to mono float32 at ``rate_hz``."""
    path = Path(path)
    if not path.is_file():
        raise InvalidAudioError(f"voice file not found: {path}")
    blocks: list[np.ndarray] = []
    total = 0
    limit = int(max_s * rate_hz)
    try:
        with av.open(str(path), mode="r") as container:
            if not container.streams.audio:
                raise InvalidAudioError(
                    f"{path.name} has no audio stream; give a recording of your voice "
                    "(WAV, MP3, M4A, OGG or FLAC)"
                )
            stream = container.streams.audio[0]
            resampler = av.AudioResampler(format="flt", layout="mono", rate=rate_hz)
            for packet in container.demux(stream):
                for frame in packet.decode():
                    for out in resampler.resample(frame):
                        block = out.to_ndarray().reshape(-1).astype(np.float32, copy=False)
                        _check_finite(block, path)
                        blocks.append(block)
                        total += len(block)
                # Decoding stops once enough is read: a long file costs no more memory or
                # time than ``max_s`` of it.
                if total >= limit:
                    break
            for out in resampler.resample(None):
                block = out.to_ndarray().reshape(-1).astype(np.float32, copy=False)
                _check_finite(block, path)
                blocks.append(block)
    except InvalidAudioError:
        raise
    except (av.error.FFmpegError, ValueError, OSError) as exc:
        raise InvalidAudioError(
            f"cannot decode {path.name} as audio ({exc.__class__.__name__}); "
            "give a WAV, MP3, M4A, OGG or FLAC recording"
        ) from None
    if not blocks:
        raise InvalidAudioError(
            f"{path.name} holds no audio samples; record at least 3 s of speech"
        )
    return np.concatenate(blocks)[:limit]


def _check_finite(block: np.ndarray, path: Path) -> None:
    """Refuse NaN or infinite samples (a damaged float WAV) with words, not numbers."""
    if not np.isfinite(block).all():
        raise InvalidAudioError(
            f"{path.name} holds invalid samples (NaN or infinity), so it is damaged; "
            "export the recording again, e.g. as 16-bit PCM WAV"
        )


def resample(pcm: np.ndarray, from_hz: int, to_hz: int) -> np.ndarray:
    """High-quality resampling of mono float32 PCM."""
    if from_hz == to_hz:
        return pcm.astype(np.float32, copy=False)
    return soxr.resample(pcm.astype(np.float32, copy=False), from_hz, to_hz).astype(np.float32)


def rms_dbfs(pcm: np.ndarray) -> float:
    """Root-mean-square level in dB relative to full scale."""
    rms = float(np.sqrt(np.mean(np.square(pcm, dtype=np.float64)))) if len(pcm) else 0.0
    return 20.0 * np.log10(max(rms, 1e-10))


@dataclass(frozen=True)
class VoiceCheck:
    """What validation measured on a voice sample."""

    duration_s: float
    speech_s: float
    level_dbfs: float
    clipped_fraction: float


def speech_frames(pcm: np.ndarray, rate_hz: int, frame_ms: int = 30) -> np.ndarray:
    """Boolean per frame: energy well above the recording's noise floor (speech present)."""
    n = rate_hz * frame_ms // 1000
    count = len(pcm) // n
    if count == 0:
        return np.zeros(0, dtype=bool)
    frames = pcm[: count * n].reshape(count, n).astype(np.float64)
    db = 10.0 * np.log10(np.mean(frames**2, axis=1) + 1e-12)
    floor = np.percentile(db, 10)
    return db > max(floor + 12.0, SILENCE_RMS_DBFS)


def validate_voice(pcm: np.ndarray, rate_hz: int, min_s: float) -> VoiceCheck:
    """Refuse silent, clipped or too-short voice samples with a message that says what to do."""
    duration_s = len(pcm) / rate_hz
    level = rms_dbfs(pcm)
    if level < SILENCE_RMS_DBFS:
        raise InvalidAudioError(
            f"the voice sample is silent (level {level:.0f} dBFS); record yourself speaking "
            "for about 10 seconds"
        )
    clipped = float(np.mean(np.abs(pcm) >= CLIP_LEVEL))
    if clipped > MAX_CLIPPED_FRACTION:
        raise InvalidAudioError(
            f"the voice sample is clipped ({clipped:.1%} of samples at full scale); "
            "record again further from the microphone or with lower input gain"
        )
    speech_s = float(np.sum(speech_frames(pcm, rate_hz))) * 0.030
    if duration_s < min_s or speech_s < min_s * 0.6:
        raise InvalidAudioError(
            f"the voice sample holds {speech_s:.1f} s of speech in {duration_s:.1f} s; "
            f"give at least {min_s:.0f} s of speech (about 10 s is best)"
        )
    return VoiceCheck(duration_s, speech_s, level, clipped)


def float_to_int16(pcm: np.ndarray) -> np.ndarray:
    """Clip to [-1, 1] and convert to int16 PCM."""
    return (np.clip(pcm, -1.0, 1.0) * 32767.0).astype(np.int16)
