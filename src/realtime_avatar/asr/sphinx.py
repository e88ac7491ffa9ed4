"""English speech recognition with PocketSphinx 5 (en-us model shipped in the wheel).

Weaker than Whisper, but it decodes as the audio arrives: every chunk advances the search,
so a partial hypothesis costs nothing extra and the final is ready almost as soon as the
audio ends. A ``Decoder`` holds the acoustic model, language model and dictionary (~0.5 s
to load) *and* one utterance's search state, so decoders are pooled: an utterance borrows
one and gives it back when it finishes or is closed.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import numpy as np

from ..constants import ASR_RATE_HZ
from ..errors import UnsupportedLanguageError
from ..frames import Transcript
from ..text.language import normalize_language_code

_LOGGER = logging.getLogger(__name__)

_POOL: list[Any] = []  # idle pocketsphinx.Decoder instances (the loaded-model cache)
_POOL_LOCK = threading.Lock()
_MAX_IDLE_DECODERS = 4


def _new_decoder() -> Any:
    from pocketsphinx import Decoder

    started = time.perf_counter()
    # loglevel FATAL: pocketsphinx logs every model file it reads to stderr otherwise.
    decoder = Decoder(samprate=ASR_RATE_HZ, loglevel="FATAL")
    _LOGGER.debug("Loaded a PocketSphinx decoder in %.2f s", time.perf_counter() - started)
    return decoder


def _borrow_decoder() -> Any:
    with _POOL_LOCK:
        if _POOL:
            return _POOL.pop()
    return _new_decoder()


def _return_decoder(decoder: Any) -> None:
    with _POOL_LOCK:
        if len(_POOL) < _MAX_IDLE_DECODERS:
            _POOL.append(decoder)


def _to_int16_bytes(pcm: np.ndarray) -> bytes:
    samples = np.asarray(pcm, dtype=np.float32)
    if samples.ndim != 1:
        raise ValueError(f"ASR expects mono 1-D audio, got shape {samples.shape}")
    return (np.clip(samples, -1.0, 1.0) * 32767.0).astype(np.int16).tobytes()


class PocketsphinxRecognizer:
    """PocketSphinx recognizer (``Recognizer``), English only."""

    name = "pocketsphinx"

    def __init__(self) -> None:
        """Load one decoder now, so the first utterance does not wait for it."""
        _return_decoder(_borrow_decoder())

    def languages(self) -> frozenset[str]:
        """English only."""
        return frozenset({"en"})

    def start(self, turn_id: int, language: str = "auto") -> SphinxUtterance:
        """Begin an English utterance (``auto`` means English here)."""
        if language and language.strip().lower() != "auto":
            if normalize_language_code(language) != "en":
                raise UnsupportedLanguageError(
                    f"PocketSphinx recognises English only, not '{language}'; use the "
                    "multilingual Whisper model (AVATAR_ASR=whisper-base)."
                )
        return SphinxUtterance(turn_id)

    def transcribe(self, pcm_16k: np.ndarray) -> str:
        """Text of a whole utterance at once."""
        utterance = self.start(0)
        utterance.feed(pcm_16k)
        return utterance.finish().text


class SphinxUtterance:
    """One utterance (``Utterance``): a partial per chunk when the hypothesis changes.

    ``feed`` costs about the chunk's share of real-time decoding (RTF ~0.2); call it from a
    worker thread. Call ``finish()`` or ``close()`` so the decoder goes back to the pool.
    """

    def __init__(self, turn_id: int) -> None:
        """Borrow a decoder and open its utterance."""
        self.turn_id = turn_id
        self._lock = threading.Lock()
        self._decoder: Any = _borrow_decoder()
        self._decoder.start_utt()
        self._last_text = ""
        self._final: Transcript | None = None
        self.partials = 0
        self.finish_seconds = 0.0

    def feed(self, pcm_16k: np.ndarray) -> Transcript | None:
        """Decode the chunk; return a partial when the best hypothesis changed."""
        data = _to_int16_bytes(pcm_16k)
        with self._lock:
            if self._decoder is None:
                raise RuntimeError("feed() after finish() or close(): start a new utterance")
            if not data:
                return None
            self._decoder.process_raw(data, False, False)
            hypothesis = self._decoder.hyp()
            text = hypothesis.hypstr.strip() if hypothesis is not None else ""
            if not text or text == self._last_text:
                return None
            self._last_text = text
            self.partials += 1
            return Transcript(self.turn_id, text, final=False, language="en")

    def peek(self) -> Transcript:
        """The best hypothesis so far (the final may still differ slightly)."""
        with self._lock:
            if self._final is not None:
                return self._final
            hypothesis = self._decoder.hyp() if self._decoder is not None else None
            text = hypothesis.hypstr.strip() if hypothesis is not None else ""
            return Transcript(self.turn_id, text, final=False, language="en")

    def finish(self) -> Transcript:
        """End the utterance: the final transcript (idempotent)."""
        with self._lock:
            if self._final is not None:
                return self._final
            if self._decoder is None:
                raise RuntimeError("finish() after close(): the utterance was abandoned")
            started = time.perf_counter()
            decoder = self._decoder
            decoder.end_utt()
            hypothesis = decoder.hyp()
            text = hypothesis.hypstr.strip() if hypothesis is not None else ""
            self._decoder = None
            _return_decoder(decoder)
            self._final = Transcript(self.turn_id, text, final=True, language="en")
            self.finish_seconds = time.perf_counter() - started
            return self._final

    def close(self) -> None:
        """Abandon the utterance (e.g. on barge-in) and give the decoder back."""
        with self._lock:
            decoder, self._decoder = self._decoder, None
        if decoder is not None:
            decoder.end_utt()
            _return_decoder(decoder)
