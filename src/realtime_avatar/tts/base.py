"""The ``Synthesizer`` protocol: text in one language to PCM plus phoneme and word timings."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from ..frames import Speech


@runtime_checkable
class Synthesizer(Protocol):
    """Text to speech. Load once per process; ``synthesize`` is thread-safe for one caller."""

    name: str
    sample_rate_hz: int

    def languages(self) -> frozenset[str]:
        """ISO 639-1 codes (``en``, ``es``, ``zh``…) this synthesizer speaks."""
        ...

    def synthesize(self, text: str, language: str, turn_id: int = 0) -> Speech:
        """Speak ``text``; phoneme timings must cover the returned audio."""
        ...
