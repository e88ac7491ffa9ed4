"""Phoneme and word timings from a VITS-style model's own duration predictor.

Piper and hibari both predict how many samples each input id lasts, and both hide that
tensor inside the graph. This module holds what the two share:

- exposing a duration tensor as one more graph output by editing the ONNX protobuf wire
  format in memory (we do not ship the ``onnx`` package): ``with_graph_output`` and the
  wire-format helpers it uses, and ``duration_session`` that opens the patched model;
- turning the per-id symbols and their sample counts into espeak-ng style IPA
  ``PhonemeTiming`` s (``phoneme_timings``) and the spoken words' sample spans
  (``word_spans``, ``word_timings``), with a ``SymbolSet`` saying how one model's symbols
  read as IPA;
- estimating sample counts when a model gives none, and fitting counts to the audio.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..frames import PhonemeTiming, WordTiming

_LOGGER = logging.getLogger(__name__)

PAUSE = "_"  # the phoneme that stands for silence in every synthesizer

# A word gap is usually co-articulation, not silence: it joins the phoneme before it
# unless it is long enough to see and quiet compared with the whole utterance.
MIN_PAUSE_S = 0.03
QUIET_RMS_RATIO = 0.15
STRESS = frozenset("ˈˌ")  # espeak writes the stress mark in front of its vowel


def _unchanged(symbol: str) -> str:
    return symbol


@dataclass(frozen=True)
class SymbolSet:
    """How one model's per-id symbols become espeak-ng IPA phonemes."""

    vowels: str  # symbols that last about twice as long as a consonant (for estimates)
    suffix_marks: frozenset[str]  # marks that belong to the phoneme before them
    # Marks after which the next symbol joins the same phoneme (a tie bar: ``t͡ʃ``).
    joins_next: frozenset[str] = frozenset()
    # Codepoint pairs that are one phoneme when the model writes them apart (``a`` ``ɪ``).
    clusters: frozenset[str] = frozenset()
    to_ipa: Callable[[str], str] = field(default=_unchanged)  # one symbol as IPA


# --------------------------------------------------------------------------------------
# Exposing a duration tensor without the onnx package
# --------------------------------------------------------------------------------------


def read_varint(buf: bytes | memoryview, pos: int) -> tuple[int, int]:
    """The protobuf varint at ``buf[pos]`` and the position after it."""
    value = 0
    shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def varint(value: int) -> bytes:
    """``value`` as a protobuf varint."""
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def fields(buf: memoryview, start: int, end: int) -> list[tuple[int, int, int, int, int]]:
    """Protobuf fields in ``buf[start:end]`` as (number, wire type, value start, end, tag start)."""
    out = []
    pos = start
    while pos < end:
        tag_start = pos
        key, pos = read_varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            _, value_end = read_varint(buf, pos)
            value_start = pos
        elif wire == 1:
            value_start, value_end = pos, pos + 8
        elif wire == 2:
            length, value_start = read_varint(buf, pos)
            value_end = value_start + length
        elif wire == 5:
            value_start, value_end = pos, pos + 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        out.append((number, wire, value_start, value_end, tag_start))
        pos = value_end
    if pos != end:
        raise ValueError("truncated protobuf message")
    return out


def length_delimited(number: int, payload: bytes) -> bytes:
    """One length-delimited protobuf field: tag, length, ``payload``."""
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def graph_nodes(view: memoryview, start: int, end: int) -> list[tuple[str, list[str], list[str]]]:
    """The nodes of the GraphProto at ``view[start:end]`` as (op type, inputs, outputs).

    GraphProto.node is field 1; NodeProto.input is 1, .output 2 and .op_type 4."""
    nodes = []
    for number, wire, node_start, node_end, _ in fields(view, start, end):
        if number != 1 or wire != 2:
            continue
        node = fields(view, node_start, node_end)

        def strings(wanted: int, node: list[tuple[int, int, int, int, int]] = node) -> list[str]:
            return [bytes(view[s:e]).decode() for n, w, s, e, _ in node if n == wanted and w == 2]

        nodes.append(("".join(strings(4)), strings(1), strings(2)))
    return nodes


def with_graph_output(
    model: bytes, find: Callable[[memoryview, int, int], str]
) -> tuple[bytes, str]:
    """The ONNX model with one more graph output, and that output's name.

    ``find`` gets the model's bytes and the bounds of its GraphProto and names the tensor.
    ModelProto.graph is field 7 and GraphProto.output 12 (ValueInfoProto.name is 1):
    appending one more ``output`` field to the graph and re-framing the graph is all it
    takes. A model that already has that output comes back as it is."""
    view = memoryview(model)
    graphs = [f for f in fields(view, 0, len(model)) if f[0] == 7 and f[1] == 2]
    if len(graphs) != 1:
        raise ValueError("no graph in the model")
    _, _, graph_start, graph_end, graph_tag = graphs[0]
    name = find(view, graph_start, graph_end)

    existing_outputs: set[str] = set()
    for number, wire, start, end, _ in fields(view, graph_start, graph_end):
        if number == 12 and wire == 2:  # ValueInfoProto
            for n, w, s, e, _ in fields(view, start, end):
                if n == 1 and w == 2:
                    existing_outputs.add(bytes(view[s:e]).decode())
    if name in existing_outputs:
        return model, name  # already patched on disk

    extra = length_delimited(12, length_delimited(1, name.encode()))
    graph_length = graph_end - graph_start + len(extra)
    # One join, one copy: a model can be ~60 MB and every intermediate copy costs page faults.
    patched = b"".join(
        [
            view[:graph_tag],
            varint(7 << 3 | 2) + varint(graph_length),
            view[graph_start:graph_end],
            extra,
            view[graph_end:],
        ]
    )
    return patched, name


def duration_session(
    model_path: Path,
    find: Callable[[memoryview, int, int], str],
    label: str,
    **settings: object,
) -> tuple[Any, str | None]:
    """A one-thread CPU onnxruntime session on the model at ``model_path`` with the duration
    tensor ``find`` names exposed, and that output's name (``None`` where the model gives no
    durations: they are then estimated, and ``label`` names the model in the warning).

    ``settings`` are further ``SessionOptions`` attributes (``enable_mem_reuse=False``)."""
    import onnxruntime

    model = model_path.read_bytes()
    durations_output: str | None
    try:
        model, durations_output = with_graph_output(model, find)
    except (ValueError, IndexError) as error:
        _LOGGER.warning("%s %s gives no phoneme durations: %s", label, model_path, error)
        durations_output = None
    # One thread, no spinning: the machine has two cores shared by every stage, and a VITS
    # pass on a sentence is short enough that a thread pool's wake-ups cost more than they
    # save.
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    for name, value in settings.items():
        setattr(options, name, value)
    session = onnxruntime.InferenceSession(
        model, sess_options=options, providers=["CPUExecutionProvider"]
    )
    return session, durations_output


def peak_normalized(pcm: np.ndarray, peak: float) -> np.ndarray:
    """``pcm`` scaled so its largest sample is ``peak`` (silence is left as it is)."""
    largest = float(np.max(np.abs(pcm))) if pcm.size else 0.0
    if largest > 1e-6:
        return (pcm * (peak / largest)).astype(np.float32)
    return pcm


# --------------------------------------------------------------------------------------
# Timings
# --------------------------------------------------------------------------------------


def is_separator(symbol: str) -> bool:
    """Pads (``^``/``$``), word gaps and punctuation: anything not part of a spoken word."""
    return symbol in ("^", "$", " ") or unicodedata.category(symbol[:1] or " ")[0] in "PZS"


def phoneme_timings(
    symbols: list[str],
    samples: list[int],
    sample_rate_hz: int,
    pcm: np.ndarray,
    symbol_set: SymbolSet,
) -> list[PhonemeTiming]:
    """Group per-id symbols (with their sample counts) into IPA phonemes with times.

    Stress marks lead their vowel, ``symbol_set``'s suffix marks and clusters join the
    phoneme before, pads and punctuation are ``"_"`` and a word gap is ``"_"`` only where
    it is long and quiet compared with the whole of ``pcm``."""
    overall_rms = float(np.sqrt(np.mean(np.square(pcm)))) if pcm.size else 0.0

    def is_gap(start: int, end: int) -> bool:
        if (end - start) / sample_rate_hz < MIN_PAUSE_S:
            return False
        rms = float(np.sqrt(np.mean(np.square(pcm[start:end])))) if end > start else 0.0
        return rms < QUIET_RMS_RATIO * overall_rms

    merged: list[list] = []  # [phoneme, start_sample, end_sample]
    prefix = ""  # stress marks waiting for their vowel
    prefix_start = 0
    position = 0
    for symbol, count in zip(symbols, samples, strict=True):
        start, position = position, position + count
        if symbol in STRESS:
            if not prefix:
                prefix_start = start
            prefix += symbol
            continue
        if prefix:
            start = prefix_start
        if is_separator(symbol):
            voiced_gap = symbol == " " and not is_gap(start, position)
            if merged and (merged[-1][0] == PAUSE or voiced_gap):
                merged[-1][2] = position
            else:
                merged.append([PAUSE, start, position])
            prefix = ""
            continue
        last = merged[-1] if merged else None
        if last is not None and last[0] != PAUSE and not prefix:
            base = last[0].lstrip("ˈˌ")
            if (
                symbol in symbol_set.suffix_marks
                or unicodedata.combining(symbol)
                or base[-1:] in symbol_set.joins_next
                or (base[-1:] + symbol) in symbol_set.clusters
            ):
                last[0] += symbol
                last[2] = position
                continue
        merged.append([prefix + symbol_set.to_ipa(symbol), start, position])
        prefix = ""
    if prefix:  # a stress mark with nothing after it: its time goes to what came before
        if merged:
            merged[-1][2] = position
        else:
            merged.append([PAUSE, prefix_start, position])
    return [
        PhonemeTiming(phoneme, start / sample_rate_hz, end / sample_rate_hz)
        for phoneme, start, end in merged
    ]


def word_spans(symbols: Sequence[str], samples: Sequence[int]) -> list[tuple[int, int]]:
    """(start, end) sample of each run of non-separator symbols: the spoken words."""
    spans: list[tuple[int, int]] = []
    position = 0
    word_start: int | None = None
    for symbol, count in zip(symbols, samples, strict=True):
        if is_separator(symbol):
            if word_start is not None:
                spans.append((word_start, position))
                word_start = None
        elif word_start is None:
            word_start = position
        position += count
    if word_start is not None:
        spans.append((word_start, position))
    return spans


_TOKEN = re.compile(r"\S+")
_EDGE_PUNCTUATION = "\"'“”‘’«»()[]{}.,;:!?¡¿…-—–"


def text_words(text: str) -> list[str]:
    """Whitespace tokens that contain something speakable, stripped of edge punctuation."""
    words = []
    for token in _TOKEN.findall(text):
        word = token.strip(_EDGE_PUNCTUATION)
        if any(ch.isalnum() for ch in word):
            words.append(word)
    return words


def word_timings(
    text: str,
    symbols: list[str],
    samples: list[int],
    sample_rate_hz: int,
    phonemize: Callable[[str], Iterable[Sequence[str]]],
) -> list[WordTiming]:
    """Match the symbol stream's spoken words to the words of ``text``.

    Where the counts differ (the G2P expands numbers: "3.5" is three words), each text word
    is phonemized alone with ``phonemize`` (one symbol sequence per sentence or piece) to
    learn how many spoken words it became; failing that, the spoken stretch is shared out
    by word length."""
    spans = word_spans(symbols, samples)
    words = text_words(text)
    rate = sample_rate_hz
    if not spans or not words:
        return []
    if len(spans) == len(words):
        return [WordTiming(w, s / rate, e / rate) for w, (s, e) in zip(words, spans, strict=True)]
    counts = []
    for word in words:
        flat = [s for piece in phonemize(word) for s in [*piece, " "]]
        counts.append(max(1, len(word_spans(flat, [1] * len(flat)))))
    if sum(counts) == len(spans):
        out = []
        index = 0
        for word, count in zip(words, counts, strict=True):
            first, last = spans[index], spans[index + count - 1]
            out.append(WordTiming(word, first[0] / rate, last[1] / rate))
            index += count
        return out
    # Last resort: share the spoken stretch out by word length.
    start, end = spans[0][0], spans[-1][1]
    weights = np.cumsum([0] + [len(w) for w in words], dtype=np.float64)
    bounds = start + (end - start) * weights / weights[-1]
    return [
        WordTiming(w, float(bounds[i]) / rate, float(bounds[i + 1]) / rate)
        for i, w in enumerate(words)
    ]


def estimate_samples(symbols: list[str], total: int, symbol_set: SymbolSet) -> list[int]:
    """Without model durations: vowels twice as long as consonants, pauses in between."""
    weights = []
    for symbol in symbols:
        if is_separator(symbol):
            weights.append(1.5)
        elif symbol in STRESS or symbol in symbol_set.suffix_marks or unicodedata.combining(symbol):
            weights.append(0.3)
        elif symbol in symbol_set.vowels:
            weights.append(2.0)
        else:
            weights.append(1.0)
    return fit_to_length([int(w * 1000) for w in weights], total)


def fit_to_length(samples: list[int], total: int) -> list[int]:
    """Scale sample counts so they sum to ``total`` exactly (they do already for VITS)."""
    current = sum(samples)
    if current == total or not samples:
        return list(samples)
    if current <= 0:
        samples = [1] * len(samples)
        current = len(samples)
    edges = np.round(np.cumsum([0, *samples]) * (total / current)).astype(np.int64)
    return [int(n) for n in np.diff(edges)]
