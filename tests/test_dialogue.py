"""The dialogue stage: the persona responder, a real OpenAI-compatible server, llama.cpp."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import sys
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from realtime_avatar.dialogue.base import DialogueError, Message
from realtime_avatar.dialogue.openai_compat import OpenAIResponder
from realtime_avatar.dialogue.persona import (
    PersonaResponder,
    parse_persona,
    to_first_person,
    word_deltas,
)
from realtime_avatar.dialogue.prompt import ThinkFilter, chat_messages, redact
from realtime_avatar.dialogue.registry import FALLBACK_LINES, create_responder, fallback_line
from realtime_avatar.errors import ConfigurationError

from .llm_server import LlamaServer, free_port, llama_server, tiny_gguf  # noqa: F401

PERSONA_PATH = Path(__file__).resolve().parents[1] / "src/realtime_avatar/assets/default/persona.md"
SECRET_KEY = "sk-test-SECRET-0123456789"


@pytest.fixture(scope="module")
def persona_text() -> str:
    return PERSONA_PATH.read_text(encoding="utf-8")


@pytest.fixture
def ava(persona_text: str) -> PersonaResponder:
    return PersonaResponder(persona_text, "Ava")


async def _collect(stream: AsyncIterator[str]) -> list[str]:
    return [delta async for delta in stream]


def _reply(responder: object, text: str, language: str = "en") -> list[str]:
    """The deltas of one reply, in a fresh event loop (closing the responder's connections)."""

    async def scenario() -> list[str]:
        try:
            return await _collect(responder.respond([], text, language))  # type: ignore[attr-defined]
        finally:
            if isinstance(responder, OpenAIResponder):
                await responder.aclose()

    return asyncio.run(scenario())


# --- persona responder -------------------------------------------------------------------


def test_persona_facts_leave_out_the_style_section(persona_text: str) -> None:
    facts = parse_persona(persona_text)
    assert len(facts) == 27  # nine facts, each in English, Spanish and Mandarin
    assert [fact.section for fact in facts] == ["Facts"] * 9 + ["Datos"] * 9 + ["事实"] * 9
    assert [fact.language for fact in facts] == ["en"] * 9 + ["es"] * 9 + ["zh"] * 9
    assert not any("brief and concrete" in fact.text for fact in facts)


@pytest.mark.parametrize(
    ("question", "expected"),
    [
        ("What is your name?", "I am Ava"),
        ("who are you", "I am Ava"),
        ("Hi, what's your name?", "I am Ava"),
        ("Where do you run?", "CPU"),
        ("Do you need the internet?", "no cloud service"),
        ("What languages do you speak?", "English, Spanish and Mandarin"),
        ("Can I make my own avatar?", "one photo"),
        ("How do you hear me?", "microphone"),
        ("Where does your face come from?", "NASA portrait"),
    ],
)
def test_persona_answers_from_the_right_fact(
    ava: PersonaResponder, question: str, expected: str
) -> None:
    reply = "".join(_reply(ava, question))
    assert expected in reply
    assert "don't know" not in reply


@pytest.mark.parametrize(
    ("question", "language", "expected"),
    [
        ("¿Cómo te llamas?", "es", "Soy Ava,"),
        ("¿Dónde funcionas?", "es", "CPU"),
        ("你叫什么名字？", "zh", "我是Ava，"),
        ("你会说什么语言？", "zh", "普通话"),
        # The reply language is the argument's, whatever the question's language.
        ("What is your name?", "es", "Soy Ava,"),
    ],
)
def test_persona_answers_spanish_and_mandarin_questions(
    ava: PersonaResponder, question: str, language: str, expected: str
) -> None:
    assert expected in ava.reply(question, language)


@pytest.mark.parametrize(
    ("question", "language"),
    [
        ("What is the capital of Peru?", "en"),
        ("Where is Peru?", "en"),
        ("Can you make me a coffee?", "en"),
        ("How old are you?", "en"),
        ("What's the weather like today?", "en"),
        ("¿Cuál es la capital de Perú?", "es"),
        ("秘鲁的首都是什么？", "zh"),
    ],
)
def test_persona_says_it_does_not_know(ava: PersonaResponder, question: str, language: str) -> None:
    reply = ava.reply(question, language)
    honest = {"en": "don't know", "es": "no lo sé", "zh": "不知道"}[language]
    assert honest in reply
    for fact in ava.facts:  # never an unrelated fact
        assert fact.text not in reply


@pytest.mark.parametrize(
    ("text", "language", "expected"),
    [
        ("Hello!", "en", "Ava"),
        ("How are you?", "en", "doing great"),
        ("Thank you so much", "en", "welcome"),
        ("Goodbye", "en", "Goodbye"),
        ("What can you do?", "en", "answer questions"),
        ("Tell me a joke", "en", "?"),
        ("¡Hola!", "es", "Soy Ava"),
        ("¿Cómo estás?", "es", "Muy bien"),
        ("Muchas gracias", "es", "De nada"),
        ("Adiós", "es", "Adiós"),
        ("¿Qué puedes hacer?", "es", "Puedo conversar"),
        ("Cuéntame un chiste", "es", "?"),
        ("你好", "zh", "我是Ava"),
        ("你好吗？", "zh", "我很好"),
        ("谢谢", "zh", "不客气"),
        ("再见", "zh", "再见"),
        ("你能做什么？", "zh", "聊天"),
        ("讲个笑话", "zh", "？"),
    ],
)
def test_persona_small_talk(ava: PersonaResponder, text: str, language: str, expected: str) -> None:
    reply = ava.reply(text, language)
    assert expected in reply
    assert len(reply) < 160  # one or two sentences


def test_persona_streams_word_deltas_at_once(ava: PersonaResponder) -> None:
    async def first_and_rest() -> tuple[float, list[str]]:
        started = time.perf_counter()
        stream = ava.respond(
            [Message("user", "hi"), Message("assistant", "Hi!")], "Where do you run?", "en"
        )
        first = await anext(stream)
        first_s = time.perf_counter() - started
        return first_s, [first, *[delta async for delta in stream]]

    first_s, deltas = asyncio.run(first_and_rest())
    assert first_s < 0.05  # measured ~0.1 ms: no model, no artificial delay
    assert len(deltas) >= 8
    assert "".join(deltas) == ava.reply("Where do you run?", "en")
    assert all(len(delta.strip()) <= 12 for delta in deltas)  # word-sized


def test_word_deltas_join_back_exactly() -> None:
    for text in ["I run on your CPU, with no cloud.", "我叫Ava。你好吗？", "¡Hola! ¿Qué tal?", ""]:
        deltas = word_deltas(text)
        assert "".join(deltas) == text
    assert word_deltas("我很好，谢谢关心！") == ["我很", "好，", "谢谢", "关心！"]


def test_first_person_rephrasing() -> None:
    assert (
        to_first_person("Ava speaks English and Spanish.", "Ava") == "I speak English and Spanish."
    )
    assert to_first_person("She is a digital twin.", "Ava") == "I am a digital twin."
    assert to_first_person("Her voice is warm.", "Ava") == "My voice is warm."
    assert to_first_person("I run on a CPU.", "Ava") == "I run on a CPU."


def test_third_person_and_chinese_personas() -> None:
    third = PersonaResponder("# Bob\n- Bob lives in Lisbon.\n- He loves sailing.\n", "Bob")
    assert third.reply("Where do you live?", "en") == "I live in Lisbon."
    chinese = PersonaResponder("## 事实\n- 我叫小明，是一个数字人。\n- 我喜欢喝茶。\n", "小明")
    assert "茶" in chinese.reply("你喜欢喝什么？", "zh")
    assert "不知道" in chinese.reply("秘鲁的首都是什么？", "zh")


def test_persona_without_facts_is_honest() -> None:
    empty = PersonaResponder("", "Zed")
    assert "don't know" in empty.reply("Where do you run?", "en")
    assert "Zed" in empty.reply("hello", "en")


# --- shared prompt pieces and the registry -------------------------------------------------


def test_chat_messages_carry_persona_history_and_language() -> None:
    history = [Message("user", "hola"), Message("assistant", "¡Hola!")]
    messages = chat_messages("You are Ava.", history, "¿Qué tal?", "es")
    assert messages[0]["role"] == "system"
    assert "You are Ava." in messages[0]["content"] and "Spanish" in messages[0]["content"]
    assert [m["role"] for m in messages[1:]] == ["user", "assistant", "user"]
    assert messages[-1]["content"] == "¿Qué tal?"
    long_history = [Message("user", str(i)) for i in range(40)]
    assert len(chat_messages("", long_history, "x", "en", max_history=4)) == 6


def test_think_filter_drops_reasoning_split_across_deltas() -> None:
    spoken = ThinkFilter()
    pieces = ["<thi", "nk>plan the ", "answer</th", "ink>Hello", " there <", "3"]
    out = "".join(spoken.feed(piece) for piece in pieces) + spoken.flush()
    assert out == "Hello there <3"


def test_redact_masks_keys() -> None:
    message = redact(
        f"failed with Authorization: Bearer {SECRET_KEY} and key {SECRET_KEY}", SECRET_KEY
    )
    assert SECRET_KEY not in message


def test_registry_names_and_errors(persona_text: str, tmp_path: Path) -> None:
    settings = SimpleNamespace()
    assert isinstance(create_responder("persona", settings, persona_text, "Ava"), PersonaResponder)
    with pytest.raises(ConfigurationError, match="persona, openai, llama-cpp"):
        create_responder("gpt-5", settings, persona_text, "Ava")
    with pytest.raises(ConfigurationError, match="AVATAR_LLAMA_MODEL_PATH"):
        create_responder("llama-cpp", settings, persona_text, "Ava")
    missing = SimpleNamespace(llama_model_path=tmp_path / "nope.gguf")
    with pytest.raises(ConfigurationError, match="nope.gguf"):
        create_responder("llama_cpp", missing, persona_text, "Ava")
    local = SimpleNamespace(llm_base_url="http://127.0.0.1:11434/v1", llm_model="qwen2.5:0.5b")
    responder = create_responder("openai", local, persona_text, "Ava")
    assert isinstance(responder, OpenAIResponder)
    assert "Ava" in responder.system_prompt and "NASA" in responder.system_prompt
    with pytest.raises(ConfigurationError, match="http"):
        create_responder("openai", SimpleNamespace(llm_base_url="localhost:11434"), "", "Ava")


def test_registry_wants_a_key_for_hosted_apis(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(ConfigurationError, match="AVATAR_LLM_API_KEY"):
        create_responder("openai", SimpleNamespace(), "", "Ava")
    responder = create_responder("openai", SimpleNamespace(llm_api_key=SECRET_KEY), "", "Ava")
    assert SECRET_KEY not in repr(responder)


def test_fallback_lines() -> None:
    assert set(FALLBACK_LINES) == {"en", "es", "zh"}
    assert fallback_line("en") == "Sorry, I lost my train of thought. Could you say that again?"
    assert fallback_line("zh-CN") == FALLBACK_LINES["zh"]
    assert fallback_line("fr") == FALLBACK_LINES["en"]


# --- OpenAI-compatible responder: failure modes without a model ---------------------------


def test_openai_wrong_port_fails_fast_without_leaking_the_key(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    url = f"http://127.0.0.1:{free_port()}/v1"
    responder = OpenAIResponder(url, "tiny", api_key=SECRET_KEY, first_token_timeout_s=5.0)
    started = time.monotonic()
    with pytest.raises(DialogueError) as error:
        _reply(responder, "hello")
    assert time.monotonic() - started < 2.0
    assert url in str(error.value) and "Cannot reach" in str(error.value)
    assert SECRET_KEY not in str(error.value)
    assert SECRET_KEY not in caplog.text


@contextlib.asynccontextmanager
async def _silent_server() -> AsyncIterator[int]:
    """A TCP server that accepts connections, reads, and never answers."""
    connections: list[asyncio.StreamWriter] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(writer)
        with contextlib.suppress(Exception):
            while await reader.read(65536):
                pass

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        for writer in connections:
            writer.close()
        server.close()
        await server.wait_closed()


def test_openai_first_token_timeout_on_a_silent_server() -> None:
    async def scenario() -> float:
        async with _silent_server() as port:
            responder = OpenAIResponder(
                f"http://127.0.0.1:{port}/v1", "tiny", timeout_s=10.0, first_token_timeout_s=0.5
            )
            started = time.monotonic()
            with pytest.raises(DialogueError, match="first-token"):
                await _collect(responder.respond([], "hello", "en"))
            await responder.aclose()
            return time.monotonic() - started

    elapsed = asyncio.run(scenario())
    assert 0.45 <= elapsed < 2.0


def _chunk_json(content: str) -> str:
    """One ``chat.completion.chunk`` as an OpenAI-compatible server streams it."""
    delta = {"index": 0, "delta": {"content": content}, "finish_reason": None}
    chunk = {"id": "c", "object": "chat.completion.chunk", "created": 0, "model": "m"}
    return json.dumps({**chunk, "choices": [delta]})


@contextlib.asynccontextmanager
async def _stalling_stream_server() -> AsyncIterator[int]:
    """An HTTP server that starts a streamed reply with one token, then goes quiet."""
    event = f"data: {_chunk_json('Hello')}\n\n".encode()
    head = (
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    writers: list[asyncio.StreamWriter] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        await reader.readuntil(b"\r\n\r\n")
        writer.write(head + f"{len(event):x}\r\n".encode() + event + b"\r\n")
        await writer.drain()
        await asyncio.sleep(30)

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        for writer in writers:
            writer.close()
        server.close()


def test_openai_total_timeout_after_the_first_token() -> None:
    async def scenario() -> tuple[list[str], str, float]:
        async with _stalling_stream_server() as port:
            responder = OpenAIResponder(
                f"http://127.0.0.1:{port}/v1", "m", timeout_s=1.0, first_token_timeout_s=0.5
            )
            deltas: list[str] = []
            started = time.monotonic()
            with pytest.raises(DialogueError) as error:
                async for delta in responder.respond([], "hello", "en"):
                    deltas.append(delta)
            elapsed = time.monotonic() - started
            await responder.aclose()
            return deltas, str(error.value), elapsed

    deltas, message, elapsed = asyncio.run(scenario())
    assert deltas == ["Hello"]
    assert "took longer than 1 s" in message
    assert 0.9 <= elapsed < 2.5


@contextlib.asynccontextmanager
async def _reasoning_api_server(requests: list[dict]) -> AsyncIterator[int]:
    """An endpoint that, like OpenAI's reasoning models, refuses ``max_tokens`` with a 400."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode()
        length = int(re.search(r"(?i)content-length:\s*(\d+)", head).group(1))  # type: ignore[union-attr]
        body = json.loads(await reader.readexactly(length))
        requests.append(body)
        if "max_tokens" in body:
            error = json.dumps(
                {
                    "error": {
                        "message": "Unsupported parameter: 'max_tokens' is not supported with "
                        "this model. Use 'max_completion_tokens' instead.",
                        "type": "invalid_request_error",
                        "param": "max_tokens",
                        "code": "unsupported_parameter",
                    }
                }
            ).encode()
            writer.write(
                b"HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\n"
                + f"Content-Length: {len(error)}\r\nConnection: close\r\n\r\n".encode()
                + error
            )
        else:
            events = "".join(f"data: {_chunk_json(word)}\n\n" for word in ("Hello", " there", "!"))
            events += "data: [DONE]\n\n"
            payload = events.encode()
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                + f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n".encode()
                + payload
            )
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


def test_openai_retries_once_with_max_completion_tokens() -> None:
    requests: list[dict] = []

    async def scenario() -> tuple[list[str], list[str]]:
        async with _reasoning_api_server(requests) as port:
            responder = OpenAIResponder(f"http://127.0.0.1:{port}/v1", "o-model", max_tokens=50)
            first = await _collect(responder.respond([], "hi", "en"))
            second = await _collect(responder.respond([], "hi again", "en"))
            await responder.aclose()
            return first, second

    first, second = asyncio.run(scenario())
    assert "".join(first) == "".join(second) == "Hello there!"
    # Refused once, then remembered: max_completion_tokens and no temperature.
    assert ["max_tokens" in r for r in requests] == [True, False, False]
    assert requests[1]["max_completion_tokens"] == 50 and "temperature" not in requests[1]


# --- OpenAI-compatible responder against a real llama.cpp server --------------------------


def _server_responder(server: LlamaServer, **options: float) -> OpenAIResponder:
    return OpenAIResponder(
        server.base_url,
        server.model_id,
        system_prompt="You are Ava.",
        max_tokens=int(options.pop("max_tokens", 24)),
        **options,  # type: ignore[arg-type]
    )


@pytest.mark.slow  # starts a llama.cpp server
def test_openai_streams_from_a_real_llama_cpp_server(llama_server: LlamaServer) -> None:  # noqa: F811
    responder = _server_responder(llama_server)

    async def scenario() -> tuple[float, list[str]]:
        started = time.monotonic()
        stream = responder.respond(
            [Message("user", "hi"), Message("assistant", "Hello!")], "Who are you?", "en"
        )
        first = await anext(stream)
        first_s = time.monotonic() - started
        deltas = [first, *[delta async for delta in stream]]
        await responder.aclose()
        return first_s, deltas

    first_s, deltas = asyncio.run(scenario())
    logging.getLogger(__name__).info("llama.cpp server first token after %.0f ms", first_s * 1000)
    assert len(deltas) >= 3
    assert "".join(deltas).strip()
    assert first_s < 5.0


@pytest.mark.slow  # starts a llama.cpp server
def test_openai_consumer_can_stop_listening(llama_server: LlamaServer) -> None:  # noqa: F811
    responder = _server_responder(llama_server, max_tokens=500)

    async def scenario() -> list[str]:
        stream = responder.respond([], "Tell me a long story.", "en")
        await anext(stream)
        await stream.aclose()  # a barge-in: the stream is closed, the server stops
        deltas = await _collect(responder.respond([], "And now?", "en"))
        await responder.aclose()
        return deltas

    assert "".join(asyncio.run(scenario())).strip()


@pytest.mark.slow  # starts a llama.cpp server
def test_openai_http_error_names_url_and_status(llama_server: LlamaServer) -> None:  # noqa: F811
    # The server answers 404 under a path that is not an OpenAI API root.
    base = llama_server.base_url.removesuffix("/v1") + "/no-such-api"
    responder = OpenAIResponder(base, "tiny", api_key=SECRET_KEY)
    with pytest.raises(DialogueError) as error:
        _reply(responder, "hello")
    assert "HTTP 404" in str(error.value) and base in str(error.value)
    assert SECRET_KEY not in str(error.value)


@pytest.mark.slow  # starts a llama.cpp server
def test_openai_server_killed_mid_session(tiny_gguf: Path, tmp_path: Path) -> None:  # noqa: F811
    pytest.importorskip("llama_cpp.server.app", reason="llama-cpp-python[server] is not installed")
    server = LlamaServer(tiny_gguf, tmp_path / "server.log").start()
    try:
        responder = _server_responder(server, max_tokens=1500)

        async def scenario() -> tuple[str, float]:
            # A reply is under way when the server dies.
            stream = responder.respond([], "Tell me a long story.", "en")
            await anext(stream)
            server.stop()
            outcome = "completed"
            try:
                async for _ in stream:
                    pass
            except DialogueError as error:
                outcome = str(error)
            # The next turn fails fast: nothing listens on the port any more.
            started = time.monotonic()
            with pytest.raises(DialogueError, match="Cannot reach"):
                await _collect(responder.respond([], "Are you there?", "en"))
            await responder.aclose()
            return outcome, time.monotonic() - started

        outcome, next_turn_s = asyncio.run(scenario())
    finally:
        server.stop()
    assert "broke mid-reply" in outcome
    assert next_turn_s < 2.0


# --- llama.cpp in-process ---------------------------------------------------------------


@pytest.fixture(scope="module")
def local_responder(tiny_gguf: Path):  # type: ignore[no-untyped-def]  # noqa: F811
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (see STACK.md)")
    from realtime_avatar.dialogue.llama_local import LlamaCppResponder

    responder = LlamaCppResponder(
        tiny_gguf, n_ctx=2048, n_threads=1, system_prompt="You are Ava.", max_tokens=24
    )
    responder.load()
    return responder


@pytest.mark.slow  # loads a GGUF model in llama.cpp
def test_llama_cpp_streams_in_process(local_responder) -> None:  # type: ignore[no-untyped-def]
    deltas = _reply(local_responder, "Who are you?")
    assert len(deltas) >= 3
    assert "".join(deltas).strip()
    local_responder.close()


@pytest.mark.slow  # loads a GGUF model in llama.cpp
def test_llama_cpp_stops_when_the_consumer_stops(local_responder) -> None:  # type: ignore[no-untyped-def]
    local_responder.max_tokens = 1500

    async def scenario() -> None:
        stream = local_responder.respond([], "Tell me a long story.", "en")
        await anext(stream)
        await anext(stream)
        await stream.aclose()  # the consumer stops listening (a barge-in)

    try:
        asyncio.run(scenario())
        started = time.monotonic()
        local_responder.close(timeout_s=2.0)  # joins the worker
        assert time.monotonic() - started < 1.0
        assert not any(t.name == "llama-generate" and t.is_alive() for t in threading.enumerate())
    finally:
        local_responder.max_tokens = 24
    # The model is free again for the next turn.
    assert "".join(_reply(local_responder, "Hello?")).strip()


@pytest.mark.slow  # loads a GGUF model in llama.cpp
def test_llama_cpp_cancelled_task_stops_generation(local_responder) -> None:  # type: ignore[no-untyped-def]
    local_responder.max_tokens = 1500

    async def scenario() -> None:
        got_one = asyncio.Event()

        async def consume() -> None:
            async for _ in local_responder.respond([], "Tell me a long story.", "en"):
                got_one.set()

        task = asyncio.create_task(consume())
        await got_one.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    try:
        asyncio.run(scenario())
        local_responder.close(timeout_s=2.0)
        assert not any(t.name == "llama-generate" and t.is_alive() for t in threading.enumerate())
    finally:
        local_responder.max_tokens = 24


def test_llama_cpp_not_installed_says_how_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from realtime_avatar.dialogue.llama_local import LlamaCppResponder

    model = tmp_path / "model.gguf"
    model.write_bytes(b"GGUF")
    monkeypatch.setitem(sys.modules, "llama_cpp", None)  # as if the package were absent
    with pytest.raises(ConfigurationError, match=r"pip install llama-cpp-python==0\.3\.36"):
        LlamaCppResponder(model)


def test_llama_cpp_missing_file(tmp_path: Path) -> None:
    from realtime_avatar.dialogue.llama_local import LlamaCppResponder

    with pytest.raises(ConfigurationError, match="does not exist"):
        LlamaCppResponder(tmp_path / "missing.gguf", n_ctx=512)
