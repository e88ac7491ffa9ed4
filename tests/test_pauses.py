"""The pause set: its table is well formed, and a rendered item holds silence of the stated
length at the stated place, with speech on both sides of it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from realtime_avatar.errors import ConfigurationError
from realtime_avatar.evaluate import pauses
from realtime_avatar.evaluate.pauses import (
    MAX_PAUSE_MS,
    MIN_PAUSE_MS,
    audible_extent,
    complete_items,
    load_items,
    paused_items,
    render,
)


def rms(pcm: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(pcm, dtype=np.float64)))) if pcm.size else 0.0


def test_the_table_is_well_formed() -> None:
    paused, complete = paused_items(), complete_items()
    assert len(paused) >= 20 and len(complete) >= 20
    assert len({item.id for item in load_items()}) == len(load_items())
    for language in ("en", "es", "zh"):
        assert any(item.language == language for item in paused), language
        assert any(item.language == language for item in complete), language
    for item in paused:
        assert MIN_PAUSE_MS <= item.pause_ms <= MAX_PAUSE_MS, item.id
        assert item.before and item.after and item.cue, item.id
        assert item.parts == (item.before, item.after)
        # The words before the pause never end a sentence.
        assert item.before.rstrip()[-1:] not in ".?!。？！", item.id
    for item in complete:
        assert not item.has_pause and item.parts == (item.before,)
        assert item.text.rstrip()[-1:] in "?？", item.id
    cues = {item.cue for item in paused}
    assert {"hesitation", "conjunction", "list", "complement"} <= cues
    assert any(item.before.endswith(" the") for item in paused)  # a trailing article


def test_a_bad_table_is_one_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "pauses.yaml"
    bad.write_text(
        "paused:\n  - {id: a, language: en, before: 'So', after: 'what?', pause_ms: 2000}\n"
        "complete: []\n",
        encoding="utf-8",
    )
    with pytest.raises(ConfigurationError, match="300-1200 ms"):
        load_items(bad)
    bad.write_text("paused: [\n", encoding="utf-8")
    with pytest.raises(ConfigurationError, match="cannot be read"):
        load_items(bad)


def test_audible_extent_finds_the_sound() -> None:
    rate = 16_000
    pcm = np.zeros(rate, dtype=np.float32)
    pcm[4_001:9_000] = 0.5 * np.sin(np.arange(4_999) * 0.3)
    start, end = audible_extent(pcm, rate)
    assert abs(start - 4_001) <= 2 and abs(end - 9_000) <= 2
    assert audible_extent(np.zeros(100, dtype=np.float32), rate) == (0, 0)


@pytest.mark.slow  # Piper and espeak-ng synthesis
@pytest.mark.parametrize(
    ("item_id", "rate_hz"),
    [("en-wondering-if", 16_000), ("en-rising-list", 48_000), ("es-queria-saber", 16_000)],
)
def test_rendered_pause_is_silence_of_the_stated_length(item_id: str, rate_hz: int) -> None:
    (item,) = [item for item in load_items() if item.id == item_id]
    rendered = render(item, rate_hz=rate_hz, lead_ms=300, tail_ms=500)
    assert rendered.rate_hz == rate_hz and rendered.pcm.dtype == np.float32
    assert rendered.pause_start is not None and rendered.pause_end is not None
    pcm = rendered.pcm
    window = rate_hz * 30 // 1000

    # Exactly pause_ms of silence, where the item says.
    assert rendered.pause_end - rendered.pause_start == rate_hz * item.pause_ms // 1000
    assert rms(pcm[rendered.pause_start : rendered.pause_end]) < 1e-4
    # Speech right up to the pause and right after it: the synthesizer's own silence is gone.
    assert rms(pcm[rendered.pause_start - window : rendered.pause_start]) > 3e-3
    assert rms(pcm[rendered.pause_end : rendered.pause_end + window]) > 3e-3
    # Silence before the speech starts and after its true end; speech in between.
    assert rendered.speech_start == rate_hz * 300 // 1000
    assert rms(pcm[: rendered.speech_start]) < 1e-4
    assert rms(pcm[rendered.speech_end :]) < 1e-4
    assert len(pcm) - rendered.speech_end == rate_hz * 500 // 1000
    assert rms(pcm[rendered.speech_start : rendered.speech_start + window]) > 3e-3
    assert rms(pcm[rendered.speech_end - window : rendered.speech_end]) > 1e-3
    # Each part is longer than a word's worth of speech.
    assert rendered.pause_start - rendered.speech_start > rate_hz * 0.3
    assert rendered.speech_end - rendered.pause_end > rate_hz * 0.5


@pytest.mark.slow  # Piper synthesis
def test_rendered_complete_question_has_no_pause() -> None:
    item = complete_items()[0]
    rendered = render(item, tail_ms=200)
    assert rendered.pause_start is None and rendered.pause_end is None
    speech = rendered.pcm[rendered.speech_start : rendered.speech_end]
    assert rms(speech) > 0.02
    # No stretch of silence as long as the shortest pause inside the spoken question.
    window = rendered.rate_hz * pauses.MIN_PAUSE_MS // 1000
    quietest = min(rms(speech[i : i + window]) for i in range(0, len(speech) - window, window // 4))
    assert quietest > 1e-3
