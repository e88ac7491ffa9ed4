"""The ``turns`` bench group: cut-in classification from marks (fast) and a smoke run
through the real server on two pause-set items (slow)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from realtime_avatar.benchmark.figures import BenchContext
from realtime_avatar.benchmark.runner import GROUPS
from realtime_avatar.benchmark.turns import ItemMarks, pick_items, summarize


def _marks(paused: bool, audio: float | None, server: float | None = None) -> ItemMarks:
    # The question is spoken from t = 10 s to its true end at t = 12 s.
    return ItemMarks("x", "en", paused, 10.0, 12.0, audio, server, turns=1)


def test_an_answer_before_the_true_end_is_a_cut_in() -> None:
    inside = _marks(True, audio=11.2)
    assert inside.cut_in and inside.latency_ms is None
    after = _marks(True, audio=12.25)
    assert not after.cut_in
    assert after.latency_ms == pytest.approx(250.0)


def test_the_server_mark_catches_a_cut_in_the_audio_does_not_show() -> None:
    # The first frame left the server in the pause; its audio arrived after the end.
    late_audio = _marks(True, audio=12.1, server=11.9)
    assert late_audio.cut_in and late_audio.latency_ms is None
    # A server mark after the end does not make a cut-in, and the latency is the audio's.
    fine = _marks(False, audio=12.3, server=12.2)
    assert not fine.cut_in
    assert fine.latency_ms == pytest.approx(300.0)


def test_audio_from_before_the_question_is_not_its_answer() -> None:
    # A mark before the speech start belongs to a previous item: not a cut-in.
    stale = _marks(True, audio=None, server=9.5)
    assert not stale.answered and not stale.cut_in and stale.latency_ms is None


def test_summary_counts_and_splits_the_latencies() -> None:
    data = summarize(
        [
            _marks(True, audio=11.0),  # cut-in
            _marks(True, audio=12.4),
            _marks(False, audio=12.2),
            _marks(False, audio=None),  # no answer
        ]
    )
    assert (data.cutins_paused, data.paused, data.cutins_complete, data.complete) == (1, 2, 0, 2)
    assert data.cutin_rate == pytest.approx(0.5)
    assert data.latency_paused_ms == pytest.approx([400.0])
    assert data.latency_complete_ms == pytest.approx([200.0])
    assert data.unanswered == ["x"]
    assert data.cut_into == ["x"]
    assert math.isnan(summarize([]).cutin_rate)


def test_quick_and_full_item_choice() -> None:
    quick = pick_items(full=False)
    langs = [item.language for item in quick]
    assert (langs.count("en"), langs.count("es"), langs.count("zh")) == (16, 2, 2)
    assert sum(item.has_pause for item in quick if item.language == "en") == 8
    full = pick_items(full=True)
    assert len(full) == 50 and len({item.id for item in full}) == 50
    for suite in ("quick", "full"):
        assert "turns" in [name for name, _ in GROUPS[suite]]


@pytest.mark.slow  # two real servers, Piper, Whisper, aiortc: about two minutes
def test_turns_group_on_two_items(data_dir: Path, tmp_path: Path) -> None:
    from realtime_avatar.benchmark.turns import turns_figures

    items = pick_items(full=False)
    two = [next(i for i in items if i.has_pause), next(i for i in items if not i.has_pause)]
    ctx = BenchContext(data_dir=data_dir, suite="quick", work_dir=tmp_path)
    figures = {fig.key: fig for fig in turns_figures(ctx, items=two)}
    assert set(figures) == {
        "cutins_paused",
        "eot_first_audio_complete_ms",
        "eot_first_audio_complete_p95_ms",
        "eot_first_audio_paused_ms",
        "cutins_paused_silence",
        "eot_first_audio_complete_silence_ms",
        "eot_first_audio_paused_silence_ms",
    }
    for key in ("cutins_paused", "cutins_paused_silence"):
        (rate,) = figures[key].samples
        assert rate in (0.0, 1.0), key  # one paused item: it was cut into or not
        assert "of 1 paused items" in figures[key].notes
    assert figures["cutins_paused"].target is not None
    assert figures["cutins_paused_silence"].target is None  # the baseline has no target
    for key, fig in figures.items():
        assert len(fig.samples) <= 1, key
        assert all(math.isfinite(s) for s in fig.samples), key
        assert fig.to_json()["met"] in (True, False, None), key
    # The complete question was answered after its end, with either way of ending a turn.
    assert len(figures["eot_first_audio_complete_ms"].samples) == 1
    assert len(figures["eot_first_audio_complete_silence_ms"].samples) == 1
