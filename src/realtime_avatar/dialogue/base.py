"""The ``Responder`` protocol: the user's words in, the avatar's reply out as a text stream."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Message:
    """One turn of the conversation history."""

    role: str  # "user" | "assistant"
    text: str


class DialogueError(Exception):
    """The backend failed or timed out; the session says a fallback line and goes on."""


class Responder(Protocol):
    """Writes the avatar's reply. One instance per session (it may keep per-session state)."""

    name: str

    def respond(self, history: list[Message], text: str, language: str) -> AsyncIterator[str]:
        """Stream the reply to ``text`` (in ``language``) as text deltas.

        Raises ``DialogueError`` (possibly mid-stream) when the backend fails or times out.
        """
        ...
