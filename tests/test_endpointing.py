"""The end-of-turn decider: the words rules (en, es, zh), how words, prosody and silence
combine, the smart-turn features and model, and the decider on spoken questions with
pauses inside them (cut-ins) and without (released early)."""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import json
import logging
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import pytest

from realtime_avatar.engine.endpointing import (
    Decision,
    TurnDecider,
    bundled_smart_turn_path,
    load_smart_turn,
    make_turn_decider,
    smart_turn_features,
    words_finished,
)
from realtime_avatar.settings import Settings

# ---------------------------------------------------------------------------------------
# Words (fast)
# ---------------------------------------------------------------------------------------

# (transcript, language): the words cannot end a turn.
UNFINISHED = [
    ("I was wondering if", "en"),
    ("I was wondering if...", "en"),
    ("I would like to know.", "en"),
    ("I'd like to know", "en"),
    ("Can you tell me", "en"),
    ("Could you please tell me.", "en"),
    ("Do you know", "en"),
    ("What do you think about the", "en"),
    ("I went to the store and", "en"),
    ("I like it but", "en"),
    ("It depends on whether", "en"),
    ("Tell me about", "en"),
    ("I think that", "en"),
    ("So, um,", "en"),
    ("Uh", "en"),
    ("I need apples, pears,", "en"),
    ("I need apples, pears, bananas.", "en"),
    ("I need to buy eggs, milk.", "en"),
    ("What is the best way to", "en"),
    ("Tell me about it.", "en"),
    ("and then I", "en"),
    ("So what I was thinking is that maybe we could", "en"),
    ("My question is", "en"),
    ("Well...", "en"),
    ("Is it true", "en"),
    ("Quisiera saber", "es"),
    ("Me gustaría preguntarte", "es"),
    ("¿Puedes decirme", "es"),
    ("Me gusta el", "es"),
    ("Creo que", "es"),
    ("Fui al mercado y", "es"),
    ("La casa de", "es"),
    ("Eh, este", "es"),
    ("Me preguntaba si", "es"),
    ("Compré manzanas, peras,", "es"),
    ("我想知道", "zh"),
    ("请问", "zh"),
    ("你能告诉我", "zh"),
    ("因为", "zh"),
    ("我喜欢苹果和", "zh"),
    ("嗯", "zh"),
    ("那个", "zh"),
    ("我买了苹果，梨，", "zh"),
    ("我的问题是", "zh"),
    ("我想問你一下", "zh"),
    ("啊", "zh"),
    ("Can you help me with?", "en"),
    ("Do you think that maybe?", "en"),
    ("I was wondering it.", "en"),
    ("Could you?", "en"),
    ("When I wake up in the morning.", "en"),
    ("If it rains tomorrow", "en"),
    ("这是我们的", "zh"),
]

# The words can end a turn (a stranded preposition in a question, a final "so", "like").
FINISHED = [
    ("Tell me about your job?", "en"),
    ("Can you tell me about your job?", "en"),
    ("Where are you from?", "en"),
    ("What are you afraid of?", "en"),
    ("What is it like?", "en"),
    ("I think so.", "en"),
    ("Well, yes, I think so.", "en"),
    ("What is that?", "en"),
    ("I'm doing well.", "en"),
    ("What would you like?", "en"),
    ("How old are you?", "en"),
    ("Thank you very much.", "en"),
    ("Hello!", "en"),
    ("I need apples, pears and bananas.", "en"),
    ("I'm fine, thank you.", "en"),
    ("Yes, of course.", "en"),
    ("¿Dónde vives?", "es"),
    ("¿Por qué?", "es"),
    ("Hola, ¿cómo estás?", "es"),
    ("Quiero un café, por favor.", "es"),
    ("¿Qué es esto?", "es"),
    ("Está bien.", "es"),
    ("你叫什么名字？", "zh"),
    ("你好吗", "zh"),
    ("我今天很忙。", "zh"),
    ("这是谁的？", "zh"),
    ("好吧", "zh"),
    ("现在几点了?", "zh"),
    ("明天會下雨嗎", "zh"),
    ("Who did you go with?", "en"),
    ("Maybe.", "en"),
    ("When do you open?", "en"),
    ("When I wake up, I drink coffee.", "en"),
    ("If it rains, we stay home.", "en"),
]


@pytest.mark.parametrize(("transcript", "language"), UNFINISHED)
def test_unfinished_words_score_low(transcript: str, language: str) -> None:
    verdict = words_finished(transcript, language)
    assert verdict.score <= 0.35, (transcript, verdict)
    assert verdict.reasons


@pytest.mark.parametrize(("transcript", "language"), FINISHED)
def test_finished_words_score_high(transcript: str, language: str) -> None:
    verdict = words_finished(transcript, language)
    assert verdict.score >= 0.55, (transcript, verdict)
    assert verdict.reasons


def test_words_reasons_name_the_ending() -> None:
    assert any("'the'" in r for r in words_finished("Tell me about the", "en").reasons)
    assert any("frame" in r for r in words_finished("I was wondering if", "en").reasons)
    assert any("comma" in r for r in words_finished("apples, pears,", "en").reasons)
    assert any("'um'" in r for r in words_finished("So, um", "en").reasons)
    assert words_finished("", "en").reasons == ("no words",)


def test_missing_end_mark_counts_only_from_a_recognizer_that_punctuates() -> None:
    assert words_finished("I need to buy eggs milk", "en").score <= 0.2
    unpunctuated = words_finished("I need to buy eggs milk", "en", punctuated=False)
    assert unpunctuated.score >= 0.5
    assert words_finished("and the", "en", punctuated=False).score < 0.1
    assert words_finished("我今天很忙", "zh").score >= 0.5  # Whisper's Mandarin: often no marks
    settings = Settings(asr="pocketsphinx", turn_prosody=False)  # type: ignore[call-arg]
    assert make_turn_decider(settings).punctuated is False


def test_words_language_from_the_script_when_auto() -> None:
    assert words_finished("我想知道", "auto").score < 0.1
    assert words_finished("我想知道", "zh-CN").score < 0.1
    assert words_finished("and the", "en-US").score < 0.1
    assert words_finished("Creo que", "es_ES").score < 0.1


def test_preposition_and_it_is_doubted_even_in_a_question() -> None:
    """Whisper ends a phrase cut off by a pause with "about it" / "after this": such an
    ending is doubted, so a real "What do you think about it?" waits longer (a cost we
    take: being cut into is worse), but is released well before the bound."""
    verdict = words_finished("What do you think about it?", "en")
    assert verdict.score < 0.5
    decision = TurnDecider(FixedProsody(0.97)).decide(
        "What do you think about it?", "en", AUDIO, 64.0
    )
    assert 300.0 < decision.needed_silence_ms < 1000.0


def test_question_mark_beats_stranded_preposition_only_in_a_question() -> None:
    assert words_finished("Where are you from?", "en").score > 0.9
    stranded = words_finished("What are you afraid of", "en").score
    dangling = words_finished("Tell me about", "en").score
    assert dangling < stranded < 0.55


# ---------------------------------------------------------------------------------------
# The decision (fast, with a stand-in prosody model)
# ---------------------------------------------------------------------------------------


@dataclass
class FixedProsody:
    """A stand-in prosody model that always says ``probability``, and counts its calls."""

    probability: float
    name: str = "fixed"
    calls: int = 0

    def complete_probability(self, audio_16k: np.ndarray) -> float:
        self.calls += 1
        return self.probability


AUDIO = np.zeros(16_000, dtype=np.float32)


def test_complete_question_released_at_the_first_pause_when_both_agree() -> None:
    decider = TurnDecider(FixedProsody(0.95))
    decision = decider.decide("Where do you live?", "en", AUDIO, silence_ms=64.0)
    assert decision.release
    assert decision.wait_ms == 0.0
    assert decision.words_score > 0.9 and decision.prosody_score == 0.95


def test_unfinished_words_hold_even_when_prosody_says_done() -> None:
    decider = TurnDecider(FixedProsody(0.99), max_wait_ms=2000.0, recheck_ms=200.0)
    first = decider.decide("I was wondering if", "en", AUDIO, silence_ms=64.0)
    assert not first.release
    assert 0.0 < first.wait_ms <= 200.0
    assert first.needed_silence_ms > 1200.0  # a 1.2 s thinking pause is not cut into
    assert not decider.decide("I was wondering if", "en", AUDIO, silence_ms=1200.0).release


def test_unfinished_turn_released_at_the_bound() -> None:
    decider = TurnDecider(FixedProsody(0.02), max_wait_ms=2000.0)
    assert not decider.decide("and the", "en", AUDIO, silence_ms=1999.0).release
    last = decider.decide("and the", "en", AUDIO, silence_ms=2000.0)
    assert last.release
    assert "silence reached the bound" in last.reasons


def test_prosody_moves_neutral_words() -> None:
    sure = TurnDecider(FixedProsody(0.95)).decide("I live in Paris.", "en", AUDIO, 64.0)
    unsure = TurnDecider(FixedProsody(0.1)).decide("I live in Paris.", "en", AUDIO, 64.0)
    assert sure.release
    assert not unsure.release
    assert unsure.needed_silence_ms > 600.0


def test_more_confidence_never_needs_more_silence() -> None:
    decider = TurnDecider(FixedProsody(0.5))
    needed = [decider.needed_silence_ms(c / 20) for c in range(21)]
    assert needed == sorted(needed, reverse=True)
    assert needed[0] == decider.max_wait_ms and needed[-1] == 0.0


def test_words_alone_without_a_model() -> None:
    decider = TurnDecider(None)
    question = decider.decide("Where do you live?", "en", AUDIO, silence_ms=64.0)
    assert question.release and question.prosody_score is None
    fragment = decider.decide("Tell me about the", "en", AUDIO, silence_ms=64.0)
    assert not fragment.release
    # A plain statement waits about as long as the old 300 ms silence timer.
    plain = decider.decide("I live in Paris.", "en", AUDIO, silence_ms=64.0)
    assert 200.0 < plain.needed_silence_ms < 500.0


class BrokenProsody:
    name = "broken"

    def complete_probability(self, audio_16k: np.ndarray) -> float:
        raise RuntimeError("onnxruntime failed")


def test_a_failing_model_falls_back_to_words() -> None:
    decision = TurnDecider(BrokenProsody()).decide("Where do you live?", "en", AUDIO, 64.0)
    assert decision.release and decision.prosody_score is None
    assert "prosody model failed" in decision.reasons


def test_no_audio_skips_the_model() -> None:
    prosody = FixedProsody(0.9)
    decision = TurnDecider(prosody).decide("Hello?", "en", None, silence_ms=100.0)
    assert prosody.calls == 0 and decision.prosody_score is None


def test_decision_record_is_json_with_inputs_and_outputs() -> None:
    decision = TurnDecider(FixedProsody(0.7)).decide("Can you tell me", "en", AUDIO, 128.0)
    record = json.loads(json.dumps(decision.as_record()))
    for key in (
        "release",
        "wait_ms",
        "confidence",
        "silence_ms",
        "words_score",
        "prosody_score",
        "reasons",
        "transcript",
        "language",
        "audio_ms",
        "needed_silence_ms",
        "prosody_model",
    ):
        assert key in record
    assert record["transcript"] == "Can you tell me"
    assert record["audio_ms"] == 1000.0
    assert record["release"] is False


def test_decide_from_many_threads_gives_the_same_answers() -> None:
    decider = TurnDecider(FixedProsody(0.8))
    inputs = [(text, lang) for text, lang in UNFINISHED + FINISHED]
    expected = [decider.decide(t, lang, AUDIO, 64.0) for t, lang in inputs]
    results: list[list[Decision]] = []

    def run() -> None:
        results.append([decider.decide(t, lang, AUDIO, 64.0) for t, lang in inputs])

    threads = [threading.Thread(target=run) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 4
    for got in results:
        assert [d.release for d in got] == [d.release for d in expected]


def test_missing_model_file_warns_and_decides_from_words(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="realtime_avatar.engine.endpointing"):
        assert load_smart_turn(Path("/nonexistent/smart-turn.onnx")) is None
    assert "smart-turn model not found" in caplog.text
    decider = make_turn_decider(
        Settings(turn_model_path=Path("/nonexistent/smart-turn.onnx"))  # type: ignore[call-arg]
    )
    assert decider.prosody is None
    assert decider.decide("Where do you live?", "en", AUDIO, 64.0).release


def test_decider_reads_its_settings() -> None:
    settings = Settings(turn_prosody=False, turn_max_wait_ms=1500.0, turn_recheck_ms=100.0)  # type: ignore[call-arg]
    decider = make_turn_decider(settings)
    assert decider.prosody is None
    assert decider.max_wait_ms == 1500.0 and decider.recheck_ms == 100.0


# ---------------------------------------------------------------------------------------
# Features (fast: numpy only)
# ---------------------------------------------------------------------------------------


def test_features_shape_and_range() -> None:
    rng = np.random.default_rng(1)
    for seconds in (0.5, 8.0, 11.0):
        audio = (0.1 * rng.standard_normal(int(seconds * 16_000))).astype(np.float32)
        features = smart_turn_features(audio)
        assert features.shape == (80, 800) and features.dtype == np.float32
        assert np.isfinite(features).all()
        assert features.max() - features.min() <= 2.0 + 1e-6  # 8 decades / 4


def test_features_keep_the_last_eight_seconds() -> None:
    rng = np.random.default_rng(2)
    tail = (0.1 * rng.standard_normal(8 * 16_000)).astype(np.float32)
    longer = np.concatenate([np.ones(16_000, np.float32), tail])
    np.testing.assert_array_equal(smart_turn_features(longer), smart_turn_features(tail))


def _pipecat_reference() -> Any:
    """pipecat's own numpy feature code, loaded from its file (no pipecat import)."""
    model = bundled_smart_turn_path()
    if model is None:
        pytest.skip("pipecat-ai is not installed (pip install --no-deps pipecat-ai==1.14.0)")
    source = model.parents[1] / "_whisper_features.py"
    spec = importlib.util.spec_from_file_location("_smart_turn_reference", source)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_features_match_what_the_model_was_fed() -> None:
    reference = _pipecat_reference()
    rng = np.random.default_rng(3)
    for samples in (3 * 16_000, 8 * 16_000):
        audio = (0.2 * rng.standard_normal(samples) * np.sin(np.arange(samples) / 700)).astype(
            np.float32
        )
        padded = np.pad(audio, (8 * 16_000 - samples, 0))  # pipecat pads in front
        expected = reference.compute_whisper_log_mel_features(padded)
        np.testing.assert_allclose(smart_turn_features(audio), expected, atol=1e-5)


# ---------------------------------------------------------------------------------------
# Spoken questions with and without pauses (slow: Piper, Whisper, the smart-turn model)
# ---------------------------------------------------------------------------------------

# (before the pause, pause in ms, after it): paused where the sentence is clearly not done.
PAUSED = [
    ("I was wondering if", 600, "you could tell me about your job."),
    ("Can you tell me", 800, "what you did last weekend?"),
    ("I would like to know", 600, "where you grew up."),
    ("What do you think about the", 500, "new office?"),
    ("My favourite fruits are apples, pears,", 700, "and oranges."),
    ("Um,", 600, "what time is it?"),
    ("So", 900, "how long have you worked here?"),
    ("Tell me about", 400, "your family."),
    ("Could you explain why", 600, "the sky is blue?"),
    ("I think that", 700, "we should meet tomorrow."),
    ("Do you know if", 1000, "the shop is open?"),
    ("What is the best way to", 500, "learn Spanish?"),
    ("I went to the store and", 800, "bought some bread."),
    ("Is it true that", 600, "you like jazz?"),
    ("I need to buy eggs, milk,", 1200, "and butter."),
    ("Where did you go after", 300, "the meeting?"),
    ("The thing is", 700, "I forgot my keys."),
    ("How many people work in", 900, "your team?"),
    ("Well, um,", 1100, "can you help me?"),
    ("Let me ask you", 600, "something about music."),
    ("I was thinking we could", 800, "go to the park."),
    ("Because", 500, "I want to know more."),
]

COMPLETE = [
    "What is your name?",
    "Where do you live?",
    "How old are you?",
    "What do you do for a living?",
    "Can you tell me about your job?",
    "Do you like music?",
    "What time is it?",
    "Where are you from?",
    "What is the weather like today?",
    "Tell me a joke.",
    "How was your weekend?",
    "Who is your favourite author?",
    "What did you have for breakfast?",
    "Are you happy?",
    "Why is the sky blue?",
    "What are you working on?",
    "Do you have any pets?",
    "How do I get to the station?",
    "What is your favourite food?",
    "Thank you very much.",
    "Is it going to rain tomorrow?",
    "Could you help me with my homework?",
]

LEAD_MS = 300  # silence before the speech, as the VAD's pre-roll gives it
FIRST_DECISION_MS = 64.0  # the VAD's pause: the engine's first decision
GRID_MS = [64, *range(100, 2600, 100)]  # silences the offline curve decides at


@contextlib.contextmanager
def deterministic_piper() -> Iterator[None]:
    """Piper without its sampling noise, so that the pause set is the same on every run
    (with it, Whisper hears some cut-off phrases differently from run to run)."""
    import piper

    config = functools.partial(piper.SynthesisConfig, noise_scale=0.0, noise_w_scale=0.0)
    with mock.patch.object(piper, "SynthesisConfig", config):
        yield


def _trimmed(pcm: np.ndarray) -> np.ndarray:
    """Trailing silence removed (the decider's silence is counted apart)."""
    loud = np.flatnonzero(np.abs(pcm) > 0.02 * max(float(np.abs(pcm).max()), 1e-9))
    return pcm[: loud[-1] + 1] if loud.size else pcm


def synthesize_item(item: tuple[str, int, str] | str) -> dict[str, Any]:
    """A pause-set item's audio: ``head`` (up to the pause) and ``full`` (to the true end).

    A paused question is spoken whole by Piper and cut after the pause's word, so the
    words before the pause keep their mid-sentence intonation, as a person's would.
    """
    from realtime_avatar.media.audio import resample
    from realtime_avatar.tts.registry import get_synthesizer

    lead = np.zeros(LEAD_MS * 16, np.float32)
    text = item if isinstance(item, str) else f"{item[0]} {item[2]}"
    speech = get_synthesizer("en").synthesize(text, "en")
    pcm = resample(speech.pcm, speech.sample_rate_hz, 16_000)
    if isinstance(item, str):
        return {"head": None, "full": np.concatenate([lead, _trimmed(pcm)]), "pause_ms": None}
    before, pause_ms, _after = item
    n_before = len(re.findall(r"[\w']+", before))
    assert [w.word for w in speech.words][:n_before] == re.findall(r"[\w']+", before), text
    cut = int(speech.words[n_before - 1].end_s * 16_000)
    head = np.concatenate([lead, _trimmed(pcm[:cut])])
    rest = pcm[cut:]
    rest = rest[np.flatnonzero(np.abs(rest) > 0.02 * np.abs(rest).max())[0] :]
    full = np.concatenate([head, np.zeros(pause_ms * 16, np.float32), _trimmed(rest)])
    return {"head": head, "full": full, "pause_ms": pause_ms}


def transcribe(audio: np.ndarray, language: str = "en") -> str:
    """What the engine's recognizer peeks at a pause (tiny.en; Whisper base for es, zh)."""
    from realtime_avatar.asr.registry import recognizer_for_language

    utterance = recognizer_for_language(language).start(0, language)
    utterance.feed(np.concatenate([audio, np.zeros(int(FIRST_DECISION_MS * 16), np.float32)]))
    return utterance.peek().text


def release_silence_ms(
    decider: TurnDecider,
    text: str,
    prosody: dict[int, float],
    limit_ms: float | None,
    language: str = "en",
) -> float | None:
    """The first grid silence at which ``decider`` releases (None: not before ``limit_ms``).

    ``prosody``: the model's score at each grid silence, computed once and shared by every
    decider setting (a stand-in model replays it).
    """
    for silence in GRID_MS:
        if limit_ms is not None and silence >= limit_ms:
            return None
        replay = TurnDecider(
            FixedProsody(prosody[silence]) if prosody else None,
            max_wait_ms=decider.max_wait_ms,
            recheck_ms=decider.recheck_ms,
            words_weight=decider.words_weight,
            prosody_weight=decider.prosody_weight,
        )
        if replay.decide(text, language, AUDIO, float(silence)).release:
            return float(silence)
    return float(decider.max_wait_ms)


def score_pause_set(decider: TurnDecider, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Cut-ins on paused items, and release silences after complete and paused questions."""
    cut_ins, complete_ms, paused_ms = [], [], []
    for row in rows:
        if row["kind"] == "paused":
            pause = row["pause"]
            cut = release_silence_ms(
                decider, pause["text"], pause["prosody"], row["pause_ms"], row.get("language", "en")
            )
            if cut is not None:
                cut_ins.append(row["item"])
        end = row["end"]
        released = release_silence_ms(
            decider, end["text"], end["prosody"], None, row.get("language", "en")
        )
        (paused_ms if row["kind"] == "paused" else complete_ms).append(released)
    return {
        "cut_ins": cut_ins,
        "paused": sum(r["kind"] == "paused" for r in rows),
        "complete_ms": complete_ms,
        "paused_ms": paused_ms,
    }


def pause_set_rows(model: Any, items: list[Any] | None = None) -> list[dict[str, Any]]:
    """Transcripts at each pause and at each true end, and the model's score on the grid."""
    rows: list[dict[str, Any]] = []
    for kind, group in (("paused", PAUSED), ("complete", COMPLETE)):
        for item in group if items is None else [i for i in group if i in items]:
            with deterministic_piper():
                built = synthesize_item(item)
            row: dict[str, Any] = {"kind": kind, "item": item, "pause_ms": built["pause_ms"]}
            phases = [("end", built["full"], None)]
            if kind == "paused":
                phases.insert(0, ("pause", built["head"], built["pause_ms"]))
            for phase, audio, limit in phases:
                probs: dict[int, float] = {}
                for silence in GRID_MS:
                    if limit is not None and silence >= limit:
                        break
                    tail = np.zeros(int(silence * 16), np.float32)
                    probs[silence] = model.complete_probability(np.concatenate([audio, tail]))
                row[phase] = {"text": transcribe(audio), "prosody": probs}
            rows.append(row)
    return rows


def simulate_pause(
    decider: TurnDecider,
    text: str,
    audio: np.ndarray,
    limit_ms: float | None,
    language: str = "en",
) -> tuple[float | None, list[Decision]]:
    """Ask ``decider`` as the engine does: at the VAD's pause, then after each ``wait_ms``.

    Returns the silence at release (None: the user spoke again first, at ``limit_ms``) and
    the decisions made.
    """
    silence, decisions = FIRST_DECISION_MS, []
    while limit_ms is None or silence < limit_ms:
        tail = np.zeros(int(silence * 16), np.float32)
        decision = decider.decide(text, language, np.concatenate([audio, tail]), silence)
        decisions.append(decision)
        if decision.release:
            return silence, decisions
        silence += decision.wait_ms
    return None, decisions


@pytest.fixture(scope="module")
def smart_turn() -> Any:
    model = load_smart_turn()
    if model is None:
        pytest.skip("smart-turn needs pipecat-ai: pip install --no-deps pipecat-ai==1.14.0")
    return model


@pytest.mark.slow
def test_smart_turn_loads_once_and_scores_speech(smart_turn: Any) -> None:
    assert load_smart_turn() is smart_turn
    built = synthesize_item("What is your name?")
    probability = smart_turn.complete_probability(built["full"])
    assert 0.0 <= probability <= 1.0
    silence = smart_turn.complete_probability(np.zeros(16_000, np.float32))
    assert 0.0 <= silence <= 1.0
    decision = make_turn_decider().decide("What is your name?", "en", built["full"], 64.0)
    assert decision.prosody_model == "smart-turn-v3.2"
    assert decision.prosody_score == pytest.approx(probability, abs=1e-6)
    assert decision.prosody_ms is not None and decision.prosody_ms > 0.0


@pytest.mark.slow
def test_pause_set_few_cut_ins_and_complete_questions_released_early(smart_turn: Any) -> None:
    """Paused questions are not cut into (at most 1 in 20); complete ones are released
    well before the old 300 ms silence timer would have."""
    decider = TurnDecider(smart_turn)
    cut_ins, complete_release = [], []
    with deterministic_piper():
        built_items = {item: synthesize_item(item) for item in [*PAUSED, *COMPLETE]}
    for item in PAUSED:
        built = built_items[item]
        released, decisions = simulate_pause(
            decider, transcribe(built["head"]), built["head"], built["pause_ms"]
        )
        if released is not None:
            last = decisions[-1]
            cut_ins.append((item[0], last.transcript, last.silence_ms, last.prosody_score))
    for text in COMPLETE:
        built = built_items[text]
        released, _ = simulate_pause(decider, transcribe(built["full"]), built["full"], None)
        assert released is not None
        complete_release.append(released)
    # The target is 1 in 20. Measured here: 2 of 22, both the recognizer's doing
    # ("How many people work in" heard as "How many people working?", "eggs, milk," as
    # "eggs milk"); a silence timer needs 1100 ms to do as well (docs in the report).
    assert len(cut_ins) <= 2, cut_ins
    assert float(np.median(complete_release)) < 150.0, complete_release
    assert sum(r <= FIRST_DECISION_MS for r in complete_release) >= len(COMPLETE) // 2


def shared_pause_set_rows(model: Any) -> list[dict[str, Any]]:
    """``pause_set_rows`` for the product's pause set (``evaluate/pauses.py``: en, es, zh)."""
    from realtime_avatar.evaluate.pauses import load_items, render

    rows: list[dict[str, Any]] = []
    for item in load_items():
        with deterministic_piper():
            rendered = render(item, tail_ms=0)
        pcm = rendered.pcm
        kind = "paused" if item.has_pause else "complete"
        row: dict[str, Any] = {
            "kind": kind,
            "item": item.id,
            "pause_ms": item.pause_ms or None,
            "language": item.language,
        }
        phases = [("end", pcm[: rendered.speech_end], None)]
        if item.has_pause:
            assert rendered.pause_start is not None
            phases.insert(0, ("pause", pcm[: rendered.pause_start], item.pause_ms))
        for phase, audio, limit in phases:
            probs: dict[int, float] = {}
            for silence in GRID_MS:
                if limit is not None and silence >= limit:
                    break
                tail = np.zeros(int(silence * 16), np.float32)
                probs[silence] = model.complete_probability(np.concatenate([audio, tail]))
            row[phase] = {"text": transcribe(audio, item.language), "prosody": probs}
        rows.append(row)
    return rows


def trade_off_table(rows: list[dict[str, Any]]) -> str:
    """Cut-ins against latency for each silence bound (Markdown), from ``pause_set_rows``."""

    def pct(values: list[float], q: float) -> float:
        return float(np.percentile(values, q))

    paused = sum(r["kind"] == "paused" for r in rows)
    lines = [
        "| decider | silence bound ms | cut-ins | complete: release after ms, p50 / p95 "
        "| paused: release after the true end, p50 / p95 |",
        "| --- | --- | --- | --- | --- |",
    ]
    words_only = [
        {**r, **{ph: {**r[ph], "prosody": {}} for ph in ("pause", "end") if ph in r}} for r in rows
    ]
    for label, data in (("words + smart-turn", rows), ("words only", words_only)):
        for bound in (500, 1000, 1500, 2000, 2500):
            decider = TurnDecider(None, max_wait_ms=bound)  # the rows' scores are replayed
            got = score_pause_set(decider, data)
            done, late = got["complete_ms"], got["paused_ms"]
            lines.append(
                f"| {label} | {bound} | {len(got['cut_ins'])}/{paused} | "
                f"{pct(done, 50):.0f} / {pct(done, 95):.0f} | {pct(late, 50):.0f} / "
                f"{pct(late, 95):.0f} |"
            )
    for timer in (300, 500, 700, 900, 1100, 1300):
        cuts = sum(1 for r in rows if r["kind"] == "paused" and r["pause_ms"] > timer)
        lines.append(f"| silence timer | {timer} | {cuts}/{paused} | {timer} | {timer} |")
    return "\n".join(lines)


if __name__ == "__main__":
    # The trade-off curves: .venv/bin/python tests/test_endpointing.py [shared]
    import sys

    smart = load_smart_turn()
    if sys.argv[1:] == ["shared"]:
        print(trade_off_table(shared_pause_set_rows(smart)))
    else:
        print(trade_off_table(pause_set_rows(smart)))


@pytest.mark.slow
def test_product_pause_set_cut_ins_and_early_release(smart_turn: Any) -> None:
    """The same on evaluate/pauses.py's set (en with Piper; es, zh with espeak-ng, heard by
    Whisper base). Measured: 4-6 cut-ins of 25 (2 of 17 in English), where the recognizer or the robotic voice
    made the words before the pause sound whole ("Could you?", "We are planning nay",
    "Me gusta ir.", "我們明天可以去")."""
    from realtime_avatar.evaluate.pauses import load_items, render

    decider = TurnDecider(smart_turn)
    cut_ins, complete_release = [], []
    for item in load_items():
        with deterministic_piper():
            rendered = render(item, tail_ms=0)
        if item.has_pause:
            assert rendered.pause_start is not None
            head = rendered.pcm[: rendered.pause_start]
            released, decisions = simulate_pause(
                decider, transcribe(head, item.language), head, item.pause_ms, item.language
            )
            if released is not None:
                cut_ins.append((item.id, decisions[-1].transcript, released))
        else:
            whole = rendered.pcm[: rendered.speech_end]
            released, _ = simulate_pause(
                decider, transcribe(whole, item.language), whole, None, item.language
            )
            assert released is not None
            complete_release.append(released)
    # The target is 1 in 20; this guards what is reached (see the trade-off table). Only
    # English is guarded: Whisper base hears espeak-ng's Spanish and Mandarin differently
    # from run to run (its temperature fallback samples on garbled audio), so there the
    # count moved between 2 and 4 of 8; the bench reports it.
    english = [c for c in cut_ins if c[0].startswith("en-")]
    assert len(english) <= 2, cut_ins
    assert float(np.median(complete_release)) <= 100.0, complete_release
