"""A local GGUF model run in-process by llama.cpp (the ``llama-cpp-python`` package).

``llama_cpp`` is imported only when this backend is chosen: it is an optional, compiled
dependency. The model loads once per process and is shared by sessions; one generation
runs at a time per model, in a worker thread that hands tokens to the event loop through
a queue. When the consumer stops listening (barge-in cancels the task, or it stops
iterating), the worker stops after the token it is computing.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigurationError
from ..settings import Settings
from .base import DialogueError, Message
from .prompt import MAX_HISTORY_MESSAGES, ThinkFilter, chat_messages

_LOGGER = logging.getLogger(__name__)

# The constructor's defaults are the ``llm_*`` / ``llama_*`` settings' (from settings.py).
_DEFAULTS: dict[str, Any] = {
    name: setting.default
    for name, setting in Settings.model_fields.items()
    if name.startswith(("llm_", "llama_"))
}

INSTALL_HINT = (
    'CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON '
    '-DGGML_F16C=ON -DGGML_BMI2=ON" pip install llama-cpp-python==0.3.36'
)


@dataclass(slots=True)
class _LoadedModel:
    """A loaded model and the lock that lets one generation use it at a time."""

    llama: Any
    lock: threading.Lock = field(default_factory=threading.Lock)


# The loaded-model cache: one model per (file, context, threads, chat format) per process.
_MODELS: dict[tuple[str, int, int, str | None], _LoadedModel] = {}
_MODELS_LOCK = threading.Lock()
_DONE = object()  # the worker's last item on the queue


def import_llama_cpp() -> Any:
    """The ``llama_cpp`` module, or a ``ConfigurationError`` saying how to install it."""
    try:
        import llama_cpp
    except ImportError as error:
        raise ConfigurationError(
            "The llama-cpp dialogue backend needs the llama-cpp-python package, which is not "
            f"installed. Install it with: {INSTALL_HINT} (a 7-9 minute build), or choose "
            "another backend with AVATAR_DIALOGUE=persona or openai."
        ) from error
    return llama_cpp


class LlamaCppResponder:
    """Streams replies from a local GGUF model through llama.cpp.

    The model loads on the first reply (in a worker thread, so the event loop keeps
    running) or on ``load()``; ``first_token_timeout_s`` and ``timeout_s`` start after it
    is loaded, and include waiting for another session's generation to finish.
    """

    name = "llama-cpp"

    def __init__(
        self,
        model_path: str | Path,
        n_ctx: int = _DEFAULTS["llama_n_ctx"],
        n_threads: int = _DEFAULTS["llama_n_threads"],
        system_prompt: str = "",
        max_tokens: int = _DEFAULTS["llm_max_tokens"],
        temperature: float = _DEFAULTS["llm_temperature"],
        first_token_timeout_s: float = _DEFAULTS["llm_first_token_timeout_s"],
        timeout_s: float = _DEFAULTS["llm_timeout_s"],
        chat_format: str | None = None,
        max_history_messages: int = MAX_HISTORY_MESSAGES,
    ) -> None:
        path = Path(model_path).expanduser()
        if not path.is_file():
            raise ConfigurationError(
                f"LLM model file '{path}' does not exist; set AVATAR_LLAMA_MODEL_PATH to a "
                ".gguf file."
            )
        if n_ctx < 64 or n_threads < 1 or max_tokens < 1:
            raise ConfigurationError(
                "llama-cpp needs n_ctx >= 64, n_threads >= 1 and max_tokens >= 1 "
                "(AVATAR_LLAMA_N_CTX, AVATAR_LLAMA_N_THREADS, AVATAR_LLM_MAX_TOKENS)."
            )
        if timeout_s <= 0 or first_token_timeout_s <= 0:
            raise ConfigurationError("LLM time-outs must be positive numbers of seconds.")
        import_llama_cpp()  # fail at configuration time, not on the first question
        self.model_path = path.resolve()
        self.n_ctx = n_ctx
        self.n_threads = n_threads
        self.system_prompt = system_prompt
        self.max_tokens = max_tokens
        self.temperature = temperature
        self.first_token_timeout_s = min(first_token_timeout_s, timeout_s)
        self.timeout_s = timeout_s
        self.chat_format = chat_format or None
        self.max_history_messages = max_history_messages
        self._workers: set[threading.Thread] = set()
        self._worker_errors: list[BaseException] = []

    def __repr__(self) -> str:
        return f"LlamaCppResponder(model_path={str(self.model_path)!r})"

    def load(self) -> Any:
        """The loaded ``llama_cpp.Llama``, loading it on first use (blocking: seconds)."""
        return self._model().llama

    def _model(self) -> _LoadedModel:
        key = (str(self.model_path), self.n_ctx, self.n_threads, self.chat_format)
        with _MODELS_LOCK:
            model = _MODELS.get(key)
            if model is None:
                llama_cpp = import_llama_cpp()
                _LOGGER.info("Loading %s (n_ctx=%d)", self.model_path, self.n_ctx)
                try:
                    llama = llama_cpp.Llama(
                        model_path=str(self.model_path),
                        n_ctx=self.n_ctx,
                        n_threads=self.n_threads,
                        n_threads_batch=self.n_threads,
                        chat_format=self.chat_format,
                        verbose=False,
                    )
                except (ValueError, RuntimeError, OSError) as error:
                    raise ConfigurationError(
                        f"llama.cpp cannot load '{self.model_path}': {error}. Is it a GGUF "
                        "model file that this llama-cpp-python version supports?"
                    ) from error
                model = _LoadedModel(llama)
                _MODELS[key] = model
            return model

    async def respond(self, history: list[Message], text: str, language: str) -> AsyncIterator[str]:
        """Stream the reply to ``text`` in ``language``; ``DialogueError`` on failure."""
        messages = chat_messages(
            self.system_prompt, history, text, language, self.max_history_messages
        )
        try:
            model = await asyncio.to_thread(self._model)
        except ConfigurationError as error:
            # The session expects DialogueError from respond(); the cause stays in the log.
            _LOGGER.error("%s", error.message)
            raise DialogueError(error.message) from error
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[object] = asyncio.Queue()
        stop = threading.Event()

        def post(item: object) -> None:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, item)
            except RuntimeError:  # the loop is closed: nobody is listening any more
                stop.set()

        worker = threading.Thread(
            target=self._generate,
            args=(model, messages, post, stop),
            name="llama-generate",
            daemon=True,
        )
        started = loop.time()
        first_deadline = started + self.first_token_timeout_s
        total_deadline = started + self.timeout_s
        spoken = False
        think = ThinkFilter()
        self._workers.add(worker)
        worker.start()
        try:
            while True:
                try:
                    async with asyncio.timeout_at(total_deadline if spoken else first_deadline):
                        item = await queue.get()
                except TimeoutError as error:
                    raise DialogueError(self._timeout_message(spoken)) from error
                if item is _DONE:
                    break
                if isinstance(item, BaseException):
                    if item in self._worker_errors:
                        self._worker_errors.remove(item)  # seen here: close() need not raise it
                    raise DialogueError(
                        f"llama.cpp failed while answering with {self.model_path.name}: "
                        f"{type(item).__name__}: {item}"
                    ) from item
                piece = think.feed(str(item))
                if piece:
                    if not spoken:
                        spoken = True
                        _LOGGER.debug("First token after %.0f ms", (loop.time() - started) * 1000)
                    yield piece
            tail = think.flush()
            if tail:
                spoken = True
                yield tail
            if not spoken:
                raise DialogueError(f"{self.model_path.name} returned an empty reply.")
        finally:
            # Reached on completion, on error, on cancellation and when the consumer stops
            # iterating: the worker sees the flag before its next token.
            stop.set()

    def _timeout_message(self, spoken: bool) -> str:
        if spoken:
            return (
                f"The reply from {self.model_path.name} took longer than {self.timeout_s:g} s; "
                "raise AVATAR_LLM_TIMEOUT_S or lower AVATAR_LLM_MAX_TOKENS."
            )
        return (
            f"No first token from {self.model_path.name} within "
            f"{self.first_token_timeout_s:g} s (AVATAR_LLM_FIRST_TOKEN_TIMEOUT_S); the model "
            "may be too slow for this CPU, or busy with another session."
        )

    def _generate(
        self,
        model: _LoadedModel,
        messages: list[dict[str, str]],
        post: Callable[[object], None],
        stop: threading.Event,
    ) -> None:
        """Worker thread: generate under the model's lock and post each text piece."""
        try:
            with model.lock:
                if stop.is_set():
                    return  # the consumer left while we waited for another generation
                chunks = model.llama.create_chat_completion(
                    messages=messages,
                    stream=True,
                    max_tokens=self.max_tokens,
                    temperature=self.temperature,
                )
                try:
                    for chunk in chunks:
                        if stop.is_set():
                            _LOGGER.debug("Generation stopped: the consumer left")
                            break
                        choices = chunk.get("choices") or [{}]
                        content = (choices[0].get("delta") or {}).get("content")
                        if content:
                            post(content)
                finally:
                    chunks.close()  # ends llama-cpp-python's generator and its state
        except Exception as error:
            _LOGGER.warning("llama.cpp generation failed: %s", error)
            self._worker_errors.append(error)
            post(error)
        finally:
            post(_DONE)
            self._workers.discard(threading.current_thread())

    def close(self, timeout_s: float = 5.0) -> None:
        """Wait for running generations to stop; re-raise a worker's error nobody saw.

        Call it when the session ends (after the consumer stopped listening, so that the
        workers have been told to stop).
        """
        for worker in list(self._workers):
            worker.join(timeout_s)
            if worker.is_alive():
                _LOGGER.warning("llama.cpp generation still running after %.1f s", timeout_s)
        errors, self._worker_errors = self._worker_errors, []
        if errors:
            raise DialogueError(f"llama.cpp generation failed: {errors[-1]}") from errors[-1]

    async def aclose(self) -> None:
        """``close()`` without blocking the event loop."""
        await asyncio.to_thread(self.close)
