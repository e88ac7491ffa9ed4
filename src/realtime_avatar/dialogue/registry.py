"""Which responder writes the avatar's replies: settings names mapped to factories.

Settings read here (``getattr``, so any object with these attributes works; one that is
missing or None takes its default from ``settings.py``):

=============================  ==============================
setting                        used by
=============================  ==============================
``llm_base_url``               openai
``llm_model``                  openai
``llm_api_key``                openai (None: ``OPENAI_API_KEY``)
``llm_timeout_s``              openai, llama-cpp
``llm_first_token_timeout_s``  openai, llama-cpp
``llm_max_tokens``             openai, llama-cpp
``llm_temperature``            openai, llama-cpp
``llama_model_path``           llama-cpp
``llama_n_ctx``                llama-cpp
``llama_n_threads``            llama-cpp
``llama_chat_format``          llama-cpp (None: from the GGUF file)
=============================  ==============================
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from ..errors import ConfigurationError
from ..settings import Settings
from ..text.language import normalize_language_code
from .base import Responder

_LOGGER = logging.getLogger(__name__)

DEFAULT_RESPONDER: str = Settings.model_fields["dialogue"].default

# What the avatar says when the backend fails or times out, so that the user is never
# left in silence; the session then goes on listening.
FALLBACK_LINES: dict[str, str] = {
    "en": "Sorry, I lost my train of thought. Could you say that again?",
    "es": "Perdona, se me ha ido el hilo. ¿Puedes repetirlo?",
    "zh": "抱歉，我走神了。你能再说一遍吗？",
}

# Hosted endpoints that always need a key: without one every request would be a 401.
_HOSTS_NEEDING_KEY = ("api.openai.com", "generativelanguage.googleapis.com")


def fallback_line(language: str) -> str:
    """The fallback line in ``language``, English when there is none in that language."""
    return FALLBACK_LINES.get(normalize_language_code(language or "en"), FALLBACK_LINES["en"])


def _setting(settings: Any, name: str) -> Any:
    """``settings.<name>``; the default declared in ``Settings`` when missing or None."""
    value = getattr(settings, name, None)
    return Settings.model_fields[name].default if value is None else value


def _secret(value: Any) -> str | None:
    """A plain string from a ``str`` or pydantic ``SecretStr`` setting."""
    if value is None:
        return None
    reveal = getattr(value, "get_secret_value", None)
    text = reveal() if callable(reveal) else str(value)
    return text.strip() or None


def _make_persona(settings: Any, persona: str, avatar_name: str) -> Responder:
    from .persona import PersonaResponder

    return PersonaResponder(persona, avatar_name)


def _make_openai(settings: Any, persona: str, avatar_name: str) -> Responder:
    from .openai_compat import OpenAIResponder
    from .prompt import build_system_prompt

    base_url = str(_setting(settings, "llm_base_url"))
    api_key = _secret(getattr(settings, "llm_api_key", None)) or _secret(
        os.environ.get("OPENAI_API_KEY")
    )
    host = (urlsplit(base_url).hostname or "").lower()
    if api_key is None and host.endswith(_HOSTS_NEEDING_KEY):
        raise ConfigurationError(
            f"The openai dialogue backend at {host} needs an API key; set AVATAR_LLM_API_KEY "
            "(or OPENAI_API_KEY), or point AVATAR_LLM_BASE_URL at a local server such as "
            "Ollama (http://127.0.0.1:11434/v1)."
        )
    return OpenAIResponder(
        base_url=base_url,
        model=str(_setting(settings, "llm_model")),
        api_key=api_key,
        system_prompt=build_system_prompt(persona, avatar_name),
        timeout_s=float(_setting(settings, "llm_timeout_s")),
        max_tokens=int(_setting(settings, "llm_max_tokens")),
        temperature=float(_setting(settings, "llm_temperature")),
        first_token_timeout_s=float(_setting(settings, "llm_first_token_timeout_s")),
    )


def _make_llama_cpp(settings: Any, persona: str, avatar_name: str) -> Responder:
    from .llama_local import LlamaCppResponder
    from .prompt import build_system_prompt

    model_path = getattr(settings, "llama_model_path", None)
    if not model_path:
        raise ConfigurationError(
            "The llama-cpp dialogue backend needs a model: set AVATAR_LLAMA_MODEL_PATH to a "
            ".gguf file."
        )
    chat_format = getattr(settings, "llama_chat_format", None)
    return LlamaCppResponder(
        model_path=model_path,
        n_ctx=int(_setting(settings, "llama_n_ctx")),
        n_threads=int(_setting(settings, "llama_n_threads")),
        system_prompt=build_system_prompt(persona, avatar_name),
        max_tokens=int(_setting(settings, "llm_max_tokens")),
        temperature=float(_setting(settings, "llm_temperature")),
        first_token_timeout_s=float(_setting(settings, "llm_first_token_timeout_s")),
        timeout_s=float(_setting(settings, "llm_timeout_s")),
        chat_format=str(chat_format) if chat_format else None,
    )


# Add a backend by adding a name here; the session picks one by name.
RESPONDERS: dict[str, Callable[[Any, str, str], Responder]] = {
    "persona": _make_persona,
    "openai": _make_openai,
    "llama-cpp": _make_llama_cpp,
}


def create_responder(name: str, settings: Any, persona: str, avatar_name: str) -> Responder:
    """A new responder ``name`` for one session, from the avatar's persona and name.

    Raises ``ConfigurationError`` for an unknown name or a backend that is not usable as
    configured (no model file, llama-cpp-python missing, no API key for a hosted API).
    """
    key = (name or DEFAULT_RESPONDER).strip().lower().replace("_", "-")
    factory = RESPONDERS.get(key)
    if factory is None:
        raise ConfigurationError(
            f"Unknown dialogue backend '{name}'; choose one of {', '.join(RESPONDERS)}."
        )
    responder = factory(settings, persona, avatar_name)
    _LOGGER.debug("Dialogue backend %s: %r", key, responder)
    return responder
