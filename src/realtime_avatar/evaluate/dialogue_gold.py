"""The dialogue gold set: does the avatar answer what visitors say sensibly, on any persona?

    python -m realtime_avatar.evaluate.dialogue_gold                  # the default avatar
    python -m realtime_avatar.evaluate.dialogue_gold --persona me.md --name Lucía

The items (``scenarios/dialogue_gold.yaml``) name no persona fact: what an answer must
state is read from the persona it is run on. This module is the checker; it knows nothing
of how a responder works and grades any ``Responder`` through its streaming ``respond``,
one fresh responder (one session) per item, with the item's earlier turns as history.

A turn passes when every expectation holds and nothing forbidden is in the answer (empty,
wrong language, too long, the previous answer again, "I don't know" where the persona
knows, "I don't know... I can only tell you about myself"). An item passes when all its
graded turns pass; the score of a language is the share of its items that pass.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import logging
import re
import sys
import time
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..dialogue.base import Message, Responder
from ..errors import AvatarError

GOLD_PATH = Path(__file__).resolve().parent / "scenarios" / "dialogue_gold.yaml"
LANGUAGES = ("en", "es", "zh")
SMALL_TALK_KINDS = ("greeting", "how_are_you", "thanks", "goodbye", "real", "capabilities")
FOLLOW_UPS = ("new_fact", "why")

_HAN = r"\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_HAN_CHAR = re.compile(f"[{_HAN}]")
_HAN_RUN = re.compile(f"[{_HAN}]+")
_LATIN_WORD = re.compile(r"[a-z0-9]+")
_HEADING = re.compile(r"^\s{0,3}#{1,6}\s+(.*?)\s*#*\s*$")
_BULLET = re.compile(r"^\s*(?:[-*+•]|\d+[.)])\s+(.*)$")
_SENTENCE = re.compile(r"(?<=[.!?])\s+|(?<=[。！？；])")
_MARKUP = re.compile(r"[*_`~]+|!?\[([^\]]*)\]\([^)]*\)")
# Words that carry no fact: a fact is matched on its content words only.
_STOPWORDS = frozenset(
    """a an the and or but of to in on at for with by from as is are am was were be been
    i me my mine you your it its this that these those so very just also too not no do
    does did have has had can will would there here what who how when where which
    el la los las un una unos unas y o de del al en con por para que es soy son mi mis tu
    tus su sus lo le se me te muy mas tambien como""".split()
)


class GoldSetError(AvatarError):
    """The dialogue gold-set file is missing or malformed."""


@dataclass(frozen=True)
class GoldTurn:
    """One thing the visitor says, and what the answer to it must hold (empty: context)."""

    say: str
    expect: tuple[str, ...] = ()


@dataclass(frozen=True)
class GoldItem:
    """One conversation of the gold set, in one language."""

    id: str
    language: str
    turns: tuple[GoldTurn, ...]
    note: str = ""


Cues = dict[str, tuple[re.Pattern[str], ...]]  # language -> patterns


@dataclass(frozen=True)
class GoldSet:
    """The items and every rule the checker applies, as read from the YAML file."""

    items: tuple[GoldItem, ...]
    fact_overlap: float
    max_chars: dict[str, int]
    instruction_headings: re.Pattern[str]
    markers: dict[str, Cues]
    small_talk: dict[str, Cues]
    topics: dict[str, Cues]
    topic_fallback: dict[str, str]
    function_words: dict[str, frozenset[str]]
    path: Path
    sha256: str

    def languages(self) -> tuple[str, ...]:
        """The languages of the items, in the usual order."""
        present = {item.language for item in self.items}
        return tuple(lang for lang in LANGUAGES if lang in present)


@dataclass(frozen=True)
class GoldFact:
    """One statement of the persona as the checker sees it."""

    text: str
    language: str
    topics: frozenset[str]
    tokens: frozenset[str]


@dataclass
class TurnResult:
    """The grade of one answer."""

    say: str
    answer: str
    expect: tuple[str, ...]
    problems: list[str] = field(default_factory=list)
    answer_ms: float = 0.0

    @property
    def graded(self) -> bool:
        """Whether the turn has expectations (context turns are only checked for faults)."""
        return bool(self.expect)

    @property
    def passed(self) -> bool:
        """No problem found."""
        return not self.problems


@dataclass
class ItemResult:
    """One item's turns and whether it passed."""

    item: GoldItem
    turns: list[TurnResult]

    @property
    def passed(self) -> bool:
        """All turns free of problems (context turns included: a contradiction is one)."""
        return all(turn.passed for turn in self.turns)

    def to_json(self) -> dict[str, Any]:
        """JSON-ready: the conversation, the answers and what was wrong."""
        return {
            "id": self.item.id,
            "language": self.item.language,
            "passed": self.passed,
            "turns": [
                {
                    "say": t.say,
                    "answer": t.answer,
                    "expect": list(t.expect),
                    "problems": t.problems,
                    "answer_ms": round(t.answer_ms, 3),
                }
                for t in self.turns
            ],
        }


@dataclass
class GoldReport:
    """The results of one run of the gold set on one persona."""

    results: list[ItemResult]
    persona_name: str
    responder: str
    facts_by_language: dict[str, int]

    def scores(self) -> dict[str, dict[str, Any]]:
        """Per language: items, passed, score (share passed, None without items)."""
        out: dict[str, dict[str, Any]] = {}
        for result in self.results:
            entry = out.setdefault(result.item.language, {"items": 0, "passed": 0})
            entry["items"] += 1
            entry["passed"] += int(result.passed)
        for entry in out.values():
            entry["score"] = entry["passed"] / entry["items"] if entry["items"] else None
        return out

    def answer_ms(self) -> tuple[float, float]:
        """Mean and largest time from the question to the whole answer, in ms."""
        times = [t.answer_ms for r in self.results for t in r.turns]
        return (sum(times) / len(times), max(times)) if times else (0.0, 0.0)

    def failures(self) -> list[ItemResult]:
        """The items that did not pass."""
        return [r for r in self.results if not r.passed]

    def to_json(self) -> dict[str, Any]:
        """JSON-ready: scores, timing and every item."""
        mean_ms, max_ms = self.answer_ms()
        return {
            "persona_name": self.persona_name,
            "responder": self.responder,
            "facts_by_language": self.facts_by_language,
            "scores": self.scores(),
            "answer_ms_mean": round(mean_ms, 3),
            "answer_ms_max": round(max_ms, 3),
            "items": [r.to_json() for r in self.results],
        }


# ------------------------------------------------------------------------- the YAML file


def _compile(patterns: Any, where: str) -> tuple[re.Pattern[str], ...]:
    if not isinstance(patterns, list) or not patterns:
        raise GoldSetError(f"{where}: expected a non-empty list of patterns")
    try:
        return tuple(re.compile(str(p), re.IGNORECASE) for p in patterns)
    except re.error as error:
        raise GoldSetError(f"{where}: bad pattern ({error})") from error


def _cues(raw: Any, where: str) -> Cues:
    if not isinstance(raw, dict):
        raise GoldSetError(f"{where}: expected a mapping of language to patterns")
    return {
        str(lang): _compile(patterns, f"{where}.{lang}")
        for lang, patterns in raw.items()
        if lang in LANGUAGES
    }


def _item(raw: Any, index: int, known: set[str]) -> GoldItem:
    where = f"items[{index}]"
    if not isinstance(raw, dict) or "id" not in raw or "turns" not in raw:
        raise GoldSetError(f"{where}: an item needs an 'id' and 'turns'")
    where = f"item {raw['id']}"
    language = str(raw.get("language", ""))
    if language not in LANGUAGES:
        raise GoldSetError(f"{where}: language must be one of {', '.join(LANGUAGES)}")
    turns = []
    for turn in raw["turns"]:
        if not isinstance(turn, dict) or not str(turn.get("say", "")).strip():
            raise GoldSetError(f"{where}: every turn needs a non-empty 'say'")
        expect = tuple(str(e) for e in turn.get("expect", []))
        unknown = [e for e in expect if e not in known]
        if unknown:
            raise GoldSetError(f"{where}: unknown expectation(s) {', '.join(unknown)}")
        turns.append(GoldTurn(str(turn["say"]), expect))
    if not any(turn.expect for turn in turns):
        raise GoldSetError(f"{where}: no turn says what the answer must hold ('expect')")
    return GoldItem(str(raw["id"]), language, tuple(turns), str(raw.get("note", "")))


def load_gold(path: Path | None = None) -> GoldSet:
    """Read and check the gold set (default: the one shipped with the package)."""
    import yaml

    path = Path(path or GOLD_PATH)
    try:
        raw_bytes = path.read_bytes()
        data = yaml.safe_load(raw_bytes)
    except OSError as error:
        raise GoldSetError(f"cannot read the dialogue gold set {path}: {error}") from error
    except yaml.YAMLError as error:
        raise GoldSetError(f"{path} is not valid YAML: {error}") from error
    if not isinstance(data, dict):
        raise GoldSetError(f"{path}: expected a mapping at the top level")
    try:
        markers = {k: _cues(v, f"markers.{k}") for k, v in data["markers"].items()}
        small_talk = {k: _cues(v, f"small_talk.{k}") for k, v in data["small_talk"].items()}
        topics: dict[str, Cues] = {}
        fallback: dict[str, str] = {}
        for topic, raw in data["topics"].items():
            raw = dict(raw)
            if "fallback" in raw:
                fallback[topic] = str(raw.pop("fallback"))
            topics[topic] = _cues(raw, f"topics.{topic}")
        known = {*small_talk, "name", "fact", "honest", *FOLLOW_UPS}
        known |= {f"fact:{topic}" for topic in topics}
        items = tuple(_item(raw, i, known) for i, raw in enumerate(data["items"]))
        gold = GoldSet(
            items=items,
            fact_overlap=float(data.get("fact_overlap", 0.6)),
            max_chars={str(k): int(v) for k, v in data["max_chars"].items()},
            instruction_headings=re.compile(str(data["instruction_headings"]), re.IGNORECASE),
            markers=markers,
            small_talk=small_talk,
            topics=topics,
            topic_fallback=fallback,
            function_words={
                str(k): frozenset(str(w).lower() for w in v)
                for k, v in data["function_words"].items()
            },
            path=path,
            sha256=hashlib.sha256(raw_bytes).hexdigest(),
        )
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise GoldSetError(
            f"{path}: malformed gold set ({type(error).__name__}: {error})"
        ) from error
    for name in ("honest", "exhausted", "only_about_myself"):
        if name not in markers:
            raise GoldSetError(f"{path}: markers.{name} is missing")
    ids = [item.id for item in items]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise GoldSetError(f"{path}: duplicate item id(s) {', '.join(duplicates)}")
    for kind, target in fallback.items():
        if target not in small_talk:
            raise GoldSetError(f"{path}: topics.{kind}.fallback names no small_talk kind")
    return gold


# ------------------------------------------------------------------ persona facts, words


def _fold(text: str) -> str:
    decomposed = unicodedata.normalize("NFD", text.lower())
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def tokens(text: str) -> frozenset[str]:
    """Content words (accents folded, a plural "s" dropped) and Chinese character pairs."""
    folded = _fold(text)
    out: set[str] = set()
    for run in _HAN_RUN.findall(folded):
        out.update(run[i : i + 2] for i in range(len(run) - 1))
        if len(run) == 1:
            out.add(run)
    for word in _LATIN_WORD.findall(folded):
        if word in _STOPWORDS:
            continue
        if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
            word = word[:-1]
        out.add(word)
    return frozenset(out)


def text_language(text: str, gold: GoldSet) -> str:
    """``zh``, ``es`` or ``en`` by plain cues: Han characters, then function words."""
    letters = [c for c in text if c.isalpha()]
    if letters and sum(bool(_HAN_CHAR.match(c)) for c in letters) >= 0.3 * len(letters):
        return "zh"
    words = re.findall(r"[\w']+", text.lower())
    english = sum(w in gold.function_words.get("en", ()) for w in words)
    spanish = sum(w in gold.function_words.get("es", ()) for w in words)
    if spanish > english or re.search(r"[ñ¿¡]", text):
        return "es"
    return "en"


def persona_facts(gold: GoldSet, persona_markdown: str) -> list[GoldFact]:
    """The persona's statements: bullets and sentences, less the how-to-talk sections."""
    pieces: list[str] = []
    skip = False
    for line in persona_markdown.splitlines():
        heading = _HEADING.match(line)
        if heading:
            skip = bool(gold.instruction_headings.search(heading.group(1)))
            continue
        if skip or not line.strip():
            continue
        bullet = _BULLET.match(line)
        body = _MARKUP.sub(lambda m: m.group(1) or "", bullet.group(1) if bullet else line)
        pieces.extend(p.strip() for p in _SENTENCE.split(body.strip()) if p.strip())
    facts = []
    for piece in pieces:
        language = text_language(piece, gold)
        found = frozenset(
            topic
            for topic, cues in gold.topics.items()
            if any(p.search(piece) for p in cues.get(language, ()))
        )
        words = tokens(piece)
        if words:
            facts.append(GoldFact(piece, language, found, words))
    return facts


def states(fact: GoldFact, answer_tokens: frozenset[str], overlap: float) -> bool:
    """Whether an answer (as its tokens) states ``fact``."""
    return len(fact.tokens & answer_tokens) >= overlap * len(fact.tokens)


# ---------------------------------------------------------------------------- the checker


def _any(cues: Cues, language: str, text: str) -> bool:
    return any(p.search(text) for p in cues.get(language, ()))


def _wrong_language(answer: str, language: str, name: str, gold: GoldSet) -> bool:
    """Whether ``answer`` is not in ``language`` (the avatar's name and acronyms aside)."""
    text = answer.replace(name, " ") if name else answer
    text = re.sub(r"\b[A-Z]{2,}s?\b", " ", text)  # CPU, NASA, AI are said in every language
    han = len(_HAN_CHAR.findall(text))
    if language == "zh":
        latin = len(re.findall(r"[A-Za-z]", text))
        return han < 2 or han < 0.5 * latin
    if han:
        return True
    return text_language(text, gold) != language and _decisive(text, language, gold)


def _decisive(text: str, language: str, gold: GoldSet) -> bool:
    """A short line ("Ava!") says nothing of its language; two foreign words do."""
    other = "es" if language == "en" else "en"
    words = re.findall(r"[\w']+", text.lower())
    foreign = sum(w in gold.function_words.get(other, ()) for w in words)
    return foreign >= 2 or (language == "en" and bool(re.search(r"[ñ¿¡]", text)))


def check_answer(
    gold: GoldSet,
    facts: list[GoldFact],
    name: str,
    language: str,
    answer: str,
    expect: tuple[str, ...],
    earlier: list[str],
) -> list[str]:
    """What is wrong with ``answer`` (empty: it is good); ``earlier``: this item's answers."""
    problems: list[str] = []
    if not re.search(r"\w", answer):
        return ["empty answer"]
    if _wrong_language(answer, language, name, gold):
        problems.append(f"not in {language}")
    limit = gold.max_chars.get(language)
    if limit and len(answer) > limit:
        problems.append(f"too long ({len(answer)} > {limit} characters)")
    if earlier and answer.strip() == earlier[-1].strip():
        problems.append("repeats the previous answer")
    honest = _any(gold.markers["honest"], language, answer)

    answer_tokens = tokens(answer)
    own = [f for f in facts if f.language == language]
    said_before = [tokens(text) for text in earlier]
    stated = [f for f in own if states(f, answer_tokens, gold.fact_overlap)]
    honesty_allowed = False
    for want in expect:
        if want in gold.small_talk:
            if not _any(gold.small_talk[want], language, answer):
                problems.append(f"no {want} line")
        elif want == "name":
            if name and name.lower() not in answer.lower():
                problems.append(f"does not say the name {name!r}")
        elif want == "fact" or want.startswith("fact:"):
            topic = want.partition(":")[2]
            wanted = [f for f in own if not topic or topic in f.topics]
            if wanted:
                if not any(f in stated for f in wanted):
                    problems.append(f"states no persona fact{' on ' + topic if topic else ''}")
            else:
                honesty_allowed = True
                fallback = gold.topic_fallback.get(topic)
                if not honest and not (
                    fallback and _any(gold.small_talk[fallback], language, answer)
                ):
                    problems.append(
                        f"the persona says nothing{' on ' + topic if topic else ''} in "
                        f"{language}: expected an honest answer"
                    )
        elif want in FOLLOW_UPS:
            unsaid = [
                f for f in own if not any(states(f, b, gold.fact_overlap) for b in said_before)
            ]
            new = [f for f in stated if f in unsaid]
            if want == "why":
                honesty_allowed = True
                if not new and not honest:
                    problems.append("neither a new persona fact nor an honest answer to 'why'")
            elif unsaid:
                if not new:
                    problems.append("states no persona fact it had not said yet")
            else:
                honesty_allowed = True
                if not honest and not _any(gold.markers["exhausted"], language, answer):
                    problems.append("every fact was said: expected 'that's all I know'")
        elif want == "honest":
            honesty_allowed = True
            if not honest:
                problems.append("no honest 'I don't know'")
            unrelated = [f for f in facts if states(f, answer_tokens, gold.fact_overlap)]
            if unrelated:
                problems.append(f"states an unrelated persona fact: {unrelated[0].text!r}")
    if honest and not honesty_allowed:
        # Every turn of the set without an expectation asks about the avatar itself.
        if _any(gold.markers["only_about_myself"], language, answer):
            problems.append("contradiction: does not know, yet can 'only talk about myself'")
        elif expect:
            problems.append("says it does not know where the persona has the answer")
    return problems


async def _answer(responder: Responder, history: list[Message], text: str, lang: str) -> str:
    return "".join([delta async for delta in responder.respond(list(history), text, lang)])


async def _run_item(
    gold: GoldSet, item: GoldItem, responder: Responder, facts: list[GoldFact], name: str
) -> ItemResult:
    """One conversation on one fresh responder, each answer graded as it comes."""
    history: list[Message] = []
    earlier: list[str] = []
    turns = []
    try:
        for turn in item.turns:
            started = time.perf_counter()
            answer = await _answer(responder, history, turn.say, item.language)
            elapsed_ms = (time.perf_counter() - started) * 1000.0
            problems = check_answer(gold, facts, name, item.language, answer, turn.expect, earlier)
            turns.append(TurnResult(turn.say, answer, turn.expect, problems, elapsed_ms))
            history.extend([Message("user", turn.say), Message("assistant", answer)])
            earlier.append(answer)
    finally:
        close = getattr(responder, "aclose", None)
        if callable(close):
            await close()
    return ItemResult(item, turns)


def run_gold(
    gold: GoldSet,
    make_responder: Callable[[], Responder],
    persona_markdown: str,
    name: str,
    languages: tuple[str, ...] | None = None,
) -> GoldReport:
    """Run every item (of ``languages``) on fresh responders and grade the answers."""
    facts = persona_facts(gold, persona_markdown)
    results = []
    responder_name = ""
    for item in gold.items:
        if languages and item.language not in languages:
            continue
        responder = make_responder()
        responder_name = getattr(responder, "name", type(responder).__name__)
        results.append(asyncio.run(_run_item(gold, item, responder, facts, name)))
    counts = {lang: sum(f.language == lang for f in facts) for lang in LANGUAGES}
    return GoldReport(results, name, responder_name, counts)


def run_persona_gold(persona_markdown: str, name: str, gold: GoldSet | None = None) -> GoldReport:
    """The gold set on the offline persona responder built from ``persona_markdown``."""
    from ..dialogue.persona import PersonaResponder

    gold = gold or load_gold()
    return run_gold(gold, lambda: PersonaResponder(persona_markdown, name), persona_markdown, name)


INSTRUMENT = "dialogue.gold-checker"
INSTRUMENT_DESCRIPTION = {
    "measures": (
        "share of the dialogue gold set's items (scenarios/dialogue_gold.yaml) answered "
        "well, per language: required small-talk cues, the avatar's name, persona facts "
        "read from the avatar's own persona (content-word or character-pair overlap), "
        "honest 'I don't know' where the persona has nothing; forbidden: empty, wrong "
        "language, too long, repeats, contradictions"
    ),
    "independent_of": (
        "the responder's topic patterns and retrieval: the checker has its own cue lists "
        "and fact splitter, and grades the streamed text only"
    ),
}


def avatar_persona(avatar: str, settings: Any) -> tuple[str, str, str]:
    """The persona text, display name and source of a registered avatar, loading no model.

    The default avatar not registered yet is read from the package (it is registered
    from there on first use).
    """
    from importlib import resources

    from ..avatars.registry import DEFAULT_AVATAR, avatars_dir, list_avatars, validate_name
    from ..errors import AvatarNotFoundError

    name = validate_name(avatar)
    path = avatars_dir(settings) / name / "persona.md"
    if path.is_file():
        text = path.read_text(encoding="utf-8")
        source = str(path)
    elif name == DEFAULT_AVATAR:
        asset = resources.files("realtime_avatar") / "assets" / "default" / "persona.md"
        text = asset.read_text(encoding="utf-8")
        source = "realtime_avatar/assets/default/persona.md (not registered yet)"
    else:
        known = ", ".join(list_avatars(settings)) or "none yet"
        raise AvatarNotFoundError(f"no avatar named {name!r} (registered: {known})")
    display = persona_title(text) or name.replace("-", " ").replace("_", " ").title()
    return text, display, source


def eval_dialogue(avatar: str, settings: Any) -> tuple[list[Any], dict[str, Any]]:
    """What ``avatar eval`` reports: one score per language and the report's section."""
    from .scores import Score

    gold = load_gold()
    persona, display, source = avatar_persona(avatar, settings)
    report = run_persona_gold(persona, display, gold)
    scores = []
    for lang, entry in report.scores().items():
        scores.append(
            Score(
                "dialogue",
                "dialogue.gold_score",
                float(entry["score"]),
                "share",
                INSTRUMENT,
                "dialogue",
                detail=f"{entry['passed']}/{entry['items']} items, persona of {display}",
                language=lang,
            )
        )
    mean_ms, max_ms = report.answer_ms()
    scores.append(
        Score(
            "dialogue",
            "dialogue.answer_ms",
            mean_ms,
            "ms",
            INSTRUMENT,
            "latency",
            detail=f"question to whole streamed answer, mean (max {max_ms:.1f} ms)",
        )
    )
    section = {
        **report.to_json(),
        "avatar": avatar,
        "persona_source": source,
        "gold_set": {"path": gold.path.name, "sha256": gold.sha256, "items": len(gold.items)},
    }
    return scores, section


def format_report(report: GoldReport, failures: bool = True) -> str:
    """A plain-text table of the scores, and each failing item's answers and problems."""
    lines = [f"dialogue gold set · {report.responder} responder · persona {report.persona_name}"]
    for lang, entry in report.scores().items():
        score = entry["score"]
        lines.append(
            f"  {lang}: {entry['passed']}/{entry['items']} = {score:.0%}"
            f"  (persona facts in {lang}: {report.facts_by_language.get(lang, 0)})"
        )
    mean_ms, max_ms = report.answer_ms()
    lines.append(f"  answer time: mean {mean_ms:.2f} ms, max {max_ms:.2f} ms")
    if failures:
        for result in report.failures():
            lines.append(f"FAIL {result.item.id}")
            for turn in result.turns:
                mark = "  " if turn.passed else "!!"
                lines.append(f"  {mark} > {turn.say}\n     < {turn.answer}")
                lines += [f"       - {problem}" for problem in turn.problems]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Command line: the gold set on a persona file, scores per language (and failures)."""
    parser = argparse.ArgumentParser(description="Grade the persona responder on the gold set.")
    parser.add_argument("--persona", type=Path, default=None, help="persona Markdown file")
    parser.add_argument("--name", default=None, help="the avatar's name (default: the title)")
    parser.add_argument("--gold", type=Path, default=None, help="another gold-set file")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument("-q", "--quiet", action="store_true", help="scores only, no failures")
    args = parser.parse_args(argv)
    # A persona with no facts makes every fresh responder warn: the scores say it once.
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.persona is None:
            from importlib import resources

            persona = (
                resources.files("realtime_avatar") / "assets" / "default" / "persona.md"
            ).read_text(encoding="utf-8")
        else:
            try:
                persona = args.persona.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as error:
                raise GoldSetError(f"cannot read the persona {args.persona}: {error}") from error
        name = args.name or persona_title(persona) or "Avatar"
        report = run_persona_gold(persona, name, load_gold(args.gold))
    except AvatarError as error:
        sys.stderr.write(f"error: {error.message}\n")
        return 2
    sys.stdout.write(format_report(report, failures=not args.quiet) + "\n")
    if args.json:
        args.json.write_text(
            json.dumps(report.to_json(), indent=1, ensure_ascii=False), encoding="utf-8"
        )
    return 0


def persona_title(persona_markdown: str) -> str:
    """The name in a persona's first-level title ("# Ava, the demo" -> "Ava"), or ""."""
    for line in persona_markdown.splitlines():
        match = re.match(r"^#\s+([^,:(\-–—]+)", line.strip())
        if match and match.group(1).strip():
            return match.group(1).strip()
    return ""


if __name__ == "__main__":
    sys.exit(main())
