"""Any OpenAI-compatible chat endpoint, streamed: OpenAI, Gemini, Ollama, vLLM, llama.cpp.

The reply streams token by token through the ``openai`` package's ``AsyncOpenAI``. Every
failure (no connection, an HTTP error, a first token that does not come in time, a reply
that runs too long, a connection that breaks mid-reply, a stream that is not JSON or that
carries an error event) becomes a ``DialogueError`` that names the URL and the status,
never the API key, so the session can say its fallback line.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import openai
from openai import AsyncOpenAI

from ..errors import ConfigurationError
from ..settings import Settings
from .base import DialogueError, Message
from .prompt import MAX_HISTORY_MESSAGES, ThinkFilter, chat_messages, redact

_LOGGER = logging.getLogger(__name__)

# The constructor's defaults are the ``llm_*`` settings' (from settings.py).
_DEFAULTS: dict[str, Any] = {
    name: setting.default
    for name, setting in Settings.model_fields.items()
    if name.startswith("llm_")
}

# Local servers (Ollama, llama.cpp, vLLM) take no key, but the client insists on one.
_PLACEHOLDER_KEY = "not-needed"


class OpenAIResponder:
    """Streams replies from an OpenAI-compatible ``/chat/completions`` endpoint.

    ``timeout_s`` bounds the time spent waiting on the backend for one reply;
    ``first_token_timeout_s`` bounds the wait from the request to the first spoken text.
    """

    name = "openai"

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str | None = None,
        system_prompt: str = "",
        timeout_s: float = _DEFAULTS["llm_timeout_s"],
        max_tokens: int = _DEFAULTS["llm_max_tokens"],
        temperature: float = _DEFAULTS["llm_temperature"],
        first_token_timeout_s: float = _DEFAULTS["llm_first_token_timeout_s"],
        max_history_messages: int = MAX_HISTORY_MESSAGES,
    ) -> None:
        parts = urlsplit(base_url.strip())
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ConfigurationError(
                f"LLM base URL '{redact(base_url, api_key)}' is not an http(s) URL; set "
                "AVATAR_LLM_BASE_URL to e.g. https://api.openai.com/v1 or "
                "http://127.0.0.1:11434/v1 (Ollama)."
            )
        if not model.strip():
            raise ConfigurationError("No LLM model name; set AVATAR_LLM_MODEL.")
        if timeout_s <= 0 or first_token_timeout_s <= 0:
            raise ConfigurationError("LLM time-outs must be positive numbers of seconds.")
        if max_tokens <= 0:
            raise ConfigurationError("AVATAR_LLM_MAX_TOKENS must be a positive number.")
        self.base_url = base_url.strip().rstrip("/")
        self.model = model.strip()
        self.system_prompt = system_prompt
        self.timeout_s = timeout_s
        self.first_token_timeout_s = min(first_token_timeout_s, timeout_s)
        self.max_tokens = max_tokens
        self.temperature = temperature
        self.max_history_messages = max_history_messages
        self._api_key = api_key or None
        self._reasoning_api = False  # the endpoint wants max_completion_tokens, no temperature
        self._client: AsyncOpenAI | None = None
        self._client_loop: asyncio.AbstractEventLoop | None = None
        # What error messages name: the endpoint, never the key.
        self._where = redact(f"{self.base_url}/chat/completions", self._api_key)

    def __repr__(self) -> str:
        return f"OpenAIResponder(base_url={self.base_url!r}, model={self.model!r})"

    def _client_for_loop(self) -> AsyncOpenAI:
        """The HTTP client of the running event loop (its connections belong to one loop)."""
        loop = asyncio.get_running_loop()
        if self._client is None or self._client_loop is not loop:
            self._client = AsyncOpenAI(
                base_url=self.base_url,
                api_key=self._api_key or _PLACEHOLDER_KEY,
                # Our own deadlines decide; the client's only catch what they cannot.
                timeout=openai.Timeout(
                    self.timeout_s + 1.0, connect=min(self.first_token_timeout_s, 10.0)
                ),
                # A retry would double the silence the user hears; the session says a
                # fallback line instead.
                max_retries=0,
            )
            self._client_loop = loop
        return self._client

    async def aclose(self) -> None:
        """Close the HTTP connections (call when the session ends)."""
        if self._client is not None:
            client, self._client = self._client, None
            await client.close()

    async def respond(self, history: list[Message], text: str, language: str) -> AsyncIterator[str]:
        """Stream the reply to ``text`` in ``language``; ``DialogueError`` on any failure."""
        messages = chat_messages(
            self.system_prompt, history, text, language, self.max_history_messages
        )
        client = self._client_for_loop()
        loop = asyncio.get_running_loop()
        started = loop.time()
        first_deadline = started + self.first_token_timeout_s
        waited_s = 0.0  # time spent waiting on the backend, not on our consumer
        spoken = False
        think = ThinkFilter()
        stream: Any = None
        try:
            try:
                async with asyncio.timeout_at(first_deadline):
                    stream = await self._open_stream(client, messages)
                waited_s = loop.time() - started
                chunks = stream.__aiter__()
                while True:
                    wait_started = loop.time()
                    deadline = (
                        first_deadline if not spoken else wait_started + self.timeout_s - waited_s
                    )
                    try:
                        async with asyncio.timeout_at(deadline):
                            chunk = await anext(chunks)
                    except StopAsyncIteration:
                        break
                    finally:
                        waited_s += loop.time() - wait_started
                    piece = think.feed(_content_of(chunk))
                    if piece:
                        if not spoken:
                            spoken = True
                            _LOGGER.debug(
                                "First token from %s after %.0f ms",
                                self._where,
                                (loop.time() - started) * 1000,
                            )
                        yield piece
                tail = think.flush()
                if tail:
                    spoken = True
                    yield tail
            except TimeoutError as error:
                if spoken:
                    raise DialogueError(
                        f"The reply from {self._where} (model {self.model}) took longer than "
                        f"{self.timeout_s:g} s; raise AVATAR_LLM_TIMEOUT_S or lower "
                        "AVATAR_LLM_MAX_TOKENS."
                    ) from error
                raise DialogueError(
                    f"No reply from {self._where} (model {self.model}) within "
                    f"{self.first_token_timeout_s:g} s (first-token time-out, "
                    "AVATAR_LLM_FIRST_TOKEN_TIMEOUT_S)."
                ) from error
            except openai.APIStatusError as error:
                raise DialogueError(
                    f"{self._where} answered HTTP {error.status_code} for model {self.model}: "
                    f"{self._detail(error)}"
                ) from error
            except openai.APITimeoutError as error:
                raise DialogueError(f"Timed out talking to {self._where}.") from error
            except (openai.APIError, OSError) as error:
                if isinstance(error, openai.APIError) and not isinstance(
                    error, openai.APIConnectionError
                ):
                    # An error event inside a stream that had begun: the backend failed.
                    raise DialogueError(
                        f"{self._where} (model {self.model}) reported an error mid-reply: "
                        f"{self._detail(error)}"
                    ) from error
                # openai wraps transport errors (refused, reset, a stream cut short) in
                # APIConnectionError; the underlying cause says which.
                cause = error.__cause__ or error
                what = "Cannot reach" if stream is None else "The connection broke mid-reply to"
                raise DialogueError(
                    f"{what} {self._where}: {type(cause).__name__}: {self._detail(cause)}"
                ) from error
            except (ValueError, TypeError, KeyError, AttributeError, IndexError) as error:
                # Not an OpenAI chat stream: JSON that does not parse, events of another
                # shape (a proxy's HTML, a half-written line, a server of another protocol).
                raise DialogueError(
                    f"{self._where} (model {self.model}) sent a reply that is not an OpenAI "
                    f"chat stream ({type(error).__name__}); check AVATAR_LLM_BASE_URL"
                ) from error
            if not spoken:
                raise DialogueError(f"{self._where} (model {self.model}) returned an empty reply.")
            _LOGGER.debug("Reply from %s done in %.2f s", self._where, loop.time() - started)
        finally:
            if stream is not None:
                # Closing the response stops the server's generation of a reply nobody
                # will hear (a consumer that stopped, a barge-in that cancelled us).
                await _close_quietly(stream)

    async def _open_stream(self, client: AsyncOpenAI, messages: list[dict[str, str]]) -> Any:
        """Start the streamed completion.

        OpenAI's reasoning models refuse ``max_tokens`` and any temperature but the default,
        which every other server accepts: on that refusal, ask once more without them and
        remember it for the session.
        """
        options: dict[str, Any] = (
            {"max_completion_tokens": self.max_tokens}
            if self._reasoning_api
            else {"max_tokens": self.max_tokens, "temperature": self.temperature}
        )
        try:
            return await client.chat.completions.create(
                model=self.model,
                messages=messages,  # type: ignore[arg-type]
                stream=True,
                **options,
            )
        except openai.BadRequestError as error:
            if self._reasoning_api or "max_completion_tokens" not in str(error.message):
                raise
            _LOGGER.info("%s wants max_completion_tokens; asking again", self._where)
            self._reasoning_api = True
            return await client.chat.completions.create(
                model=self.model,
                messages=messages,  # type: ignore[arg-type]
                stream=True,
                max_completion_tokens=self.max_tokens,
            )

    def _detail(self, error: BaseException) -> str:
        """A short, key-free description of ``error``."""
        message = getattr(error, "message", None) or str(error) or type(error).__name__
        message = redact(" ".join(str(message).split()), self._api_key)
        return message if len(message) <= 300 else message[:297] + "..."


def _content_of(chunk: Any) -> str:
    """The text of one streamed chunk ("" for role-only, usage or empty chunks)."""
    choices = getattr(chunk, "choices", None)
    if not choices:
        return ""
    delta = getattr(choices[0], "delta", None)
    content = getattr(delta, "content", None) if delta is not None else None
    return content if isinstance(content, str) else ""


async def _close_quietly(stream: Any) -> None:
    """Close a response stream; a broken connection may fail to close, and is gone anyway."""
    try:
        await stream.close()
    except Exception as error:
        _LOGGER.debug("Closing the LLM stream failed: %s", error)
