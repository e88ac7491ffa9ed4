"""The prompt the LLM backends share: persona in the system message, history, language."""

from __future__ import annotations

import re

from ..text.language import normalize_language_code
from .base import Message

# The chat history sent with each request; older turns are dropped so that a long session
# neither overflows a small local context nor grows a remote bill.
MAX_HISTORY_MESSAGES = 12

_LANGUAGE_NAMES = {
    "en": "English",
    "es": "Spanish",
    "zh": "Mandarin Chinese (simplified characters)",
    "fr": "French",
    "de": "German",
    "it": "Italian",
    "pt": "Portuguese",
    "ja": "Japanese",
    "ko": "Korean",
    "ru": "Russian",
}


def build_system_prompt(persona_markdown: str, avatar_name: str) -> str:
    """The system prompt: who the avatar is (its persona file) and how to speak."""
    name = avatar_name.strip() or "the avatar"
    return (
        f"You are {name}, a talking avatar in a live voice conversation. Everything you "
        "write is spoken aloud at once by a speech synthesizer.\n"
        "Rules: answer in one or two short sentences; plain spoken words only, with no "
        "lists, markdown, emoji or stage directions; speak in the first person as "
        f"{name}; when you do not know something, say so honestly instead of guessing.\n\n"
        f"Your persona:\n{persona_markdown.strip()}"
    )


def language_name(language: str) -> str:
    """``"es"`` → ``"Spanish"``; unknown codes come back as they are."""
    code = normalize_language_code(language or "en")
    return _LANGUAGE_NAMES.get(code, code)


def chat_messages(
    system_prompt: str,
    history: list[Message],
    text: str,
    language: str,
    max_history: int = MAX_HISTORY_MESSAGES,
) -> list[dict[str, str]]:
    """OpenAI-style chat messages: system prompt with the reply language, history, ``text``."""
    name = language_name(language)
    system = (
        f"{system_prompt.strip()}\n\nThe user speaks {name}. Reply in {name}, briefly."
        if system_prompt.strip()
        else f"Reply in {name}, briefly, in one or two sentences."
    )
    messages = [{"role": "system", "content": system}]
    recent = history[-max_history:] if max_history > 0 else []
    for message in recent:
        role = message.role if message.role in ("user", "assistant") else "user"
        if message.text.strip():
            messages.append({"role": role, "content": message.text})
    messages.append({"role": "user", "content": text})
    return messages


class ThinkFilter:
    """Drops ``<think>...</think>`` blocks from a streamed reply.

    Reasoning models served by Ollama or vLLM (DeepSeek-R1, Qwen3) put their reasoning
    in the content; it must not be spoken. Tags may be split across deltas, so a possible
    tag prefix at the end of a delta is held back until the next one settles it.
    """

    _OPEN = "<think>"
    _CLOSE = "</think>"

    def __init__(self) -> None:
        self._pending = ""
        self._inside = False

    def feed(self, delta: str) -> str:
        """The speakable part of ``delta``; may be empty while inside a reasoning block."""
        text = self._pending + delta
        self._pending = ""
        out: list[str] = []
        while text:
            tag = self._CLOSE if self._inside else self._OPEN
            index = text.find(tag)
            if index >= 0:
                if not self._inside:
                    out.append(text[:index])
                text = text[index + len(tag) :]
                self._inside = not self._inside
                continue
            # Hold back a tail that could be the start of the tag.
            hold = _partial_suffix(text, tag)
            if not self._inside:
                out.append(text[: len(text) - hold])
            self._pending = text[len(text) - hold :] if hold else ""
            break
        return "".join(out)

    def flush(self) -> str:
        """What is held back at the end of the stream (a lone '<' that was not a tag)."""
        pending, self._pending = self._pending, ""
        return "" if self._inside else pending


def _partial_suffix(text: str, tag: str) -> int:
    """Length of the longest end of ``text`` that is a proper start of ``tag``."""
    for size in range(min(len(tag) - 1, len(text)), 0, -1):
        if text.endswith(tag[:size]):
            return size
    return 0


_SECRET_PATTERN = re.compile(r"(?i)(bearer\s+|api[_-]?key[=:]\s*)[^\s,;\"']+")


def redact(message: str, secret: str | None) -> str:
    """``message`` with ``secret`` (an API key) and anything that looks like one masked."""
    if secret:
        message = message.replace(secret, "***")
    return _SECRET_PATTERN.sub(r"\1***", message)
