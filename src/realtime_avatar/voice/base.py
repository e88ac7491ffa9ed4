"""The ``VoiceMatcher`` protocol: move synthesized speech toward the avatar's voice."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from ..frames import Speech


@runtime_checkable
class VoiceMatcher(Protocol):
    """Convert one ``Speech`` toward a target voice; timings are kept unchanged."""

    name: str

    def convert(self, speech: Speech) -> Speech:
        """Return speech of the same length whose voice is closer to the target."""
        ...
