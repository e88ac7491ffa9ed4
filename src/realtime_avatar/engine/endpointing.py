"""The end-of-turn decision: has the user finished, or only paused?

A silence timer cannot tell "Tell me about your job." from "I was wondering if … you
could tell me about your job": both stop for a while. ``TurnDecider`` weighs three things
at every pause the VAD reports:

- the words so far (the recognizer's ``peek()``): a sentence cannot end on "the", "and",
  "um", "I would like to know", a dangling comma or a list still growing
  (``words_finished``: a score in 0..1 with its reasons, English, Spanish and Mandarin);
- how it was said: the smart-turn v3.2 model (``SmartTurnModel``: Whisper-style log-mel
  of the last 8 s, a sigmoid "turn complete"), shipped in the ``pipecat-ai`` wheel and
  run here with onnxruntime on one thread, without pipecat's runtime;
- how long the silence has lasted.

Words and prosody are combined as independent evidence (a weighted sum of log-odds, the
words weighing three times more: the model is confident on fragments like "maybe we
could", and unreliable on synthetic speech; tuned on the English pause set of
tests/test_endpointing.py: at a 2 s bound, 1-2 cut-ins of 22 against 10 with equal
weights, and complete questions still released at the first pause decision). The
combined confidence ``c`` sets the silence the turn needs before release,
``max_wait_ms * (1 - c) ** 2``: a clear question (c ≈ 0.99) is released at the first
pause decision, an even guess (c = 0.5) after a quarter of the bound, a dangling "the"
only when the bound itself has passed, so nobody waits forever.
"""

from __future__ import annotations

import importlib.util
import logging
import math
import re
import threading
import time
import unicodedata
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ..constants import ASR_RATE_HZ
from ..settings import Settings, get_settings

log = logging.getLogger(__name__)

# Defaults, also declared in settings.py (turn_*), where they are documented.
MAX_WAIT_MS = 2000.0  # an unfinished-sounding turn is released after this much silence
RECHECK_MS = 200.0  # while holding, ask again at least this often (prosody may change)
MIN_WAIT_MS = 20.0  # never ask again sooner than one VAD frame
WORDS_WEIGHT = 3.0  # words' log-odds weigh more than the model's (tuned on the pause set)
PROSODY_WEIGHT = 1.0
PROSODY_CLIP = 0.03  # the model's probabilities are clipped to [0.03, 0.97]
CURVE = 2.0  # needed silence = max_wait_ms * (1 - confidence) ** CURVE

SMART_TURN_FILE = "smart-turn-v3.2-cpu.onnx"
SMART_TURN_SUBDIR = ("audio", "turn", "smart_turn", "data")

# ---------------------------------------------------------------------------------------
# Words: does the transcript end in a way a sentence cannot?
# ---------------------------------------------------------------------------------------

# Scores: the chance that the words are finished, by what the ending is.
STRONG_UNFINISHED = 0.03  # an article, a conjunction, an opening frame
FILLER = 0.1  # "um", "eh", "嗯"
DANGLING_COMMA = 0.1
ELLIPSIS = 0.15
PREPOSITION = 0.15  # "tell me about"
PREPOSITION_IN_QUESTION = 0.4  # "where are you from": stranded prepositions end questions
DANGLING_SUBJECT = 0.15  # "and then I"
MODAL = 0.3  # "maybe we could"
OPEN_LIST = 0.1  # "apples, pears, bananas" with no "and" yet
GUESSED_OBJECT = 0.2  # "about it": what the recognizer writes for a phrase cut short
QUESTION = 0.92  # "?" from the recognizer, or 吗/呢
SOFT_QUESTION = 0.75  # 吧
FULL_STOP = 0.6  # the recognizer puts a full stop after fragments too: weak evidence
# Whisper ends a complete sentence with a mark and often leaves a phrase cut off by a pause
# without one ("I need to buy eggs milk"); a recognizer that never punctuates says nothing.
NO_PUNCTUATION = 0.2
NO_PUNCTUATION_UNPUNCTUATED = 0.55  # the recognizer writes no punctuation at all
NO_WORDS = 0.5


def _words(text: str) -> set[str]:
    return set(text.split())


_EN = {
    "determiner": _words("a an the my your our their its every"),
    "conjunction": _words("and but or nor because cause 'cause although if unless whether than"),
    "preposition": _words(
        "of to for with about from into at by between towards toward through onto during without"
    ),
    "filler": _words("um umm uh uhh uhm erm er hmm mm mmm eh ah"),
    # Fillers that are also ordinary last words ("I think so", "doing well", "what is it
    # like"): fillers only alone, after a comma, or after another filler or conjunction.
    "soft_filler": _words("so well like actually basically anyway okay right"),
    "subject": _words("i we they he she"),
    "modal": _words("could would should might can will must shall"),
    "question_word": _words(
        "what where who whom which when why how do does did is are was were can could would "
        "will should have has"
    ),
    "wh_word": _words("what where who whom which when why how"),
    # Verbs after which "that" opens a clause: "I think that", "I heard that".
    "that_verb": _words(
        "think know say said says believe hope mean sure guess feel realize realise heard "
        "read thought knew told seems true so"
    ),
    # Short items that are not list items: "Well, yes, I think so."
    "discourse": _words(
        "well so yes no yeah oh okay ok right now and but hi hello hey please sorry thanks "
        "too though then again"
    ),
    "list_join": _words("and or"),
}
# Words after which English can end on "to": "do you want to?", "I have to".
_EN_TO_ELLIPSIS = _words(
    "want wants wanted have has had need needs going got like love try able supposed used "
    "ought mean meant wanna plan hope agreed refuse refused forgot"
)
# Phrases that follow a comma without being list items.
_DISCOURSE_PHRASES = {
    "thank you",
    "of course",
    "you know",
    "i think",
    "i guess",
    "i mean",
    "por favor",
    "muchas gracias",
    "de nada",
    "por supuesto",
    "claro que sí",
}
_HEDGES = _words("maybe perhaps quizás quizá tal")
_EN_SUBORDINATORS = _words("if because although though unless whenever while once since")
_EN_AUX = _words("do does did is are was were have has")
_EN_PRONOUNS = _words("you i we they he she it")
_EN_DUMMY_OBJECTS = _words("it this that them")
_EN_PARTICLES = _words("after before in on around over")

_ES = {
    "determiner": _words(
        "el la los las un una unos unas mi mis tu tus su sus nuestro nuestra nuestros "
        "nuestras al del cada esta estos estas"
    ),
    "conjunction": _words("y e o u pero porque que ni sino aunque si cuando como donde mientras"),
    "preposition": _words("de a en con por para sin sobre entre hacia hasta desde según contra"),
    # "este" is both a determiner and the commonest Spanish filler: either way not an end.
    "filler": _words("eh ehm em emm mmm mm este pues ah"),
    "soft_filler": _words("bueno entonces vale osea digamos"),
    "subject": _words("yo nosotros nosotras"),
    "modal": set(),
    "question_word": _words("qué dónde quién quiénes cuál cuáles cuándo cómo cuánto cuánta"),
    "that_verb": set(),
    "wh_word": _words("qué dónde quién quiénes cuál cuáles cuándo cómo cuánto cuánta"),
    "discourse": _words("bueno sí si no pues entonces vale hola y pero gracias"),
    "list_join": _words("y e o u"),
}

_EN_WH = r"(?: (?:what|if|whether|why|how|where|who|when|which|that))?"
_EN_FRAMES = [
    r"(?:i|i'd|i would|i'd really|i would really) (?:like|love|want|wanted|wanna) to "
    r"(?:know|ask|hear|learn|understand)(?: you)?" + _EN_WH,
    r"i (?:want|wanted|wanna) to (?:know|ask)(?: you)?" + _EN_WH,
    # "wondering it": Whisper's usual mishearing of "wondering if".
    r"i (?:was|am|'m) (?:wondering|curious)(?: if| whether| about| it)?",
    r"i'm (?:wondering|curious)(?: if| whether| about| it)?",
    r"i wonder" + _EN_WH,
    r"(?:can|could|would|will) you (?:please )?(?:tell|show|explain to|remind) me" + _EN_WH,
    r"(?:can|could|would|will) you (?:please )?explain" + _EN_WH,
    r"(?:do|did) you (?:happen to )?know" + _EN_WH,
    r"(?:let me|may i|can i) ask(?: you)?",
    r"(?:my|the|one) question is",
    r"what i (?:want|wanted|would like|'d like) to (?:know|ask) is",
    r"the thing is(?: that)?",
    r"is it true(?: that)?",
    r"i (?:was )?(?:thinking|going to say|gonna say)(?: that)?",
]
_ES_FRAMES = [
    r"(?:quisiera|quiero|quería|me gustaría|me gustaria) (?:saber|preguntar(?:te|le)?|"
    r"conocer|entender)",
    r"me preguntaba(?: si)?",
    r"(?:puedes|podrías|podrias|puede|podría|podria|me puedes|me podrías|me podrias)"
    r" (?:decirme|contarme|explicarme|decir|contar|explicar)",
    r"(?:mi|la|una) pregunta es",
    r"estaba pensando(?: que| en| si)?",
    r"lo que (?:quiero|quería|quisiera) saber es",
]
_ZH_FRAMES = (
    "我想知道",
    "我想问",
    "我想问一下",
    "我想问你",
    "想问你一下",
    "问你一下",
    "我想请问",
    "请问",
    "你能告诉我",
    "你可以告诉我",
    "能不能告诉我",
    "可以告诉我",
    "告诉我",
    "我想了解",
    "我在想",
    "我很好奇",
    "我的问题是",
    "问题是",
    "我想说",
)
_ZH_CONJUNCTIONS = (
    "和",
    "跟",
    "与",
    "而且",
    "但是",
    "可是",
    "不过",
    "因为",
    "所以",
    "如果",
    "或者",
    "然后",
    "并且",
    "虽然",
    "而",
    "还有",
    "就是说",
    "以及",
    "要是",
)
_ZH_FILLERS = ("嗯", "呃", "额", "那个", "就是", "那么", "嗯嗯", "这个嘛")
_ZH_LONE_FILLERS = {"啊", "嗯", "呃", "额", "哦", "那个", "这个", "就是"}
# Whisper often writes Mandarin in traditional characters: those the rules use, simplified.
_ZH_SIMPLIFIED = str.maketrans(
    "問們這個為還關於對從與雖並後請訴說嗎麼誰幾會題話給讓樣覺應該",
    "问们这个为还关于对从与虽并后请诉说吗么谁几会题话给让样觉应该",
)
_ZH_COVERBS = ("把", "被", "关于", "对于", "从", "比", "向", "往", "对")
_ZH_QUESTION_WORDS = ("谁", "什么", "哪", "怎么", "为什么", "几", "多少", "吗", "呢")

_COMPILED_FRAMES = {
    "en": re.compile(r"(?:^|\s)(?:" + "|".join(_EN_FRAMES) + r")$"),
    "es": re.compile(r"(?:^|\s)(?:" + "|".join(_ES_FRAMES) + r")$"),
}
_WORD_RE = re.compile(r"[\w'’]+")
_TRAILING_PUNCT = " \t\n.!?,;:-—–…\"'»«)(¿¡。！？，、；：~"


@dataclass(frozen=True)
class WordsVerdict:
    """How finished the words sound: ``score`` in 0..1 (1: a finished sentence), and why."""

    score: float
    reasons: tuple[str, ...]


def _rules_language(language: str, text: str) -> str:
    code = language.strip().lower().replace("_", "-").split("-", 1)[0]
    if code in ("cmn", "yue", "chinese"):
        code = "zh"
    if code not in ("en", "es", "zh"):
        # "auto" or an unknown code: Han characters mean Mandarin, else English rules.
        han = sum(1 for ch in text if "\u4e00" <= ch <= "\u9fff")
        code = "zh" if han and han * 2 >= len(text.replace(" ", "")) else "en"
    return code


def _ending_punctuation(text: str) -> str:
    """The punctuation after the last word or character, normalised (NFKC: "，" -> ",")."""
    stripped = text.rstrip()
    end = len(stripped)
    while end and stripped[end - 1] in _TRAILING_PUNCT and stripped[end - 1] not in " \t\n":
        end -= 1
    return stripped[end:].replace("…", "...").replace("、", ",")


def _punctuation_score(punct: str) -> tuple[float, str] | None:
    """A verdict from the closing punctuation alone, or None when it says nothing."""
    if ".." in punct or "~" in punct:
        return ELLIPSIS, "ends in an ellipsis"
    if any(mark in punct for mark in ",;:-—–"):
        return DANGLING_COMMA, "ends on a comma"
    return None


def _closing_score(punct: str, punctuated: bool) -> tuple[float, str]:
    if "?" in punct:
        return QUESTION, "a question mark"
    if "." in punct or "!" in punct or "。" in punct:
        return FULL_STOP, "a full stop (weak: fragments get one too)"
    if not punctuated:
        return NO_PUNCTUATION_UNPUNCTUATED, "no punctuation (the recognizer writes none)"
    return NO_PUNCTUATION, "no closing punctuation (the recognizer's sign of a cut-off phrase)"


def _latin_signals(
    body: str, original: str, rules: dict[str, set[str]], lang: str
) -> list[tuple[float, str]]:
    """Unfinished endings of English or Spanish text (``body``: lower case, no end marks)."""
    words = [w.replace("’", "'") for w in _WORD_RE.findall(body)]
    if not words:
        return []
    signals: list[tuple[float, str]] = []
    last = words[-1]
    before = words[-2] if len(words) > 1 else ""
    first = words[0]
    frame = _COMPILED_FRAMES[lang].search(" ".join(words))
    if frame:
        signals.append(
            (
                STRONG_UNFINISHED,
                f"an opening frame with nothing after it: '{frame.group(0).strip()}'",
            )
        )
    if last in rules["determiner"]:
        signals.append((STRONG_UNFINISHED, f"ends on the determiner '{last}'"))
    if last in rules["conjunction"]:
        signals.append((STRONG_UNFINISHED, f"ends on the conjunction '{last}'"))
    if last in rules["filler"]:
        signals.append((FILLER, f"ends on the filler '{last}'"))
    if last in rules["soft_filler"]:
        after_comma = re.search(r"[,;]\s*" + re.escape(last) + r"\W*$", original.lower())
        if (
            len(words) == 1
            or after_comma
            or before in rules["filler"]
            or before in rules["conjunction"]
        ):
            signals.append((FILLER, f"ends on the filler '{last}'"))
    is_question = first in rules["question_word"] or "¿" in original
    wh_question = first in rules["wh_word"] or "¿" in original
    asked = original.rstrip().endswith("?")
    if last in rules["preposition"] and (not asked or not wh_question):
        # A stranded preposition ends wh-questions ("Where are you from?"), not yes/no
        # ones: "Can you help me with?" is a question cut short.
        if is_question and not asked:
            signals.append((PREPOSITION_IN_QUESTION, f"a question ending on '{last}'"))
        else:
            signals.append((PREPOSITION, f"ends on the preposition '{last}'"))
    if last in rules["subject"] and len(words) > 1 and not is_question:
        signals.append((DANGLING_SUBJECT, f"ends on the subject '{last}'"))
    if last in rules["modal"] and len(words) > 1 and not is_question:
        signals.append((MODAL, f"ends on the modal '{last}' with no verb"))
    if lang == "en" and last == "to" and before not in _EN_TO_ELLIPSIS:
        # "the best way to": only "want to", "have to"... end a sentence on "to".
        signals.append((STRONG_UNFINISHED, f"'{before} to' with its verb to come"))
    if (
        lang == "en"
        and len(words) >= 3
        and last in _EN_DUMMY_OBJECTS
        and before in rules["preposition"] | _EN_PARTICLES
    ):
        # Whisper finishes a phrase cut off by a pause with "it" or "this" ("Tell me
        # about it.", "What do you think about this?"): an ending that proves little.
        signals.append(
            (GUESSED_OBJECT, f"ends on '{before} {last}' (often the recognizer's guess)")
        )
    if last in _HEDGES and len(words) > 1:
        # "Do you think that maybe": a hedge opens the clause it qualifies.
        strong = before in rules["conjunction"] or before in ("that", "think", "and", "so")
        signals.append(
            (STRONG_UNFINISHED if strong else MODAL, f"ends on '{last}' with its clause to come")
        )
    if len(words) == 2 and first in rules["modal"] | _EN_AUX and last in _EN_PRONOUNS:
        signals.append((MODAL, f"only '{first} {last}': the question's verb is to come"))
    second = words[1] if len(words) > 1 else ""
    if (
        lang == "en"
        and len(words) >= 3
        and not asked
        and "," not in original
        and (first in _EN_SUBORDINATORS or (first == "when" and second in _EN_PRONOUNS))
    ):
        # "When I wake up in the morning": a clause that opens with a subordinator waits
        # for its main clause ("When do you open?" is a question: an auxiliary follows).
        signals.append((FILLER, f"a '{first}' clause with no main clause yet"))
    if last == "that" and before in rules["that_verb"]:
        signals.append((STRONG_UNFINISHED, f"'{before} that' with its clause to come"))
    list_signal = _open_list(body, rules)
    if list_signal:
        signals.append(list_signal)
    return signals


def _open_list(body: str, rules: dict[str, set[str]]) -> tuple[float, str] | None:
    """ "apples, pears, bananas" or "eggs, milk": short items after a comma, no "and" yet."""
    items = [item.strip() for item in re.split(r"[,、]", body)]
    items = [i for i in items if i and i not in rules["discourse"] and i not in _DISCOURSE_PHRASES]
    if len(items) < 2 or any(len(i.split()) > 3 for i in items[1:]):
        return None
    if len(items) == 2 and (len(items[0].split()) < 3 or len(items[1].split()) > 1):
        return None  # "Thanks, Mike.": two items need a longer lead-in and a one-word last
    if any(w in rules["list_join"] for w in items[-1].split()):
        return None
    return OPEN_LIST, f"a list of {len(items)} items with no 'and' before the last"


def _zh_signals(body: str, punct: str) -> list[tuple[float, str]]:
    """Unfinished endings of Mandarin text (``body``: no end marks)."""
    compact = re.sub(r"\s+", "", body).translate(_ZH_SIMPLIFIED)
    if compact in _ZH_LONE_FILLERS:
        return [(FILLER, f"only the filler '{compact}'")]
    if not compact:
        return []
    signals: list[tuple[float, str]] = []
    for frame in _ZH_FRAMES:
        if compact.endswith(frame):
            signals.append(
                (STRONG_UNFINISHED, f"an opening frame with nothing after it: '{frame}'")
            )
            break
    for word in _ZH_CONJUNCTIONS:
        if compact.endswith(word):
            signals.append((STRONG_UNFINISHED, f"ends on the conjunction '{word}'"))
            break
    for word in _ZH_FILLERS:
        if compact.endswith(word) and compact != "就是":
            signals.append((FILLER, f"ends on the filler '{word}'"))
            break
    if compact.endswith("这个") and len(compact) > 2:
        signals.append((MODAL, "ends on '这个' (a filler, or 'this one')"))
    for word in _ZH_COVERBS:
        if compact.endswith(word) and len(compact) > len(word):
            signals.append((PREPOSITION, f"ends on the coverb '{word}'"))
            break
    asks = any(q in compact for q in _ZH_QUESTION_WORDS)
    if compact.endswith("的") and len(compact) > 1 and "?" not in punct:
        if asks:
            signals.append((PREPOSITION_IN_QUESTION, "a question ending on '的'"))
        else:
            signals.append((PREPOSITION, "ends on '的' (a noun to come, or a final '的')"))
    if compact.endswith("是") and len(compact) > 1 and not compact.endswith("不是"):
        signals.append((PREPOSITION, "ends on '是' with nothing after it"))
    items = [i for i in re.split(r"[,、]", body) if i.strip()]
    if len(items) >= 3 and all(len(i.strip()) <= 6 for i in items[1:]):
        if not any(j in items[-1] for j in ("和", "或", "还有", "以及")):
            signals.append(
                (OPEN_LIST, f"a list of {len(items)} items with no '和' before the last")
            )
    return signals


def _zh_closing(body: str, punct: str) -> tuple[float, str]:
    compact = re.sub(r"\s+", "", body).translate(_ZH_SIMPLIFIED)
    if "?" in punct or compact.endswith(("吗", "呢", "么", "嘛")):
        return QUESTION, "a question mark or question particle"
    if compact.endswith("吧"):
        return SOFT_QUESTION, "ends on the particle '吧'"
    # Whisper often leaves Mandarin unpunctuated: a missing mark says little there.
    return _closing_score(punct, False)


def words_finished(transcript: str, language: str, *, punctuated: bool = True) -> WordsVerdict:
    """How finished ``transcript`` sounds as a turn, in ``language`` (en, es, zh; others
    are judged by English rules, or Mandarin ones when the text is mostly Han).

    ``punctuated``: the recognizer ends sentences with marks (Whisper), so a missing one
    hints at a phrase cut short; False for one that never punctuates (PocketSphinx).
    """
    text = unicodedata.normalize("NFKC", transcript).strip()
    if not _WORD_RE.search(text):
        return WordsVerdict(NO_WORDS, ("no words",))
    lang = _rules_language(language, text)
    punct = _ending_punctuation(text)
    body = text.rstrip(_TRAILING_PUNCT).strip()
    signals: list[tuple[float, str]] = []
    from_punct = _punctuation_score(punct)
    if from_punct:
        signals.append(from_punct)
    if lang == "zh":
        signals.extend(_zh_signals(body, punct))
        closing = _zh_closing(body, punct)
    else:
        rules = _EN if lang == "en" else _ES
        signals.extend(_latin_signals(body.lower(), text, rules, lang))
        closing = _closing_score(punct, punctuated)
    if signals:
        score = min(s for s, _ in signals)
        reasons = tuple(r for _, r in sorted(signals))
        return WordsVerdict(score, reasons)
    return WordsVerdict(closing[0], (closing[1],))


# ---------------------------------------------------------------------------------------
# Prosody: the smart-turn v3.2 model
# ---------------------------------------------------------------------------------------

WINDOW_S = 8  # smart-turn reads the last 8 s
N_FFT = 400  # 25 ms windows
HOP = 160  # 10 ms hops
N_MELS = 80
WINDOW_SAMPLES = WINDOW_S * ASR_RATE_HZ
N_FRAMES = WINDOW_SAMPLES // HOP  # 800


def _slaney_mel(hz: np.ndarray | float) -> np.ndarray:
    """Hz to mels, Slaney's scale: linear to 1 kHz, logarithmic above (as Whisper uses)."""
    hz = np.asarray(hz, dtype=np.float64)
    linear = hz * 3.0 / 200.0
    log_part = 15.0 + np.log(np.maximum(hz, 1e-9) / 1000.0) * (27.0 / np.log(6.4))
    return np.where(hz >= 1000.0, log_part, linear)


def _slaney_hz(mel: np.ndarray) -> np.ndarray:
    mel = np.asarray(mel, dtype=np.float64)
    linear = mel * 200.0 / 3.0
    log_part = 1000.0 * np.exp((mel - 15.0) * (np.log(6.4) / 27.0))
    return np.where(mel >= 15.0, log_part, linear)


def _mel_filters() -> np.ndarray:
    """(N_MELS, N_FFT // 2 + 1) triangular filters, 0-8 kHz, each of unit area (Slaney)."""
    edges_hz = _slaney_hz(np.linspace(_slaney_mel(0.0), _slaney_mel(ASR_RATE_HZ / 2), N_MELS + 2))
    bins_hz = np.linspace(0.0, ASR_RATE_HZ / 2, N_FFT // 2 + 1)
    lower, centre, upper = edges_hz[:-2, None], edges_hz[1:-1, None], edges_hz[2:, None]
    rising = (bins_hz[None, :] - lower) / (centre - lower)
    falling = (upper - bins_hz[None, :]) / (upper - centre)
    filters = np.clip(np.minimum(rising, falling), 0.0, None)
    return filters * (2.0 / (upper - lower))


_FILTERS = _mel_filters()
_HANN = 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(N_FFT) / N_FFT)  # periodic, as torch's


def smart_turn_features(audio_16k: np.ndarray) -> np.ndarray:
    """The model's input for this audio: (80, 800) float32 Whisper-style log-mel.

    The last 8 s of 16 kHz mono audio (zeros before it when shorter), normalised to zero
    mean and unit variance, 25 ms Hann windows every 10 ms (centred, reflect-padded), power
    spectra through 80 Slaney mel filters, log10 clamped to 8 decades below the peak and
    scaled by (x + 4) / 4: what Whisper's feature extractor gives for an 8 s chunk.
    """
    audio = np.asarray(audio_16k, dtype=np.float32).reshape(-1)
    if audio.size >= WINDOW_SAMPLES:
        audio = audio[-WINDOW_SAMPLES:]
    else:
        audio = np.concatenate([np.zeros(WINDOW_SAMPLES - audio.size, np.float32), audio])
    audio = (audio - audio.mean()) / np.sqrt(audio.var() + 1e-7)
    padded = np.pad(audio.astype(np.float64), N_FFT // 2, mode="reflect")
    starts = np.arange(N_FRAMES) * HOP  # the final centred frame is dropped, as Whisper does
    frames = padded[starts[:, None] + np.arange(N_FFT)[None, :]] * _HANN
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2  # (800, 201)
    mel = np.log10(np.maximum(power @ _FILTERS.T, 1e-10)).T  # (80, 800)
    mel = np.maximum(mel, mel.max() - 8.0)
    return ((mel + 4.0) / 4.0).astype(np.float32)


class ProsodyModel(Protocol):
    """Audio in, the chance that the speaker has finished their turn out."""

    name: str

    def complete_probability(self, audio_16k: np.ndarray) -> float:
        """P(turn complete) for the utterance so far, its trailing silence included."""
        ...


def bundled_smart_turn_path() -> Path | None:
    """The smart-turn ONNX file inside the installed ``pipecat-ai`` wheel, or None.

    Found through the package's location, without importing pipecat (its ``__init__``
    needs dependencies the base product does not install).
    """
    try:
        spec = importlib.util.find_spec("pipecat")
    except (ImportError, ValueError):
        return None
    for location in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(location).joinpath(*SMART_TURN_SUBDIR, SMART_TURN_FILE)
        if candidate.is_file():
            return candidate
    return None


class SmartTurnModel:
    """smart-turn v3.2 on onnxruntime, one thread; one instance per file per process."""

    name = "smart-turn-v3.2"

    def __init__(self, path: Path) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.path = path
        self._session = ort.InferenceSession(
            str(path), sess_options=options, providers=["CPUExecutionProvider"]
        )
        self._input = self._session.get_inputs()[0].name
        self._lock = threading.Lock()  # one decision at a time: one core, as measured

    def complete_probability(self, audio_16k: np.ndarray) -> float:
        """P(turn complete): the model's sigmoid output for the last 8 s of audio."""
        features = smart_turn_features(audio_16k)[None]
        with self._lock:
            (output,) = self._session.run(None, {self._input: features})[:1]
        return float(np.asarray(output).reshape(-1)[0])


_MODELS: dict[Path, SmartTurnModel] = {}
_MODELS_LOCK = threading.Lock()


def load_smart_turn(path: Path | None = None) -> SmartTurnModel | None:
    """The process's smart-turn model (``path``, else the one in the pipecat-ai wheel).

    None, with a warning, when the file is missing: the decider then works from the words
    and the silence alone.
    """
    chosen = path if path is not None else bundled_smart_turn_path()
    if chosen is None or not chosen.is_file():
        log.warning(
            "end of turn: smart-turn model not found (%s); deciding from words and silence. "
            "Install it with: pip install --no-deps pipecat-ai==1.14.0",
            chosen or f"pipecat-ai's {SMART_TURN_FILE}",
        )
        return None
    with _MODELS_LOCK:
        model = _MODELS.get(chosen)
        if model is None:
            model = _MODELS[chosen] = SmartTurnModel(chosen)
            log.info("end of turn: loaded %s", chosen)
        return model


# ---------------------------------------------------------------------------------------
# The decision
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Decision:
    """Release the turn now, or wait ``wait_ms`` more and ask again (the user may go on)."""

    release: bool
    wait_ms: float  # 0 when released; else when to ask again
    confidence: float  # combined P(finished), 0..1
    needed_silence_ms: float  # the silence this confidence calls for
    silence_ms: float
    words_score: float
    prosody_score: float | None  # None: no model
    reasons: tuple[str, ...]
    transcript: str = ""
    language: str = ""
    audio_ms: float = 0.0
    prosody_ms: float | None = None  # time the model took
    prosody_model: str = ""

    def as_record(self) -> dict[str, Any]:
        """Inputs and outputs as plain JSON values, for the turn record and the debug log."""
        record = asdict(self)
        record["reasons"] = list(self.reasons)
        for key in (
            "confidence",
            "needed_silence_ms",
            "silence_ms",
            "words_score",
            "wait_ms",
            "audio_ms",
        ):
            record[key] = round(float(record[key]), 3)
        for key in ("prosody_score", "prosody_ms"):
            if record[key] is not None:
                record[key] = round(float(record[key]), 3)
        return record


@dataclass(frozen=True)
class ProsodyReading:
    """The prosody model's P(finished) for some audio, and what it cost."""

    score: float | None  # None: no model, no audio, or it failed
    ms: float | None
    failed: bool = False


def _logit(p: float) -> float:
    return math.log(p / (1.0 - p))


class TurnDecider:
    """Decides at each pause whether the user's turn is over. Stateless between calls and
    thread-safe: the model serialises its own runs, everything else is per call."""

    def __init__(
        self,
        prosody: ProsodyModel | None,
        *,
        max_wait_ms: float = MAX_WAIT_MS,
        recheck_ms: float = RECHECK_MS,
        words_weight: float = WORDS_WEIGHT,
        prosody_weight: float = PROSODY_WEIGHT,
        prosody_clip: float = PROSODY_CLIP,
        curve: float = CURVE,
        punctuated: bool = True,
    ) -> None:
        self.prosody = prosody
        self.max_wait_ms = max_wait_ms
        self.recheck_ms = recheck_ms
        self.words_weight = words_weight
        self.prosody_weight = prosody_weight
        self.prosody_clip = prosody_clip
        self.curve = curve
        self.punctuated = punctuated  # the recognizer punctuates (see ``words_finished``)

    def confidence(self, words_score: float, prosody_score: float | None) -> float:
        """Combined P(finished): a weighted sum of the two log-odds (words alone if no model)."""
        w = min(max(words_score, 0.01), 0.99)
        total = self.words_weight * _logit(w)
        if prosody_score is not None:
            p = min(max(prosody_score, self.prosody_clip), 1.0 - self.prosody_clip)
            total += self.prosody_weight * _logit(p)
        else:
            total /= max(self.words_weight, 1e-9)  # words alone: their own score
        return 1.0 / (1.0 + math.exp(-total))

    def needed_silence_ms(self, confidence: float) -> float:
        """The silence a turn this likely finished needs: ``max_wait_ms * (1 - c) ** curve``."""
        return self.max_wait_ms * (1.0 - confidence) ** self.curve

    def read_prosody(self, audio_16k: np.ndarray | None) -> ProsodyReading:
        """The model's reading of how the audio ends (no model, or no audio: no score).

        The engine takes it while the recognizer decodes the words, so that a decision
        at the pause waits for the slower of the two, not for both.
        """
        audio = np.asarray(audio_16k if audio_16k is not None else (), dtype=np.float32)
        if self.prosody is None or not audio.size:
            return ProsodyReading(None, None)
        began = time.perf_counter()
        try:
            score: float | None = self.prosody.complete_probability(audio)
        except Exception:  # a model failure must not end the turn: words and silence
            log.warning("end of turn: the prosody model failed", exc_info=True)
            score = None
        return ProsodyReading(score, (time.perf_counter() - began) * 1e3, failed=score is None)

    def decide(
        self,
        transcript: str,
        language: str,
        audio_16k: np.ndarray | None,
        silence_ms: float,
        prosody: ProsodyReading | None = None,
    ) -> Decision:
        """Release now, or how long to wait before asking again.

        ``audio_16k``: the utterance so far at 16 kHz, its trailing silence included (the
        model reads the last 8 s); None or empty skips the model. ``silence_ms``: silence
        since the user stopped. ``prosody``: the model's reading of that audio when it was
        taken already (``read_prosody``).
        """
        verdict = words_finished(transcript, language, punctuated=self.punctuated)
        audio = np.asarray(audio_16k if audio_16k is not None else (), dtype=np.float32)
        reading = prosody if prosody is not None else self.read_prosody(audio)
        prosody_score, prosody_ms = reading.score, reading.ms
        reasons = list(verdict.reasons)
        if reading.failed:
            reasons.append("prosody model failed")
        confidence = self.confidence(verdict.score, prosody_score)
        needed = self.needed_silence_ms(confidence)
        release = silence_ms >= needed or silence_ms >= self.max_wait_ms
        if prosody_score is not None:
            reasons.append(f"prosody says {'finished' if prosody_score >= 0.5 else 'not finished'}")
        if release and silence_ms >= self.max_wait_ms:
            reasons.append("silence reached the bound")
        wait_ms = 0.0 if release else max(min(needed - silence_ms, self.recheck_ms), MIN_WAIT_MS)
        decision = Decision(
            release=release,
            wait_ms=max(wait_ms, 0.0),
            confidence=confidence,
            needed_silence_ms=needed,
            silence_ms=silence_ms,
            words_score=verdict.score,
            prosody_score=prosody_score,
            reasons=tuple(reasons),
            transcript=transcript,
            language=language,
            audio_ms=audio.size * 1000.0 / ASR_RATE_HZ,
            prosody_ms=prosody_ms,
            prosody_model=getattr(self.prosody, "name", "") if self.prosody else "",
        )
        log.debug("end of turn: %s", decision.as_record())
        return decision


def make_turn_decider(settings: Settings | None = None) -> TurnDecider:
    """The decider the settings describe (``turn_*``), its model loaded once per process."""
    settings = settings or get_settings()
    prosody = load_smart_turn(settings.turn_model_path) if settings.turn_prosody else None
    return TurnDecider(
        prosody,
        max_wait_ms=settings.turn_max_wait_ms,
        recheck_ms=settings.turn_recheck_ms,
        punctuated=not settings.asr.startswith("pocketsphinx"),
    )
