"""Silero VAD on real speech: where speech starts and ends, silence, noise, chunking."""

from __future__ import annotations

import numpy as np
import pytest

from realtime_avatar.constants import ASR_RATE_HZ
from realtime_avatar.errors import ConfigurationError
from realtime_avatar.media.audio import resample
from realtime_avatar.vad.base import VadEvent
from realtime_avatar.vad.registry import get_vad
from realtime_avatar.vad.silero import SileroVad

# Not "The quick brown fox...": Silero often scores an unstressed leading "the" below 0.5,
# so speech would start on the next word, up to ~190 ms late (the session keeps pre-roll).
SENTENCE = "Please send me the weather forecast for tomorrow morning."


def _speech_16k(text: str) -> np.ndarray:
    from realtime_avatar.tts.registry import get_synthesizer

    speech = get_synthesizer("en").synthesize(text, "en")
    return resample(speech.pcm, speech.sample_rate_hz, ASR_RATE_HZ)


def _true_bounds_s(pcm: np.ndarray) -> tuple[float, float]:
    """First and last 10 ms of the clip louder than -40 dBFS: where speech really is."""
    hop = ASR_RATE_HZ // 100
    frames = pcm[: len(pcm) // hop * hop].reshape(-1, hop)
    loud = np.flatnonzero(np.sqrt(np.mean(frames**2, axis=1)) > 10 ** (-40 / 20))
    return loud[0] * hop / ASR_RATE_HZ, (loud[-1] + 1) * hop / ASR_RATE_HZ


def _silence(seconds: float) -> np.ndarray:
    return np.zeros(int(seconds * ASR_RATE_HZ), dtype=np.float32)


def _feed(vad: SileroVad, pcm: np.ndarray, chunk: int) -> list[VadEvent]:
    events: list[VadEvent] = []
    for i in range(0, len(pcm), chunk):
        events += vad.feed(pcm[i : i + chunk])
    return events


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    return _speech_16k(SENTENCE)


@pytest.mark.slow  # Silero VAD on Piper speech
def test_one_start_and_end_at_the_right_times(speech: np.ndarray) -> None:
    lead_s, tail_s = 1.0, 1.5
    pcm = np.concatenate([_silence(lead_s), speech, _silence(tail_s)])
    true_start, true_end = _true_bounds_s(speech)
    vad = get_vad()
    assert vad.speech_probability() == 0.0
    events = _feed(vad, pcm, 320)  # 20 ms chunks, as WebRTC delivers them
    kinds = [e.kind for e in events]
    # Piper's own gaps between words may add pause/resume pairs; one turn, ended by a pause.
    assert kinds[0] == "start" and kinds[-2:] == ["pause", "end"]
    assert kinds.count("start") == kinds.count("end") == 1
    assert events[0].time_s == pytest.approx(lead_s + true_start, abs=0.1)
    # The end is where the silence began, not when min_silence_ms later it was detected;
    # the early "pause" names the same place.
    assert events[-1].time_s == pytest.approx(lead_s + true_end, abs=0.1)
    assert events[-2].time_s == events[-1].time_s
    assert not vad.speaking
    assert 0.0 <= vad.speech_probability() < 0.35


@pytest.mark.slow  # Silero VAD on Piper speech
def test_speaking_flag_follows_the_speech(speech: np.ndarray) -> None:
    vad = get_vad()
    vad.feed(_silence(0.5))
    assert not vad.speaking
    vad.feed(speech[: len(speech) // 2])
    assert vad.speaking
    assert vad.speech_probability() > 0.5


@pytest.mark.slow  # loads Silero VAD
@pytest.mark.parametrize(
    "noise",
    ["zeros", "white", "hum"],
)
def test_silence_and_noise_give_no_events(noise: str) -> None:
    rng = np.random.default_rng(7)
    n = 4 * ASR_RATE_HZ
    if noise == "zeros":
        pcm = np.zeros(n, dtype=np.float32)
    elif noise == "white":
        pcm = (rng.standard_normal(n) * 10 ** (-30 / 20)).astype(np.float32)
    else:
        t = np.arange(n) / ASR_RATE_HZ
        pcm = (0.05 * np.sin(2 * np.pi * 50 * t) + 0.02 * np.sin(2 * np.pi * 150 * t)).astype(
            np.float32
        )
    vad = get_vad()
    assert _feed(vad, pcm, 320) == []
    assert not vad.speaking


@pytest.mark.slow  # Silero VAD on Piper speech
def test_chunk_size_does_not_change_the_events(speech: np.ndarray) -> None:
    pcm = np.concatenate([_silence(0.7), speech, _silence(0.9), speech, _silence(1.0)])
    reference = _feed(get_vad(), pcm, len(pcm))
    assert [e.kind for e in reference if e.kind in ("start", "end")] == ["start", "end"] * 2
    for chunk in (7, 160, 320, 511, 512, 513, 4000):
        assert _feed(get_vad(), pcm, chunk) == reference, f"chunk of {chunk} samples"


def _up_to_vad_end(speech: np.ndarray) -> np.ndarray:
    """The sentence cut where the VAD hears its silence begin.

    A gap added after it is then the whole pause the VAD sees. Piper's renditions end
    with quiet tails of varying length, which made the pause up to ~0.5 s longer than
    the gap the test meant.
    """
    events = _feed(get_vad(pause_ms=None), np.concatenate([speech, _silence(1.0)]), 320)
    end = [e for e in events if e.kind == "end"][-1]
    return speech[: int(end.time_s * ASR_RATE_HZ)]


@pytest.mark.slow  # Silero VAD on Piper speech
def test_min_silence_decides_whether_a_pause_splits(speech: np.ndarray) -> None:
    pause_s = 0.3
    first = _up_to_vad_end(speech)
    pcm = np.concatenate([_silence(0.5), first, _silence(pause_s), speech, _silence(1.0)])
    long_wait = _feed(get_vad(min_silence_ms=600, pause_ms=None), pcm, 320)
    short_wait = _feed(get_vad(min_silence_ms=150, pause_ms=None), pcm, 320)
    assert [e.kind for e in long_wait] == ["start", "end"]
    assert [e.kind for e in short_wait] == ["start", "end", "start", "end"]
    # The shorter setting also reports the final end sooner in the stream's own time.
    assert short_wait[-1].time_s == pytest.approx(long_wait[-1].time_s, abs=0.05)


@pytest.mark.slow  # Silero VAD on Piper speech
def test_a_pause_is_resumed_when_the_user_goes_on(speech: np.ndarray) -> None:
    first = _up_to_vad_end(speech)
    pcm = np.concatenate([_silence(0.5), first, _silence(0.25), speech, _silence(1.0)])
    events = _feed(get_vad(min_silence_ms=700, pause_ms=120), pcm, 320)
    kinds = [e.kind for e in events]
    # One turn; Piper's own gaps between words may add pause/resume pairs of their own.
    assert kinds[0] == "start" and kinds[-2:] == ["pause", "end"]
    assert kinds.count("start") == kinds.count("end") == 1
    for kind, after in zip(kinds, kinds[1:], strict=False):
        if kind == "pause":
            assert after in ("resume", "end")
    assert events[-2].time_s == events[-1].time_s
    # The user went on where the second sentence starts, after its gap began.
    gap_start = 0.5 + len(first) / ASR_RATE_HZ
    resumes = [e.time_s for e in events if e.kind == "resume"]
    assert any(gap_start < t < gap_start + 0.25 + 0.2 for t in resumes), resumes


def test_pause_must_come_before_the_end() -> None:
    with pytest.raises(ConfigurationError, match="pause_ms"):
        get_vad(min_silence_ms=300, pause_ms=300)
    with pytest.raises(ConfigurationError, match="pause_ms"):
        get_vad(pause_ms=0)


@pytest.mark.slow  # Silero VAD on Piper speech
def test_reset_starts_a_new_stream(speech: np.ndarray) -> None:
    pcm = np.concatenate([_silence(0.6), speech, _silence(0.8)])
    vad = get_vad()
    first = _feed(vad, pcm, 320)
    vad.feed(_silence(0.3)[:100])  # a partial frame left pending
    vad.reset()
    assert not vad.speaking
    assert _feed(vad, pcm, 320) == first


@pytest.mark.slow  # loads Silero VAD
def test_registry_and_options() -> None:
    assert isinstance(get_vad("silero"), SileroVad)
    with pytest.raises(ConfigurationError):
        get_vad("nope")
    with pytest.raises(ConfigurationError):
        SileroVad(threshold=0.3, neg_threshold=0.5)
    with pytest.raises(ValueError):
        get_vad().feed(np.zeros((2, 320), dtype=np.float32))
