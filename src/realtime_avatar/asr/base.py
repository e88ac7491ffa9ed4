"""The ``Recognizer`` protocol: one utterance of 16 kHz audio in, partial and final text out."""

from __future__ import annotations

from typing import Protocol

import numpy as np

from ..frames import Transcript


class Utterance(Protocol):
    """Recognition state for one utterance; created by ``Recognizer.start``."""

    def feed(self, pcm_16k: np.ndarray) -> Transcript | None:
        """Add float32 mono 16 kHz audio; may return a partial transcript (``final=False``)."""
        ...

    def peek(self) -> Transcript:
        """What ``finish`` would say if the audio ended now (``final=False``); feeding may go on.

        The session asks at a pause, to start the reply before the turn is certain.
        """
        ...

    def finish(self) -> Transcript:
        """The final transcript of everything fed (``final=True``), with its language."""
        ...


class Recognizer(Protocol):
    """Speech recognition. Models load once per process; utterances are per session."""

    name: str

    def languages(self) -> frozenset[str]:
        """Codes it recognises; ``auto`` detection is possible if more than one."""
        ...

    def start(self, turn_id: int, language: str = "auto") -> Utterance:
        """Begin an utterance in ``language`` (``auto`` to detect)."""
        ...
