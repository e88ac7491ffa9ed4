"""The dialogue gold set: the persona responder answers what visitors say, on any persona.

Fast tier: the responder and the checker are text in, text out (no model, no server).
The scores are not timing figures: they do not depend on the machine's speed.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from realtime_avatar.dialogue.base import Message
from realtime_avatar.dialogue.persona import PersonaResponder, word_deltas
from realtime_avatar.evaluate.dialogue_gold import (
    GoldReport,
    GoldSet,
    GoldSetError,
    check_answer,
    load_gold,
    persona_facts,
    run_gold,
    run_persona_gold,
)

PERSONA_PATH = Path(__file__).resolve().parents[1] / "src/realtime_avatar/assets/default/persona.md"
ISSUE_QUESTION = "Could you tell me a little about yourself and what you like to do?"

# A persona a user could write in the page, nothing like the default one: a baker, in
# English and Spanish, under headings of her own.
BAKER = """# Lucía, a baker from Seville

## About me
- I am Lucía, a baker from Seville.
- I run a small family bakery in the Triana neighbourhood and start baking at four in the morning.
- My grandmother taught me to bake bread when I was eight.
- In my free time I love dancing flamenco and walking along the Guadalquivir river.
- I speak Spanish and a little English.

## Sobre mí
- Soy Lucía, panadera de Sevilla.
- Llevo una pequeña panadería familiar en el barrio de Triana y empiezo a hornear a las cuatro de la mañana.
- Mi abuela me enseñó a hacer pan cuando tenía ocho años.
- En mi tiempo libre me encanta bailar flamenco y pasear junto al río Guadalquivir.
- Hablo español y un poco de inglés.

## Tone
- Warm and cheerful.
"""

# Another way to write one: prose in the third person, English only.
SAILOR = (
    "# Marco\n\nMarco is a retired sailor from Genoa. He spent forty years at sea. He loves "
    "cooking pesto and telling stories about storms. He speaks Italian and English.\n"
)


@pytest.fixture(scope="module")
def gold() -> GoldSet:
    return load_gold()


@pytest.fixture(scope="module")
def ava_report(gold: GoldSet) -> GoldReport:
    return run_persona_gold(PERSONA_PATH.read_text(encoding="utf-8"), "Ava", gold)


def _assert_scores(report: GoldReport, minimum: float = 0.9) -> None:
    for lang, entry in report.scores().items():
        failing = [
            (r.item.id, [(t.say, t.answer, t.problems) for t in r.turns])
            for r in report.failures()
            if r.item.language == lang
        ]
        assert entry["score"] >= minimum, (lang, entry, failing)


def _no_contradiction(report: GoldReport) -> None:
    problems = [p for r in report.results for t in r.turns for p in t.problems]
    assert not [p for p in problems if "contradiction" in p or "does not know where" in p]


# ------------------------------------------------------------------------- the gold set


def test_gold_set_covers_what_visitors_say(gold: GoldSet) -> None:
    assert len(gold.items) >= 60
    per_language = {
        lang: [i for i in gold.items if i.language == lang] for lang in gold.languages()
    }
    assert set(per_language) == {"en", "es", "zh"}
    assert all(len(items) >= 20 for items in per_language.values())
    for items in per_language.values():
        expected = {e for item in items for turn in item.turns for e in turn.expect}
        # Greetings, who/what/where/likes/how/languages, are you real, thanks, bye,
        # off-topic questions and follow-ups, in every language.
        assert {
            "greeting", "name", "fact", "fact:work", "fact:origin", "fact:hobbies",
            "fact:how", "fact:languages", "real", "thanks", "goodbye", "honest",
            "new_fact", "why",
        } <= expected  # fmt: skip
        assert sum(len(item.turns) > 1 for item in items) >= 3  # multi-turn follow-ups
    # No item names a fact of one persona: the set applies to any persona.
    for item in gold.items:
        for turn in item.turns:
            assert "Ava" not in turn.say and "NASA" not in turn.say


def test_a_bad_gold_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(GoldSetError, match="cannot read"):
        load_gold(tmp_path / "missing.yaml")
    text = (Path(load_gold().path)).read_text(encoding="utf-8")
    broken = tmp_path / "gold.yaml"
    broken.write_text(text.replace("expect: [greeting]", "expect: [grreting]", 1))
    with pytest.raises(GoldSetError, match="unknown expectation.*grreting"):
        load_gold(broken)
    broken.write_text("items: [1, 2]\n")
    with pytest.raises(GoldSetError, match="malformed"):
        load_gold(broken)


# --------------------------------------------------------------------- the persona responder


def test_default_persona_scores_90_percent_per_language(ava_report: GoldReport) -> None:
    _assert_scores(ava_report)
    _no_contradiction(ava_report)


def test_the_question_of_issue_12_gets_facts_not_a_contradiction(gold: GoldSet) -> None:
    ava = PersonaResponder(PERSONA_PATH.read_text(encoding="utf-8"), "Ava")
    answer = ava.reply(ISSUE_QUESTION, "en")
    assert "Ava" in answer and "I like" in answer
    assert "don't know" not in answer and "only tell you about myself" not in answer


def test_a_user_written_persona_is_answered_from_its_own_facts(gold: GoldSet) -> None:
    report = run_persona_gold(BAKER, "Lucía", gold)
    _assert_scores(report)
    _no_contradiction(report)
    baker = PersonaResponder(BAKER, "Lucía")
    assert "Seville" in baker.reply("Where are you from?", "en")
    assert "flamenco" in baker.reply(ISSUE_QUESTION, "en")
    assert "panadería" in baker.reply("¿A qué te dedicas?", "es")
    assert "Sevilla" in baker.reply("¿De dónde eres?", "es")
    # Her persona has no Mandarin: her facts are not read out in English or Spanish to a
    # Mandarin speaker; her name is, and the rest is an honest line in Mandarin.
    chinese = baker.reply("介绍一下你自己吧。", "zh")
    assert "Lucía" in chinese and "不知道" in chinese and "Seville" not in chinese


def test_a_third_person_prose_persona(gold: GoldSet) -> None:
    report = run_persona_gold(SAILOR, "Marco", gold)
    _assert_scores(report)
    sailor = PersonaResponder(SAILOR, "Marco")
    assert sailor.reply("Who are you?", "en") == "I'm Marco. I am a retired sailor from Genoa."
    assert "pesto" in sailor.reply("What do you like to do in your free time?", "en")


def test_a_persona_without_facts_is_honest_and_never_contradicts(gold: GoldSet) -> None:
    report = run_persona_gold("", "Zed", gold)
    _assert_scores(report)
    _no_contradiction(report)


def test_follow_ups_read_the_history_not_the_responder() -> None:
    ava = PersonaResponder(PERSONA_PATH.read_text(encoding="utf-8"), "Ava")
    first = ava.reply("Tell me about yourself.", "en")
    history = [Message("user", "Tell me about yourself."), Message("assistant", first)]
    more = ava.reply("Tell me more.", "en", history)
    assert more and more not in first
    # Asked again on the same history (a speculative reply that was dropped, then the
    # real one): the same new fact, since nothing was said in between.
    assert ava.reply("Tell me more.", "en", history) == more
    # The engine joins spoken pieces with spaces: a fact split in two still counts as said.
    spaced = [
        Message("user", "你是哪里人？"),
        Message("assistant", "我来自realtime-avatar项目， 就住在你的电脑里。"),
    ]
    assert "realtime-avatar项目" not in ava.reply("还有呢？", "zh", spaced)


def test_replies_still_stream_word_by_word(gold: GoldSet) -> None:
    ava = PersonaResponder(PERSONA_PATH.read_text(encoding="utf-8"), "Ava")

    async def collect(stream: AsyncIterator[str]) -> list[str]:
        return [delta async for delta in stream]

    import asyncio

    deltas = asyncio.run(collect(ava.respond([], ISSUE_QUESTION, "en")))
    assert len(deltas) > 10 and "".join(deltas) == ava.reply(ISSUE_QUESTION, "en")
    assert word_deltas("".join(deltas)) == deltas


# --------------------------------------------------------------- the checker can say no


class _Canned:
    """A responder that says what a function of the question returns."""

    name = "canned"

    def __init__(self, answer: object) -> None:
        self.answer = answer

    async def respond(self, history: list[Message], text: str, language: str) -> AsyncIterator[str]:
        yield str(self.answer(text, language))  # type: ignore[operator]


@pytest.mark.parametrize(
    ("label", "answer", "at_most"),
    [
        # What the avatar of issue 12 said to every question it could not place.
        (
            "old contradiction",
            lambda t, lang: "I'm sorry, I don't know that. I can only tell you about myself.",
            0.3,
        ),
        ("always honest", lambda t, lang: "I don't know.", 0.3),
        ("echo", lambda t, lang: t, 0.2),  # "Hi!" echoed is a greeting: only those pass
        ("silent", lambda t, lang: "", 0.0),
    ],
)
def test_checker_fails_responders_that_do_not_answer(
    gold: GoldSet, label: str, answer: object, at_most: float
) -> None:
    persona = PERSONA_PATH.read_text(encoding="utf-8")
    report = run_gold(gold, lambda: _Canned(answer), persona, "Ava")  # type: ignore[arg-type,return-value]
    scores = report.scores()
    assert all(entry["score"] <= at_most for entry in scores.values()), (label, scores)


def test_checker_fails_reading_out_every_fact_and_english_everywhere(gold: GoldSet) -> None:
    persona = PERSONA_PATH.read_text(encoding="utf-8")
    ava = PersonaResponder(persona, "Ava")
    everything = " ".join(f.said for f in ava.facts if f.language == "en")
    dump = run_gold(gold, lambda: _Canned(lambda t, lang: everything), persona, "Ava")  # type: ignore[arg-type,return-value]
    assert all(entry["score"] < 0.2 for entry in dump.scores().values())
    # The right facts in English, whatever the visitor's language.
    english = run_gold(
        gold,
        lambda: _Canned(lambda t, lang: ava.reply(t, "en")),  # type: ignore[arg-type,return-value]
        persona,
        "Ava",
    )
    scores = english.scores()
    assert scores["en"]["score"] >= 0.9
    assert scores["es"]["score"] < 0.3 and scores["zh"]["score"] < 0.3


def test_check_answer_names_what_is_wrong(gold: GoldSet) -> None:
    facts = persona_facts(gold, BAKER)
    assert {f.language for f in facts} == {"en", "es"}
    assert "origin" in next(f for f in facts if f.text.startswith("I am Lucía")).topics

    def problems(answer: str, expect: tuple[str, ...], lang: str = "en", earlier=()) -> list[str]:  # type: ignore[no-untyped-def]
        return check_answer(gold, facts, "Lucía", lang, answer, expect, list(earlier))

    assert problems("I am Lucía, a baker from Seville.", ("fact:origin",)) == []
    assert "states no persona fact on hobbies" in problems("I am Lucía.", ("fact:hobbies",))
    assert problems("I don't know where I'm from.", ("fact:origin",)) == [
        "states no persona fact on origin",
        "says it does not know where the persona has the answer",
    ]
    assert "not in es" in problems("I am Lucía, a baker from Seville.", ("name",), "es")
    assert "not in zh" in problems("Soy Lucía.", ("name",), "zh")
    assert problems("", ("greeting",)) == ["empty answer"]
    assert "repeats the previous answer" in problems("Hi!", ("greeting",), earlier=["Hi!"])
    assert any("too long" in p for p in problems("Hi! " * 100, ("greeting",)))
    unrelated = problems("I don't know. I speak Spanish and a little English.", ("honest",))
    assert any("unrelated persona fact" in p for p in unrelated)
    # Nothing on how she works: honest, or what every avatar of the program does.
    assert problems("I'm not sure, to be honest.", ("fact:how",)) == []
    assert problems("I listen through the microphone.", ("fact:how",)) == []
    assert problems("I love flamenco.", ("fact:how",)) != []


# ------------------------------------------------------------------------- avatar eval


def test_avatar_eval_dialogue_suite(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from realtime_avatar.evaluate.runner import run_suite

    monkeypatch.setenv("AVATAR_DATA_DIR", str(tmp_path / "data"))
    seen: list[tuple[str, int, int]] = []
    path = run_suite("dialogue", tmp_path / "report", lambda *a: seen.append(a))
    assert seen[-1][1] == seen[-1][2]
    report = json.loads(path.read_text(encoding="utf-8"))
    assert report["scenarios"] == []
    scores = {s["language"]: s for s in report["scores"] if s["metric"] == "dialogue.gold_score"}
    assert set(scores) == {"en", "es", "zh"}
    assert all(s["passed"] is True and s["threshold"] == "≥ 0.9" for s in scores.values())
    assert report["dialogue"]["persona_name"] == "Ava"
    assert len(report["dialogue"]["items"]) == len(load_gold().items)
    assert "dialogue.gold-checker" in report["instruments"]
    html = (path.parent / "report.html").read_text(encoding="utf-8")
    assert "Dialogue gold set" in html and "100% pass" in html
    assert not (tmp_path / "data" / "avatars").exists()  # nothing registered, no model run
