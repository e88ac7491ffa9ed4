"""The ``Synthesizer`` protocol: text in one language to PCM plus phoneme and word timings.

A synthesizer is built for an avatar (it may take the avatar's ``ReferenceVoice``) and
declares what it can do in ``SynthCapabilities``; the voice matcher follows from that.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

from ..frames import Speech


@dataclass(frozen=True)
class SynthCapabilities:
    """What a synthesizer can do; the speech stage chooses the voice matcher from it."""

    languages: frozenset[str]  # ISO 639-1 codes it speaks
    timings: bool  # it gives phoneme and word timings with its audio
    reference_voice: bool  # it already speaks in the avatar's own voice: no DSP matching


@dataclass(frozen=True)
class ReferenceVoice:
    """The avatar's voice sample, for synthesizers that speak in the avatar's own voice."""

    sample_path: Path
    name: str  # the avatar's name, for logs


@runtime_checkable
class Synthesizer(Protocol):
    """Text to speech. Load once per process; ``synthesize`` is thread-safe for one caller."""

    name: str
    sample_rate_hz: int

    @property
    def capabilities(self) -> SynthCapabilities:
        """Languages, timings, and whether it already speaks in the avatar's voice."""
        ...

    @property
    def voice_id(self) -> str:
        """A key of the voice's content (model files, engine version), never just its name:
        caches of what was measured on the voice (its profile) are keyed by it."""
        ...

    def languages(self) -> frozenset[str]:
        """ISO 639-1 codes (``en``, ``es``, ``zh``…) this synthesizer speaks."""
        ...

    def synthesize(self, text: str, language: str, turn_id: int = 0) -> Speech:
        """Speak ``text``; phoneme timings must cover the returned audio."""
        ...


_DIGESTS: dict[tuple[Path, int, int], str] = {}
_DIGESTS_LOCK = threading.Lock()


def file_digest(path: Path) -> str:
    """SHA-256 of a file, computed once per (path, size, modification time) per process."""
    resolved = Path(path).resolve()
    stat = os.stat(resolved)
    key = (resolved, stat.st_size, stat.st_mtime_ns)
    with _DIGESTS_LOCK:
        cached = _DIGESTS.get(key)
    if cached is not None:
        return cached
    digest = hashlib.sha256()
    with open(resolved, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    value = digest.hexdigest()
    with _DIGESTS_LOCK:
        _DIGESTS[key] = value
    return value


def content_digest(paths: Iterable[Path]) -> str:
    """One SHA-256 over the contents of several files (a model and its config), in order."""
    combined = hashlib.sha256()
    for path in paths:
        combined.update(file_digest(path).encode())
    return combined.hexdigest()
