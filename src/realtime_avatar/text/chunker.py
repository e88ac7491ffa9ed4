"""Cutting text into pieces a synthesizer can speak: whole scripts and streaming replies.

A piece is a sentence, or a clause of a long sentence. Scripts are split at once with
``split_sentences``; a streaming reply goes through ``SentenceChunker``, which hands out a
piece as soon as its end is certain, and cuts the first clause early so the avatar starts
speaking while the rest of the reply is still being written.
"""

from __future__ import annotations

import re
import unicodedata

# Periods after these never end a sentence ("Dr. Smith"). Lower case, without the dot.
_ABBREVIATIONS = frozenset(
    {
        "mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "vs", "fig", "figs", "approx",
        "dept", "lt", "sgt", "capt", "rev", "hon", "vol", "pp", "cf", "sra", "sres", "srta",
        "dra", "ud", "uds", "avda", "núm", "pág", "tel", "ee",
    }
)  # fmt: skip
# These are real words too ("the sun."), so they end a sentence when a capitalised word
# or an opening mark follows ("Apple Inc. It", but "Jan. 5" and "No. 3" stay whole).
_SOFT_ABBREVIATIONS = frozenset(
    {
        "etc", "inc", "ltd", "corp", "co", "no", "nos", "mt", "ft", "gen", "est", "sec",
        "col", "ch", "al", "p", "av", "uu", "ca", "am", "pm", "jan", "feb", "mar", "apr",
        "jun", "jul", "aug", "sep", "sept", "oct", "nov", "dec", "mon", "tue", "wed", "thu",
        "fri", "sat", "sun",
    }
)  # fmt: skip
_NEVER_END = frozenset({"e.g", "i.e", "p.ej", "a.k.a", "viz"})

_TERMINATORS = ".!?…"
_CJK_TERMINATORS = "。！？"
_CLOSERS = "\"'”’»)]}」』）】"
_OPENERS = "\"'“‘«([{¿¡「『（【"
_CLAUSE_MARKS = ",;:"
_CJK_CLAUSE_MARKS = "，；：、"

_MARKDOWN_LINK = re.compile(r"!?\[([^\]]*)\]\([^)]*\)")
_MARKDOWN_LINE_PREFIX = re.compile(r"(?m)^[ \t]*(?:#{1,6}[ \t]+|>[ \t]?|[-*+][ \t]+)")
_MARKDOWN_SYMBOLS = re.compile(r"[*#`~|]+|(?<!\w)_+|_+(?!\w)")
# Zero-width joiner, variation selectors and skin-tone modifiers glue emoji together.
_EMOJI_JOINERS = frozenset("\u200d\ufe0f\ufe0e\U0001f3fb\U0001f3fc\U0001f3fd\U0001f3fe\U0001f3ff")
_WHITESPACE = re.compile(r"\s+")
_PARAGRAPH_BREAK = re.compile(r"\n[ \t]*\n|\n(?=[ \t]*(?:[-*+•]|\d+[.)])[ \t]+)")


def normalize_for_speech(text: str) -> str:
    """Collapse whitespace; drop markdown symbols (* # ` ~ |) and emoji a synthesizer reads."""
    text = _MARKDOWN_LINK.sub(r"\1", text)
    # Emoji and pictographs ("So") would be read out by name ("grinning face").
    text = "".join(
        " " if unicodedata.category(char) == "So" else char
        for char in text
        if char not in _EMOJI_JOINERS
    )
    text = _MARKDOWN_LINE_PREFIX.sub("", text)
    text = _MARKDOWN_SYMBOLS.sub("", text)
    return _WHITESPACE.sub(" ", text).strip()


def _is_cjk(char: str) -> bool:
    code = ord(char)
    return (
        0x3040 <= code <= 0x30FF  # kana
        or 0x3400 <= code <= 0x4DBF
        or 0x4E00 <= code <= 0x9FFF
        or 0xF900 <= code <= 0xFAFF
        or 0xAC00 <= code <= 0xD7AF  # hangul
        or 0x20000 <= code <= 0x2FA1F
    )


def _word_before(text: str, index: int) -> str:
    """The run of non-space characters that ends just before ``text[index]``."""
    start = index
    while start > 0 and not text[start - 1].isspace() and text[start - 1] not in _OPENERS:
        start -= 1
    return text[start:index]


def _period_verdict(text: str, index: int) -> bool | None:
    """Whether the '.' at ``index`` ends a sentence; None when the next word decides."""
    word = _word_before(text, index)
    bare = word.lower().strip(_CLOSERS)
    if not bare:
        return True
    if bare in _ABBREVIATIONS or bare in _NEVER_END:
        return False
    if len(bare) == 1 and bare.isalpha() and word[:1].isupper():
        return False  # an initial, as in "J. R. Smith"
    if bare in _SOFT_ABBREVIATIONS or "." in bare:
        return None  # "U.S." may end a sentence or not
    return True


def _starts_sentence(rest: str) -> bool:
    """Whether the text after a terminator looks like a new sentence (capital, ¿, 你)."""
    first = rest[:1]
    return first.isupper() or first in _OPENERS or _is_cjk(first)


def _sentence_end(text: str, index: int, final: bool) -> int | None:
    """If a sentence ends at the terminator ``text[index]``, where the next one starts.

    Returns None when it does not end there, and -1 when it cannot be known yet because
    the text stops too soon (only when ``final`` is False).
    """
    char = text[index]
    end = index + 1
    if char in _CJK_TERMINATORS:
        while end < len(text) and (text[end] in _CJK_TERMINATORS or text[end] in _CLOSERS):
            end += 1
        if end == len(text) and not final:
            return -1  # a closing quote may still follow
        return end
    # Consume runs like "?!", "..." and closing quotes after the terminator.
    while end < len(text) and (text[end] in _TERMINATORS or text[end] in _CLOSERS):
        end += 1
    if end == len(text):
        return end if final else -1
    if not (text[end].isspace() or text[end] in "¿¡"):
        return None  # "3.5", "e.g.x", "file.txt"
    rest = text[end:].lstrip()
    run = text[index:end].rstrip(_CLOSERS)
    if run == ".":
        verdict = _period_verdict(text, index)
        if verdict is not None:
            return end if verdict else None
    elif not (run.startswith("..") or "…" in run):
        return end  # "!" and "?" always end a sentence
    # An abbreviation that may end a sentence, or an ellipsis (usually just a pause):
    # only a new sentence starting after it settles the question.
    if not rest:
        return end if final else -1
    return end if _starts_sentence(rest) else None


def _boundaries(text: str, final: bool) -> tuple[list[int], bool]:
    """Offsets where sentences end, and whether the text stops in an undecided place."""
    cuts: list[int] = []
    index = 0
    while index < len(text):
        char = text[index]
        if char in _TERMINATORS or char in _CJK_TERMINATORS:
            end = _sentence_end(text, index, final)
            if end == -1:
                return cuts, True
            if end is not None:
                cuts.append(end)
                index = end
                continue
            # Skip the rest of a run like "..." so it is judged only once.
            while index + 1 < len(text) and text[index + 1] in _TERMINATORS:
                index += 1
        index += 1
    return cuts, False


def _clause_cuts(text: str) -> list[int]:
    """Offsets just after clause punctuation (", " ";" "：" ...), never inside "1,000"."""
    cuts = []
    for index, char in enumerate(text):
        if char in _CJK_CLAUSE_MARKS:
            end = index + 1
        elif char in _CLAUSE_MARKS and index + 1 < len(text) and text[index + 1].isspace():
            end = index + 1
        else:
            continue
        while end < len(text) and text[end] in _CLOSERS:
            end += 1
        cuts.append(end)
    return cuts


def _cut_long(sentence: str, max_chars: int) -> list[str]:
    """Cut a sentence longer than ``max_chars`` at clause marks, then spaces, then anywhere."""
    if len(sentence) <= max_chars:
        return [sentence]
    pieces: list[str] = []
    start = 0
    for cut in [*_clause_cuts(sentence), len(sentence)]:
        clause = sentence[start:cut].strip()
        if not clause:
            continue
        if pieces and len(pieces[-1]) + 1 + len(clause) <= max_chars:
            joiner = "" if _is_cjk(pieces[-1][-1]) or _is_cjk(clause[0]) else " "
            pieces[-1] = pieces[-1] + joiner + clause
        else:
            pieces.append(clause)
        start = cut
    out: list[str] = []
    for piece in pieces:
        out.extend(_cut_at_spaces(piece, max_chars) if len(piece) > max_chars else [piece])
    return out


def _cut_at_spaces(text: str, max_chars: int) -> list[str]:
    out: list[str] = []
    current = ""
    for word in text.split(" "):
        while len(word) > max_chars:  # CJK without punctuation, or a huge token
            if current:
                out.append(current)
                current = ""
            out.append(word[:max_chars])
            word = word[max_chars:]
        if current and len(current) + 1 + len(word) > max_chars:
            out.append(current)
            current = word
        else:
            current = f"{current} {word}" if current else word
    if current:
        out.append(current)
    return out


# Words that open a phrase: a long first clause may be cut before one of them, so the first
# words reach the synthesizer sooner ("I can chat with you | and answer questions").
_PHRASE_STARTERS = frozenset(
    {
        "and", "but", "or", "so", "because", "which", "that", "who", "when", "while", "where",
        "if", "from", "with", "without", "to", "for", "about", "of", "in", "on", "at", "by",
        "into", "than", "after", "before", "like", "as", "y", "pero", "o", "porque", "que",
        "cuando", "donde", "si", "de", "con", "sin", "para", "por", "en", "sobre", "como",
    }
)  # fmt: skip
_WORD = re.compile(r"\S+")


def _phrase_cut(text: str, shortest: int, longest: int) -> int | None:
    """Where to cut a long first clause: the offset of the last space before a
    phrase-opening word with ``shortest`` to ``longest`` spoken characters before it, else
    before the first such word within twice ``longest``; None if there is none."""
    best = None
    for match in _WORD.finditer(text):
        before = text[: match.start()].rstrip()
        length = _spoken_length(before)
        if length > 2 * longest or (length > longest and best is not None):
            break
        if match.end() == len(text):
            break  # the word may go on in the next delta ("in" -> "inside")
        word = match.group().lower().strip(_OPENERS + _CLOSERS)
        if length >= shortest and word in _PHRASE_STARTERS and before[-1:].isalnum():
            best = len(before)
            if length > longest:
                break
    return best


def _spoken_length(text: str) -> int:
    """Length in Latin-letter equivalents: a Han character takes about three to say."""
    return sum(3 if _is_cjk(char) else 1 for char in text.strip())


def _speakable(piece: str) -> bool:
    return any(char.isalnum() for char in piece)


def split_sentences(text: str, max_chars: int = 220) -> list[str]:
    """Split a script into sentences (long ones into clauses), none over ``max_chars``."""
    out: list[str] = []
    for paragraph in _PARAGRAPH_BREAK.split(text):
        paragraph = _WHITESPACE.sub(" ", paragraph).strip()
        if not paragraph:
            continue
        cuts, _ = _boundaries(paragraph, final=True)
        start = 0
        for cut in [*cuts, len(paragraph)]:
            sentence = paragraph[start:cut].strip()
            start = cut
            if sentence:
                out.extend(p for p in _cut_long(sentence, max_chars) if p)
    return [piece for piece in out if _speakable(piece)]


class SentenceChunker:
    """Turns a streaming reply into speakable pieces as soon as each one is certain.

    Sentences are cut at . ! ? … 。！？ and blank lines once the text after them shows the
    cut is real (so "3.5" and "Dr. Smith" stay whole). Before a sentence ends, a clause is cut at
    , ; : (，；：、) once at least ``min_clause_chars`` are pending, so the first words reach
    the synthesizer early; later clauses wait for ``later_clause_chars`` because fewer,
    longer pieces sound more natural. A Han character counts as three (it takes as long to
    say as three letters). Nothing pending grows past ``max_chars``.
    """

    def __init__(
        self,
        min_clause_chars: int = 20,
        later_clause_chars: int = 80,
        max_chars: int = 220,
        first_phrase_chars: int | None = None,
    ) -> None:
        """Make an empty chunker for one reply.

        ``first_phrase_chars``: when the first clause runs longer than 1.25 times this,
        cut it before a phrase-opening word ("and", "with", "de"...) within this many
        characters (``None``: never).
        """
        self.min_clause_chars = min_clause_chars
        self.later_clause_chars = later_clause_chars
        self.max_chars = max_chars
        self.first_phrase_chars = first_phrase_chars
        self._pending = ""
        self._emitted = 0

    def reset(self) -> None:
        """Forget the pending text: a new reply starts (or the old one was interrupted)."""
        self._pending = ""
        self._emitted = 0

    @property
    def pending(self) -> str:
        """Text received but not yet handed out."""
        return self._pending

    def push(self, delta: str) -> list[str]:
        """Add streamed text; return the pieces that are now complete."""
        self._pending += delta
        out: list[str] = []
        while True:
            piece = self._next_piece()
            if piece is None:
                break
            if _speakable(piece):
                out.append(piece)
                self._emitted += 1
        return out

    def flush(self) -> list[str]:
        """The reply is over: return everything still pending, split into pieces."""
        rest, self._pending = self._pending, ""
        pieces = split_sentences(rest, self.max_chars)
        self._emitted = 0
        return pieces

    def _next_piece(self) -> str | None:
        text = self._pending
        stripped = text.lstrip()
        if not stripped:
            return None
        cuts, _ = _boundaries(text, final=False)
        ends = cuts[:1]
        for paragraph in _PARAGRAPH_BREAK.finditer(text):
            if text[: paragraph.start()].strip():  # a heading or list item ends here
                ends.append(paragraph.end())
                break
        sentence_end = min(ends) if ends else len(text) + 1
        threshold = self.min_clause_chars if self._emitted == 0 else self.later_clause_chars
        clause_cut = next(
            (
                cut
                for cut in _clause_cuts(text)
                if cut < sentence_end and _spoken_length(text[:cut]) >= threshold
            ),
            None,
        )
        first_cut = min(clause_cut or sentence_end, sentence_end)
        if self._emitted == 0 and self.first_phrase_chars:
            # A long first clause: cut before a phrase-opening word. Decided on the first
            # ``horizon`` characters alone, so the cut is the same however the stream was
            # split into deltas.
            horizon = int(self.first_phrase_chars * 1.25)
            if _spoken_length(text) > horizon and _spoken_length(text[:first_cut]) > horizon:
                cut = _phrase_cut(text, self.min_clause_chars, self.first_phrase_chars)
                if cut is not None:
                    return self._take(cut)
        # A clause cut depends only on the text before it, so the pieces are the same
        # however the stream was split into deltas. ASCII marks need a space after them
        # ("1,000" is not a clause), which _clause_cuts checks.
        if clause_cut is not None:
            return self._take(clause_cut)
        if ends:
            return self._take(sentence_end)
        if len(stripped) > self.max_chars:
            pieces = _cut_long(_WHITESPACE.sub(" ", text).strip(), self.max_chars)
            first = pieces[0]
            # Find where ``first`` ends in the raw pending text (whitespace may differ).
            consumed = _consume(text, first)
            return self._take(consumed)
        return None

    def _take(self, cut: int) -> str:
        piece = _WHITESPACE.sub(" ", self._pending[:cut]).strip()
        self._pending = self._pending[cut:]
        return piece


def _consume(text: str, piece: str) -> int:
    """Offset in ``text`` just after the characters of ``piece`` (ignoring whitespace)."""
    wanted = [char for char in piece if not char.isspace()]
    index = 0
    for offset, char in enumerate(text):
        if char.isspace():
            continue
        index += 1
        if index == len(wanted):
            return offset + 1
    return len(text)
