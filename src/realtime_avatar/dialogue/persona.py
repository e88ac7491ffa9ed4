"""The offline responder: answers from the avatar's persona file by retrieval.

No model and no download: the persona's Markdown is cut into facts, each fact is indexed
with BM25 over word stems (and character n-grams for Chinese), and a question is answered
with the best one or two facts. A small table of paraphrases and bilingual synonyms lets
"who are you", "¿cómo te llamas?" and "你叫什么名字" all find the fact that names the
avatar. Small talk (greetings, thanks, jokes...) has canned replies in English, Spanish and
Mandarin, and a question that matches nothing well gets an honest "I don't know" rather
than an unrelated fact.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import unicodedata
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from ..text.language import normalize_language_code
from .base import Message
from .lines import LINES
from .topics import (
    ABOUT,
    HOBBIES,
    HOW,
    IDENTITY,
    LANGUAGES,
    ORIGIN,
    REAL,
    WHY,
    WORK,
    asked_topics,
    fact_topics,
    follow_up,
    gives_a_reason,
)

_LOGGER = logging.getLogger(__name__)

REPLY_LANGUAGES = ("en", "es", "zh")

# Scoring thresholds, tuned on the default persona and a set of off-topic questions
# (tests/test_dialogue.py): a fact is used only when it explains at least this share of
# the question's weight, so one shared common word ("make", "where") is not enough.
_MIN_COVERAGE = 0.5
_MIN_SCORE = 0.4
_SECOND_FACT_RATIO = 0.8  # a second fact is added only when nearly as good as the first
_BM25_K1 = 1.2
_BM25_B = 0.75
# About two sentences: every reply is spoken, and the persona says "brief".
_MAX_REPLY_CHARS = {"en": 260, "es": 280, "zh": 110}
# What to say on a topic the persona has nothing on: an honest line, or a line about what
# every avatar of this program does (its languages, how it works).
_UNKNOWN = {
    WORK: "unknown_work",
    ORIGIN: "unknown_origin",
    HOBBIES: "unknown_hobbies",
    HOW: "how",
    LANGUAGES: "languages",
}

# Headings whose bullets tell the avatar how to talk, not facts about it.
_STYLE_HEADING = re.compile(
    r"style|tone|manner|behaviou?r|instruction|rule|guideline|estilo|tono|风格|语气|说话方式",
    re.IGNORECASE,
)

_HAN = r"\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_HAN_RUN = re.compile(f"[{_HAN}]+")
_LATIN_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
_CONTRACTION = re.compile(r"'(?:s|re|m|ll|ve|d|t)$")
_HEADING = re.compile(r"^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
_BULLET = re.compile(r"^\s*(?:[-*+•]|\d+[.)])\s+(.*)$")
_SENTENCE_END = re.compile(r"(?<=[.!?。！？])\s+|(?<=[。！？])")
_MARKDOWN_LINK = re.compile(r"!?\[([^\]]*)\]\([^)]*\)")
_MARKDOWN_MARKS = re.compile(r"[*`~]+|(?<!\w)_+|_+(?!\w)")

_EN_STOPWORDS = frozenset(
    """a about above after again all also am an and any are as at be been being both but by
    can could did do does doing done for from had has have having he her here hers him his
    how i if in into is it its just let me more most much my no nor not of off on once only
    or other our out over please really same she should so some such tell than that the their
    them then there these they this those to too under up very was we were what when where
    which while who whom why will with would you your yours yourself ok okay know want like
    thing things say said something anything get got go going well one need needs use uses
    using require requires""".split()
)
_ES_STOPWORDS = frozenset(
    """a al algo como con cual cuales cuando de del donde el ella ellas ellos en era eres es
    esa ese eso esta estas este esto estos fue ha han hay la las le les lo los mas me mi mis
    muy no nos o para pero por porque que quien quienes se si sin sobre son su sus tambien te
    ti tu tus un una uno unos y ya yo puedes puedo dime decir sabes saber quieres necesitas
    necesito necesita tienes tengo tiene usas usar""".split()
)
# Function characters that glue Chinese questions together ("你在哪里运行？"): dropped before
# n-grams so that only content characters are matched.
_ZH_STOP_CHARS = frozenset(
    "的了吗呢吧啊呀嘛么是在你您我他她它们什哪谁怎样这那个和与及也都就还很有吗请问告诉一下"
)
# Function words of two characters ("你需要联网吗？" asks about the network, not a need).
_ZH_STOP_WORDS = ("需要", "可以", "能够", "什么", "怎么", "知道", "是不是", "有没有")

# Bilingual synonyms: each surface form (English, Spanish without accents, or Chinese) maps
# to canonical English stems. Facts are usually written in English, so this table is what
# lets Spanish and Mandarin questions find them. Extend it when a persona needs more.
_SYNONYMS: dict[str, tuple[str, ...]] = {}
_ZH_SYNONYMS: dict[str, tuple[str, ...]] = {}


def _add_synonyms(canonical: tuple[str, ...], *forms: str) -> None:
    for form in forms:
        table = _ZH_SYNONYMS if _HAN_RUN.fullmatch(form) else _SYNONYMS
        table[form] = canonical


_add_synonyms(
    ("name",), "name", "named", "called", "call", "nombre", "llamas", "llamo", "名字", "叫"
)
_add_synonyms(
    ("run",), "run", "runs", "running", "hosted", "host", "work", "works", "working",
    "funcionas", "funciona", "funcionar", "funciono", "ejecutas", "corres", "运行", "跑", "工作",
)  # fmt: skip
_add_synonyms(
    ("computer",), "computer", "pc", "laptop", "machine", "device", "local", "locally",
    "ordenador", "computadora", "maquina", "dispositivo", "电脑", "计算机", "本地",
)  # fmt: skip
_add_synonyms(
    ("cpu",), "cpu", "gpu", "processor", "hardware", "procesador", "处理器", "显卡",
)  # fmt: skip
_add_synonyms(
    ("cloud",), "cloud", "server", "servers", "internet", "online", "offline", "network",
    "nube", "servidor", "servidores", "red", "云", "云端", "服务器", "联网", "网络", "离线",
)  # fmt: skip
_add_synonyms(
    ("download",), "download", "downloads", "install", "descargar", "descarga", "instalar",
    "下载", "安装",
)  # fmt: skip
_add_synonyms(
    ("speak",), "speak", "speaks", "talk", "talks", "hablas", "habla", "hablar", "hablo",
    "说", "讲",
)  # fmt: skip
_add_synonyms(
    ("language",), "language", "languages", "idioma", "idiomas", "lengua", "lenguas",
    "语言", "外语",
)  # fmt: skip
_add_synonyms(("english", "language"), "english", "ingles", "英语", "英文")
_add_synonyms(("spanish", "language"), "spanish", "espanol", "西班牙语", "西语")
_add_synonyms(
    ("mandarin", "language"), "mandarin", "chinese", "mandarin", "chino", "中文", "汉语",
    "普通话", "华语",
)  # fmt: skip
_add_synonyms(
    ("face",), "face", "faces", "look", "looks", "appearance", "photo", "photos", "picture",
    "image", "portrait", "cara", "rostro", "foto", "imagen", "retrato", "脸", "长相", "照片",
    "相貌", "外表", "图片",
)  # fmt: skip
_add_synonyms(
    ("voice",), "voice", "voices", "sound", "sounds", "voz", "声音", "嗓音", "语音",
)  # fmt: skip
_add_synonyms(
    ("listen",), "listen", "listens", "hear", "hears", "microphone", "mic", "escuchas", "escucho",
    "escuchar", "oyes", "oir", "microfono", "听", "麦克风", "话筒",
)  # fmt: skip
_add_synonyms(
    ("make",), "make", "made", "makes", "create", "created", "creates", "build", "built",
    "crear", "hacer", "creo", "creaste", "hizo", "创建", "制作", "做", "创造",
)  # fmt: skip
_add_synonyms(("own",), "own", "propio", "propia", "自己的")
_add_synonyms(
    ("avatar",), "avatar", "avatars", "twin", "clone", "gemelo", "clon", "数字人", "化身",
    "分身",
)  # fmt: skip
_add_synonyms(("open", "source"), "opensource", "开源")
_add_synonyms(("free",), "free", "gratis", "gratuito", "免费")
# Longer Chinese words first, so that "西班牙语" is taken before "语言"-like pieces of it.
_ZH_FORMS_LONGEST_FIRST = sorted(_ZH_SYNONYMS, key=len, reverse=True)

# Question paraphrases that carry meaning in their function words: each becomes a concept
# token in the question, and facts get the same token from what they say. The matched span
# is consumed, so "are you a robot" leaves no unmatched word behind.
_IDENTITY = "@identity"
_WHERE = "@where"
_QUESTION_CONCEPTS: tuple[tuple[str, re.Pattern[str]], ...] = (
    (
        _IDENTITY,
        re.compile(
            r"\bwho\s+(?:are|r)\s+(?:you|u)\b|\bwhat\s+are\s+you\b|\byour\s+name\b"
            r"|\bwhat\s+(?:should|do|can)\s+i\s+call\s+you\b|\bintroduce\s+yourself\b"
            r"|\babout\s+yourself\b|\bare\s+you\s+(?:a|an|the)?\s*(?:robot|human|person|real|"
            r"bot|ai|machine|computer)\b|\bwho\s+is\s+this\b|\bwho\s+am\s+i\s+(?:talking|speaking)"
            r"\s+(?:to|with)\b|\bwho\s+(?:made|created|built|developed|designed)\s+you\b"
            r"|c[oó]mo\s+te\s+llamas|qui[eé]n\s+eres|tu\s+nombre|qu[eé]\s+eres|pres[eé]ntate"
            r"|h[aá]blame\s+de\s+ti|eres\s+(?:un|una)?\s*(?:robot|humano|humana|persona|real)"
            r"|qui[eé]n\s+te\s+(?:cre[oó]|hizo)|谁(?:创造|制作|开发|做)了你|你是谁|您是谁|你叫什么|你的名字|介绍一下你自己|介绍你自己|你是什么|你是机器人|你是真人",
            re.IGNORECASE,
        ),
    ),
    (_WHERE, re.compile(r"\bwhere\b|d[oó]nde|哪里|哪儿|在哪", re.IGNORECASE)),
)
_FACT_CONCEPTS: tuple[tuple[str, re.Pattern[str]], ...] = (
    (
        _WHERE,
        re.compile(
            r"\b(?:runs?|running|computer|cloud|server|locally|hosted|based|lives?|located)\b"
            r"|\b(?:funciono|ordenador|computadora|nube|servidor|vivo)\b|运行|电脑|本地|云|服务器",
            re.IGNORECASE,
        ),
    ),
)
# A fact names the avatar when it says "I am <name>", "my name is", "<name> is"...
_IDENTITY_FACT = (
    r"\b(?:i\s+am|i'm|my\s+name\s+is|called|named|soy|me\s+llamo)\s+{name}\b"
    r"|^{name}\b|我是{name}|我叫{name}"
)

# Small talk, matched before retrieval. Patterns cover all three languages at once, since
# the reply language comes from the ``language`` argument, not from the question.
_SMALL_TALK: tuple[tuple[str, re.Pattern[str]], ...] = (
    (
        "greeting",
        re.compile(
            r"^\W*(?:hi|hello|hey|hiya|howdy|greetings|good\s+(?:morning|afternoon|evening)"
            r"|hola|buen[oa]s(?:\s+(?:d[ií]as|tardes|noches))?|saludos"
            r"|你好|您好|嗨|哈喽|早上好|下午好|晚上好|大家好)\b\W*(?:there\b\W*)?",
            re.IGNORECASE,
        ),
    ),
    (
        "nice_to_meet",
        re.compile(
            r"\b(?:(?:it'?s\s+)?(?:nice|pleased|glad|good)\s+to\s+meet\s+(?:you|u)|nice\s+meeting\s+you)"
            r"\b|encantad[oa]\s+de\s+conocerte|mucho\s+gusto|un\s+placer\s+conocerte"
            r"|很高兴认识你|认识你很高兴|幸会",
            re.IGNORECASE,
        ),
    ),
    (
        "how_are_you",
        re.compile(
            r"\bhow\s+(?:are|r)\s+(?:you|u)(?:\s+doing)?(?:\s+today)?\b|\bhow'?s\s+it\s+going\b"
            r"|\bhow\s+do\s+you\s+do\b|\bhow\s+are\s+things\b|\bwhat'?s\s+up\b"
            r"|c[oó]mo\s+est[aá]s|qu[eé]\s+tal|c[oó]mo\s+te\s+va"
            r"|你好吗|您好吗|你怎么样|最近好吗|最近怎么样|过得怎么样|过得好吗",
            re.IGNORECASE,
        ),
    ),
    (
        "thanks",
        re.compile(
            r"\b(?:thanks|thank\s+you|thx|cheers|muchas\s+gracias|gracias)\b|谢谢|多谢|感谢",
            re.IGNORECASE,
        ),
    ),
    (
        "goodbye",
        re.compile(
            r"\b(?:bye|goodbye|good\s+night|see\s+you(?:\s+later)?|farewell|adi[oó]s"
            r"|hasta\s+(?:luego|pronto|ma[nñ]ana|la\s+vista)|chao|chau)\b|再见|拜拜|回头见|晚安",
            re.IGNORECASE,
        ),
    ),
    (
        "capabilities",
        re.compile(
            r"\bwhat\s+(?:can|could)\s+you\s+do\b|\bhow\s+can\s+you"
            r"\s+help\b|\bwhat\s+are\s+you\s+(?:able\s+to\s+do|good\s+at|for)\b"
            r"|qu[eé]\s+(?:puedes|sabes)\s+hacer|c[oó]mo\s+(?:me\s+)?puedes\s+ayudar"
            r"|你能做什么|你会做什么|你可以做什么|你有什么功能|你能干什么|你会什么",
            re.IGNORECASE,
        ),
    ),
    (
        "joke",
        re.compile(
            r"\bjokes?\b|\bmake\s+me\s+laugh\b|\bsomething\s+funny\b|\bchistes?\b"
            r"|hazme\s+re[ií]r|algo\s+gracioso|笑话|逗我笑|讲个段子",
            re.IGNORECASE,
        ),
    ),
    (
        "ack",
        re.compile(
            r"^\W*(?:(?:hmm+|mm+|oh|ah|well|so)\W*)?(?:ok(?:ay)?|yes|yeah|yep|sure|cool|nice|great|alright|all\s+right|i\s+see"
            r"|got\s+it|awesome|no|nope|vale|s[ií]|claro|genial|bueno|de\s+acuerdo|entiendo"
            r"|好的|好吧|嗯|是的|明白了|明白|知道了|不错|没有|不是)\W*$",
            re.IGNORECASE,
        ),
    ),
)

# Small talk that may come before a real question ("Hi, what's your name?").
_PREFIX_INTENTS = frozenset({"greeting", "nice_to_meet", "thanks", "ack"})


@dataclass(slots=True)
class Fact:
    """One retrievable statement of the persona, with its index terms."""

    text: str
    language: str
    section: str
    terms: Counter[str] = field(default_factory=Counter)
    said: str = ""  # as the avatar says it: in the first person, ending in a full stop
    topics: dict[str, int] = field(default_factory=dict)  # topic -> cue strength (1 or 2)
    identity: bool = False  # it names the avatar ("I am Ava...")


def _fold_accents(text: str) -> str:
    """``"¿Cómo estás?"`` → ``"¿Como estas?"``; Han characters pass through unchanged."""
    decomposed = unicodedata.normalize("NFD", text)
    return "".join(char for char in decomposed if not unicodedata.combining(char))


def _stem(word: str) -> str:
    """A light suffix stripper for English and Spanish: enough to join "runs" and "run"."""
    if word.endswith("'s"):
        word = word[:-2]
    if len(word) <= 3:
        return word
    for suffix in ("ing", "ed"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            word = word[: -len(suffix)]
            # "running" → "runn" → "run"
            if len(word) >= 3 and word[-1] == word[-2] and word[-1] not in "lsz":
                word = word[:-1]
            return word
    if word.endswith("ies") and len(word) > 4:
        return word[:-3] + "y"
    if word.endswith("es") and word[-3:-2] in ("s", "x", "z", "h") and len(word) > 4:
        return word[:-2]
    if word.endswith("s") and not word.endswith("ss"):
        return word[:-1]
    return word


def _language_of(text: str) -> str:
    """``zh``, ``es`` or ``en`` for a fact, by cheap cues (no model needed for a persona)."""
    if sum(len(run) for run in _HAN_RUN.findall(text)) >= 0.2 * max(len(text.strip()), 1):
        return "zh"
    words = _LATIN_WORD.findall(_fold_accents(text.lower()))
    spanish = sum(word in _ES_STOPWORDS and word not in _EN_STOPWORDS for word in words)
    english = sum(word in _EN_STOPWORDS and word not in _ES_STOPWORDS for word in words)
    if spanish > english or re.search(r"[ñ¿¡]", text):
        return "es"
    return "en"


def _terms(text: str, keep_han: bool = True) -> list[str]:
    """Index terms of ``text``: canonical stems of content words, Chinese n-grams, synonyms."""
    lowered = _fold_accents(text.lower())
    terms: list[str] = []
    # Chinese: known words become canonical terms and are cut out; the rest becomes
    # character unigrams and bigrams of the content characters.
    for run in _HAN_RUN.findall(lowered):
        remainder = run
        for form in _ZH_FORMS_LONGEST_FIRST:
            if form in remainder:
                terms.extend(_ZH_SYNONYMS[form])
                remainder = remainder.replace(form, " ")
        if not keep_han:
            continue
        for word in _ZH_STOP_WORDS:
            remainder = remainder.replace(word, " ")
        for segment in re.split(
            r"\s+", "".join(" " if c in _ZH_STOP_CHARS else c for c in remainder)
        ):
            terms.extend(segment)
            terms.extend(segment[i : i + 2] for i in range(len(segment) - 1))
    for word in _LATIN_WORD.findall(lowered):
        word = _CONTRACTION.sub("", word)
        if word in _EN_STOPWORDS or word in _ES_STOPWORDS:
            continue
        canonical = _SYNONYMS.get(word) or _SYNONYMS.get(_stem(word))
        terms.extend(canonical if canonical else (_stem(word),))
    return terms


def _clean_markdown(text: str) -> str:
    text = _MARKDOWN_LINK.sub(r"\1", text)
    return re.sub(r"\s+", " ", _MARKDOWN_MARKS.sub("", text)).strip()


def _split_sentences(text: str) -> list[str]:
    return [piece.strip() for piece in _SENTENCE_END.split(text) if piece.strip()]


def parse_persona(markdown: str) -> list[Fact]:
    """Facts of a persona file: each bullet, or each sentence of a paragraph, under a heading.

    Sections about style ("## Style", "## Tone"...) are instructions, not facts, and are left
    out. A bullet of more than two sentences is cut into sentences so that answers stay short.
    """
    facts: list[Fact] = []
    section = ""
    skip = False
    paragraph: list[str] = []
    bullet: list[str] = []

    def flush() -> None:
        if bullet and not skip:
            text = _clean_markdown(" ".join(bullet))
            sentences = _split_sentences(text)
            for piece in [text] if len(sentences) <= 2 else sentences:
                facts.append(Fact(piece, _language_of(piece), section))
        if paragraph and not skip:
            for sentence in _split_sentences(_clean_markdown(" ".join(paragraph))):
                facts.append(Fact(sentence, _language_of(sentence), section))
        bullet.clear()
        paragraph.clear()

    for line in markdown.splitlines():
        heading = _HEADING.match(line)
        item = _BULLET.match(line)
        if heading:
            flush()
            section = _clean_markdown(heading.group(2))
            skip = bool(_STYLE_HEADING.search(section))
        elif item:
            flush()
            bullet.append(item.group(1))
        elif not line.strip():
            flush()
        elif bullet:
            bullet.append(line.strip())  # a bullet wrapped onto the next line
        else:
            paragraph.append(line.strip())
    flush()
    return facts


_THIRD_PERSON_VERBS = {"is": "am", "was": "was", "has": "have", "does": "do", "'s": "'m"}


def _conjugate_first_person(verb: str) -> str:
    """``"speaks"`` → ``"speak"``, ``"is"`` → ``"am"``: the verb after a subject made "I"."""
    lowered = verb.lower()
    if lowered in _THIRD_PERSON_VERBS:
        return _THIRD_PERSON_VERBS[lowered]
    if lowered.endswith("ies") and len(lowered) > 4:
        return verb[:-3] + "y"
    if re.search(r"(?:ss|sh|ch|x|z|o)es$", lowered):
        return verb[:-2]
    if lowered.endswith("s") and not lowered.endswith("ss") and len(lowered) > 2:
        return verb[:-1]
    return verb


def to_first_person(fact: str, name: str) -> str:
    """Rephrase an English fact about ``name`` in the first person where that is easy.

    ``"Ava speaks English."`` → ``"I speak English."``; ``"Her voice is synthetic."`` →
    ``"My voice is synthetic."`` Facts already in the first person are returned as they are.
    """
    if re.search(r"\b(?:I|I'm|my|me|myself)\b", fact):
        return fact
    first = re.escape(name.split()[0]) if name.strip() else None
    subject = rf"(?:{first}|she|he)" if first else r"(?:she|he)"

    def subject_verb(match: re.Match[str]) -> str:
        return "I " + _conjugate_first_person(match.group(1))

    text = re.sub(rf"\b{subject}\s+([A-Za-z]+)\b", subject_verb, fact, flags=re.IGNORECASE)
    text = re.sub(rf"\b{subject}('s)(?=\s+(?:a|an|the|not|\w+ing)\b)", "I'm", text, flags=re.I)
    if first:
        text = re.sub(rf"\b{first}'s\b", "my", text)
    text = re.sub(r"\b(?:his|her)(?=\s+[a-z])", "my", text, flags=re.IGNORECASE)
    text = re.sub(r"\b(?:him|her)\b", "me", text, flags=re.IGNORECASE)
    text = re.sub(r"\b(?:himself|herself)\b", "myself", text, flags=re.IGNORECASE)
    # Keep the capital at the start and "I" upper case wherever it landed.
    text = re.sub(r"(?<![\w'])i(?=[\s'])", "I", text)
    text = re.sub(r"(?<=[.!?]\s)my\b|^my\b", "My", text)
    return text


def word_deltas(text: str) -> list[str]:
    """Cut a reply into word-sized deltas that join back to exactly ``text``.

    Latin words carry their leading space and trailing punctuation; Chinese goes out two
    characters at a time, with the punctuation that follows.
    """
    pattern = re.compile(rf"\s*(?:[{_HAN}]{{1,2}}[^\s\w]*|[^\s{_HAN}]+)|\s+$")
    deltas = pattern.findall(text)
    assert "".join(deltas) == text, "word_deltas must not lose characters"
    return deltas


def _join(lang: str, first: str, second: str) -> str:
    """Two pieces of a reply, with a space between them except in Chinese."""
    if not first:
        return second
    return f"{first}{'' if lang == 'zh' else ' '}{second}"


class _Index:
    """BM25 over the facts' terms."""

    def __init__(self, facts: list[Fact]) -> None:
        self.facts = facts
        self.count = len(facts)
        self.average_length = (
            sum(sum(fact.terms.values()) for fact in facts) / self.count if self.count else 1.0
        )
        self.document_frequency: Counter[str] = Counter()
        for fact in facts:
            self.document_frequency.update(set(fact.terms))

    def idf(self, term: str) -> float:
        frequency = self.document_frequency.get(term, 0)
        return math.log(1.0 + (self.count - frequency + 0.5) / (frequency + 0.5))

    def score(self, fact: Fact, query: set[str]) -> tuple[float, float]:
        """BM25 score of ``fact`` and the share of the query's weight it matches."""
        length = sum(fact.terms.values()) or 1
        norm = _BM25_K1 * (1.0 - _BM25_B + _BM25_B * length / self.average_length)
        score = 0.0
        matched = 0.0
        total = 0.0
        for term in query:
            weight = self.idf(term)
            total += weight
            frequency = fact.terms.get(term, 0)
            if frequency:
                matched += weight
                score += weight * frequency * (_BM25_K1 + 1.0) / (frequency + norm)
        return score, (matched / total if total else 0.0)


class PersonaResponder:
    """Answers from the persona file; the embedded default, no model needed.

    Questions about the avatar itself ("tell me about yourself", "where are you from?")
    are placed on topics (``topics.py``) and answered with the persona's facts on that
    topic; follow-ups ("tell me more", "why?") read the history for what was said; other
    questions go to retrieval, which answers with a fact only when it matches well. Facts
    are said in the reply language when the persona has facts in it (a persona may carry
    its facts in several languages), and never in another one.

    One instance per session: it rotates its jokes and "I don't know" lines. What was
    already said comes from the history the engine passes in, never from this object, so
    a reply started speculatively and dropped leaves nothing behind.
    """

    name = "persona"

    def __init__(self, persona_markdown: str, name: str) -> None:
        self.avatar_name = name.strip() or "your avatar"
        self.facts = parse_persona(persona_markdown)
        first = re.escape(_fold_accents(self.avatar_name.split()[0].lower()))
        identity = re.compile(_IDENTITY_FACT.format(name=first), re.IGNORECASE)
        has_han = any(fact.language == "zh" for fact in self.facts)
        self._keep_han = has_han  # Chinese n-grams of a question can only match Chinese facts
        for fact in self.facts:
            fact.terms.update(_terms(fact.text))
            said = (
                to_first_person(fact.text, self.avatar_name) if fact.language == "en" else fact.text
            )
            if said[-1:] not in ".!?。！？":
                said += "。" if fact.language == "zh" else "."
            fact.said = said
            fact.topics = fact_topics(said)
            if identity.search(_fold_accents(fact.text)):
                # Saying "I am Ava" is stating the name, whether or not it says "name".
                fact.identity = True
                fact.terms[_IDENTITY] += 1
                fact.terms["name"] += 1
            for concept, pattern in _FACT_CONCEPTS:
                if pattern.search(fact.text):
                    fact.terms[concept] += 1
        self._index = _Index(self.facts)
        self._first_name = self.avatar_name.split()[0]
        self._name_term = _stem(_fold_accents(self._first_name.lower()))
        self._turns: Counter[str] = Counter()
        if not self.facts:
            _LOGGER.warning("Persona of %s has no facts; every question gets 'I don't know'", name)

    async def respond(self, history: list[Message], text: str, language: str) -> AsyncIterator[str]:
        """Stream the reply as word-sized deltas; the first one comes at once."""
        reply = self.reply(text, language, history)
        for delta in word_deltas(reply):
            yield delta
            # Hand the loop back between words (no delay): the consumer sees each delta
            # as a separate step, as it would from a model.
            await asyncio.sleep(0)

    def reply(self, text: str, language: str, history: list[Message] | None = None) -> str:
        """The whole reply to ``text`` in ``language`` (en, es or zh; English otherwise).

        ``history`` is the conversation so far; follow-ups read it, and facts already
        said are not said again when another one will do.
        """
        lang = normalize_language_code(language or "en")
        if lang not in REPLY_LANGUAGES:
            lang = "en"
        question = text.strip()
        if not re.search(r"\w", question):
            return self._line(lang, "empty")
        history = history or []

        intents: list[str] = []
        rest = question
        for intent, pattern in _SMALL_TALK:
            if pattern.search(rest):
                intents.append(intent)
                rest = pattern.sub(" ", rest)
        # A topic's facts are ranked by every word of the question ("how do you HEAR me?").
        topic_query = set(_terms(rest, keep_han=self._keep_han)) - {self._name_term}
        asked = asked_topics(rest)
        rest = asked.rest
        kind = None if asked.topics else follow_up(rest)
        concepts: set[str] = set()
        for concept, pattern in _QUESTION_CONCEPTS:
            if pattern.search(rest):
                concepts.add(concept)
                rest = pattern.sub(" ", rest)
        query = set(_terms(rest, keep_han=self._keep_han)) | concepts

        # These intents are the whole message ("tell me a joke" leaves "tell" behind).
        whole = [intent for intent in intents if intent not in _PREFIX_INTENTS]
        if intents:
            # Calling the avatar by name ("good morning, Ava") asks nothing.
            query -= {self._name_term}
        prefix = ""
        if "greeting" in intents or "nice_to_meet" in intents:
            prefix = self._line(lang, "greeting_short")
        elif "thanks" in intents:
            prefix = self._line(lang, "thanks_short")
        said = self._said(history)
        if "goodbye" in whole or (whole and not asked.topics):
            return _join(lang, prefix, self._line(lang, whole[0]))
        if asked.topics:
            return _join(lang, prefix, self._on_topics(asked.topics, topic_query, lang, said))
        if kind is not None:
            return _join(lang, prefix, self._follow_up(kind, lang, said, history))
        if not query:
            if "nice_to_meet" in intents:
                return self._line(lang, "nice_to_meet")
            return self._line(lang, intents[0] if intents else "dont_know")
        # Content left besides a greeting or thanks: answer it, after a short prefix.
        answer = self._answer(query, lang, said)
        if answer is None:
            # Small talk with a leftover word that matches nothing ("hi there friend") is
            # still small talk; a real question after "hi" still gets "I don't know".
            if intents and len(query) <= 1 and not concepts:
                kind_of = "nice_to_meet" if "nice_to_meet" in intents else intents[0]
                return self._line(lang, kind_of)
            answer = self._line(lang, "dont_know")
        return _join(lang, prefix, answer)

    # ------------------------------------------------------------------ questions about me

    def _pool(self, lang: str) -> list[Fact] | None:
        """The facts to answer from in ``lang``; None when the persona has none in it."""
        pool = [fact for fact in self.facts if fact.language == lang]
        return pool or None

    def _on_topics(
        self, topics: tuple[str, ...], query: set[str], lang: str, said: set[int]
    ) -> str:
        """One piece per topic asked (a fact, or an honest or product line), in order."""
        pool = self._pool(lang)
        pieces: list[str] = []
        chosen: list[Fact] = []

        def add_fact(fact: Fact) -> None:
            chosen.append(fact)
            pieces.append(fact.said)

        for topic in topics:
            if topic == REAL:
                pieces.append(self._line(lang, "real"))
                continue
            if topic in (IDENTITY, ABOUT):
                me = next((f for f in pool or () if f.identity), None)
                if me is not None and me not in chosen:
                    if self._first_name.lower() not in me.said.lower():
                        # "Marco is a sailor" said as "I am a sailor" lost the name.
                        pieces.append(self._line(lang, "identity"))
                    add_fact(me)
                elif me is None and not chosen:
                    pieces.append(self._line(lang, "identity"))
                if topic == ABOUT and set(topics) <= {ABOUT, IDENTITY}:
                    extra = self._introduction(pool or [], chosen, said)
                    if extra is not None:
                        add_fact(extra)
                    elif pool is None and self.facts:
                        pieces.append(self._line(lang, "other_language"))
                    else:
                        pieces.append(self._line(lang, "about_nothing_more"))
                continue
            if pool is None:
                # What every avatar does can be said; the persona's own facts cannot.
                product = topic in (HOW, LANGUAGES) or not self.facts
                pieces.append(self._line(lang, _UNKNOWN[topic] if product else "other_language"))
                continue
            fact = self._best_on(topic, pool, query, chosen, said)
            if fact is not None:
                add_fact(fact)
            else:
                pieces.append(self._line(lang, _UNKNOWN[topic]))
        return self._fit(dict.fromkeys(pieces), lang)

    def _best_on(
        self, topic: str, pool: list[Fact], query: set[str], chosen: list[Fact], said: set[int]
    ) -> Fact | None:
        """The persona's best fact on ``topic``: a strong cue, about this topic alone."""
        ranked = []
        for position, fact in enumerate(pool):
            strength = fact.topics.get(topic, 0)
            if not strength or fact in chosen:
                continue
            others = sum(1 for t, s in fact.topics.items() if t != topic and s >= strength)
            score = self._index.score(fact, query)[0] if query else 0.0
            unsaid = id(fact) not in said
            ranked.append(((strength, -others, score, unsaid, -position), fact))
        if not ranked:
            return None
        return max(ranked, key=lambda item: item[0])[1]

    def _introduction(self, pool: list[Fact], chosen: list[Fact], said: set[int]) -> Fact | None:
        """A second fact for "tell me about yourself": my work, what I like, where I'm from."""
        for topic in (WORK, HOBBIES, ORIGIN):
            for fact in pool:
                if fact.topics.get(topic) == 2 and fact not in chosen and id(fact) not in said:
                    return fact
        return next((f for f in pool if f not in chosen and not f.identity), None)

    def _follow_up(self, kind: str, lang: str, said: set[int], history: list[Message]) -> str:
        """An answer to "tell me more" or "why?", from what the history says was asked."""
        pool = self._pool(lang)
        if pool is None:
            return self._line(lang, "why" if kind == WHY else "about_nothing_more")
        last_question = next((m.text for m in reversed(history) if m.role == "user"), "")
        last_topics = set(asked_topics(last_question).topics) - {ABOUT, IDENTITY, REAL}
        # Who I am comes last: "anything else?" wants something new about me, not my name.
        unsaid = sorted((f for f in pool if id(f) not in said), key=lambda f: f.identity)
        if kind == WHY:
            reasons = [f for f in unsaid if gives_a_reason(f.text)]
            on_topic = [f for f in reasons if last_topics & set(f.topics)]
            reason = (on_topic or reasons)[:1]
            return reason[0].said if reason else self._line(lang, "why")
        if not unsaid:
            return self._line(lang, "exhausted")
        on_topic = [f for f in unsaid if last_topics & set(f.topics)]
        return (on_topic or unsaid)[0].said

    def _fit(self, pieces: dict[str, None], lang: str) -> str:
        """Join the pieces of a reply, leaving out the last ones that would make it long."""
        kept: list[str] = []
        for piece in pieces:
            if kept and sum(map(len, kept)) + len(piece) > _MAX_REPLY_CHARS[lang]:
                break
            kept.append(piece)
        return ("" if lang == "zh" else " ").join(kept)

    def _said(self, history: list[Message]) -> set[int]:
        """The facts the avatar has already said in this conversation (as ``id``s)."""
        spoken = "".join(
            _squash(message.text) for message in history if message.role == "assistant"
        )
        if not spoken:
            return set()
        return {id(fact) for fact in self.facts if _squash(fact.said).rstrip(".。") in spoken}

    # -------------------------------------------------------------------------- retrieval

    def _answer(self, query: set[str], lang: str, said: set[int]) -> str | None:
        """The best one or two facts for ``query``, or None when nothing matches well."""
        pool = self._pool(lang)
        ranked = []
        for position, fact in enumerate(pool or self.facts):
            score, coverage = self._index.score(fact, query)
            if score >= _MIN_SCORE and coverage >= _MIN_COVERAGE:
                ranked.append((score, -position, fact))
        if not ranked:
            _LOGGER.debug("No fact matches %s", sorted(query))
            return None
        ranked.sort(key=lambda item: (item[0], item[1]), reverse=True)
        best_score, _, best = ranked[0]
        chosen = [best]
        if len(ranked) > 1 and ranked[1][0] >= _SECOND_FACT_RATIO * best_score:
            second = ranked[1][2]
            if len(best.said) + len(second.said) <= 220:
                chosen.append(second)
        _LOGGER.debug("Answering %s with %s", sorted(query), [fact.text for fact in chosen])
        if pool is None:
            # Facts in another language only: the name needs no translation; the rest is
            # not said in a language the listener did not choose. A match on a question
            # word alone ("where") is no sign that the persona knows the answer.
            if _IDENTITY in query:
                return self._line(lang, "identity")
            if not any(term in best.terms for term in query - {_IDENTITY, _WHERE}):
                return None
            return self._line(lang, "other_language")
        return self._fit(dict.fromkeys(fact.said for fact in chosen), lang)

    def _line(self, lang: str, kind: str, **values: str) -> str:
        """A canned line, rotating through the variants of ``kind`` in this session."""
        variants = LINES[lang][kind]
        turn = self._turns[kind]
        self._turns[kind] += 1
        return variants[turn % len(variants)].format(name=self.avatar_name, **values)


def _squash(text: str) -> str:
    """Text without spaces, lower-cased: how a fact is found in a reply the engine joined."""
    return re.sub(r"\s+", "", text).lower()
