"""Test support: a tiny random GGUF model, and a real llama.cpp server that serves it.

The model is written with the ``gguf`` package: the llama architecture, 2 layers, 64
dimensions, and a SentencePiece-style ("llama") vocabulary of control tokens, the 256 byte
tokens llama.cpp falls back on, and printable single characters. Its weights are random,
so it writes gibberish, but llama.cpp loads it, tokenizes any prompt and streams tokens
like any other model, in milliseconds on one thread.

Two details keep its output usable by tests: the first hidden dimension is a constant the
layers never change, and the output rows of end-of-text, control and non-printable byte
tokens point against it, so the model never stops early or emits broken UTF-8.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

_LOGGER = logging.getLogger(__name__)

EMBEDDING_DIM = 64
LAYERS = 2
HEADS = 4
FEED_FORWARD_DIM = 128
CONTEXT_TOKENS = 2048

# Token types of the GGUF "llama" (SentencePiece) vocabulary.
_NORMAL, _UNKNOWN, _CONTROL, _BYTE = 1, 2, 3, 6
_CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|>{{ message['content'] }}"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def _vocabulary() -> tuple[list[str], list[float], list[int], set[int]]:
    """Tokens, scores, types, and the ids the model must never produce."""
    tokens = ["<unk>", "<s>", "</s>"]
    types = [_UNKNOWN, _CONTROL, _CONTROL]
    banned = {0, 1, 2}
    for byte in range(256):
        tokens.append(f"<0x{byte:02X}>")
        types.append(_BYTE)
        if not 0x20 <= byte < 0x7F:
            banned.add(len(tokens) - 1)  # control characters, and halves of UTF-8 sequences
    # Printable ASCII as pieces, "▁" standing for a space as SentencePiece writes it; a few
    # words so that the text has spaces between runs of letters.
    pieces = ["▁", *(chr(code) for code in range(0x21, 0x7F))]
    pieces += ["▁the", "▁and", "▁you", "▁avatar", "▁hello", "▁I", "▁am", "▁Ava"]
    for piece in pieces:
        tokens.append(piece)
        types.append(_NORMAL)
    scores = [0.0 if kind != _NORMAL else -float(index) for index, kind in enumerate(types)]
    return tokens, scores, types, banned


def write_tiny_gguf(path: Path, seed: int = 0) -> Path:
    """Write the tiny random llama model to ``path`` (about 200 KB) and return the path."""
    import gguf

    rng = np.random.default_rng(seed)
    tokens, scores, types, banned = _vocabulary()
    vocab = len(tokens)
    dim, ff = EMBEDDING_DIM, FEED_FORWARD_DIM

    def weight(rows: int, cols: int, scale: float = 0.02) -> np.ndarray:
        return (rng.standard_normal((rows, cols)) * scale).astype(np.float32)

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("tiny-random-llama")
    writer.add_context_length(CONTEXT_TOKENS)
    writer.add_embedding_length(dim)
    writer.add_block_count(LAYERS)
    writer.add_feed_forward_length(ff)
    writer.add_head_count(HEADS)
    writer.add_head_count_kv(HEADS)
    writer.add_rope_dimension_count(dim // HEADS)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_vocab_size(vocab)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    writer.add_unk_token_id(0)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_add_bos_token(True)
    writer.add_add_eos_token(False)
    writer.add_chat_template(_CHAT_TEMPLATE)

    # Dimension 0 carries a constant 30 through the residual stream: embeddings set it,
    # and no layer writes to it (row 0 of the output projections is zero).
    embeddings = weight(vocab, dim, 1.0)
    embeddings[:, 0] = 30.0
    writer.add_tensor("token_embd.weight", embeddings)
    for layer in range(LAYERS):
        prefix = f"blk.{layer}"
        writer.add_tensor(f"{prefix}.attn_norm.weight", np.ones(dim, dtype=np.float32))
        writer.add_tensor(f"{prefix}.attn_q.weight", weight(dim, dim))
        writer.add_tensor(f"{prefix}.attn_k.weight", weight(dim, dim))
        writer.add_tensor(f"{prefix}.attn_v.weight", weight(dim, dim))
        attn_output = weight(dim, dim)
        attn_output[0, :] = 0.0
        writer.add_tensor(f"{prefix}.attn_output.weight", attn_output)
        writer.add_tensor(f"{prefix}.ffn_norm.weight", np.ones(dim, dtype=np.float32))
        writer.add_tensor(f"{prefix}.ffn_gate.weight", weight(ff, dim))
        writer.add_tensor(f"{prefix}.ffn_up.weight", weight(ff, dim))
        ffn_down = weight(dim, ff)
        ffn_down[0, :] = 0.0
        writer.add_tensor(f"{prefix}.ffn_down.weight", ffn_down)
    writer.add_tensor("output_norm.weight", np.ones(dim, dtype=np.float32))
    # After the final norm, dimension 0 is about +7.7 for every token and the others about
    # 0.26: a row with -3 there gets a logit near -23 against about ±2 for the rest, so
    # those tokens are never sampled.
    output = weight(vocab, dim, 1.0)
    output[:, 0] = 0.0
    output[sorted(banned), 0] = -3.0
    writer.add_tensor("output.weight", output)

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class LlamaServer:
    """A ``python -m llama_cpp.server`` subprocess on 127.0.0.1, serving one model."""

    def __init__(self, model_path: Path, log_path: Path, port: int | None = None) -> None:
        self.model_path = model_path
        self.log_path = log_path
        self.port = port or free_port()
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self.model_id = "tiny"
        self.process: subprocess.Popen[bytes] | None = None
        self.startup_s = 0.0

    def start(self, timeout_s: float = 60.0) -> LlamaServer:
        """Start the server and wait until ``/v1/models`` answers."""
        command = [
            sys.executable, "-m", "llama_cpp.server",
            "--model", str(self.model_path),
            "--model_alias", self.model_id,
            "--host", "127.0.0.1",
            "--port", str(self.port),
            "--n_threads", "1",
            "--n_threads_batch", "1",
            "--n_ctx", str(CONTEXT_TOKENS),
        ]  # fmt: skip
        started = time.monotonic()
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, env={**os.environ}
            )
        deadline = started + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"llama_cpp.server exited with {self.process.returncode}: "
                    f"{self.log_path.read_text(errors='replace')[-2000:]}"
                )
            with contextlib.suppress(httpx.HTTPError):
                response = httpx.get(f"{self.base_url}/models", timeout=1.0)
                if response.status_code == 200:
                    self.startup_s = time.monotonic() - started
                    _LOGGER.info("llama_cpp.server up in %.1f s", self.startup_s)
                    return self
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"llama_cpp.server did not answer within {timeout_s:g} s")

    def stop(self) -> None:
        """Kill the server (SIGKILL: a crash, as far as clients can tell) and reap it."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)


@contextlib.contextmanager
def running_server(model_path: Path, log_path: Path) -> Iterator[LlamaServer]:
    """A started ``LlamaServer``, killed on exit."""
    server = LlamaServer(model_path, log_path).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def tiny_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny random model, written once per run (needs the ``gguf`` package)."""
    pytest.importorskip("gguf", reason="gguf is not installed (pip install gguf==0.19.0)")
    return write_tiny_gguf(tmp_path_factory.mktemp("llm") / "tiny-llama.gguf")


@pytest.fixture(scope="session")
def llama_server(
    tiny_gguf: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LlamaServer]:
    """A real llama.cpp OpenAI-compatible server for the whole run."""
    pytest.importorskip(
        "llama_cpp.server.app",
        reason="llama-cpp-python[server] is not installed (see STACK.md for the build)",
    )
    with running_server(tiny_gguf, tmp_path_factory.mktemp("llm-log") / "server.log") as server:
        yield server


# ---------------------------------------------------------------- a misbehaving endpoint
# llama.cpp always speaks the protocol well; these modes are what a broken proxy, a server
# of another protocol or a backend failing mid-reply put on the wire instead.
BAD_STREAM_MODES = ("garbage", "error", "html", "wrong-shape")


def chunk_json(content: str) -> str:
    """One ``chat.completion.chunk`` as an OpenAI-compatible server streams it."""
    delta = {"index": 0, "delta": {"content": content}, "finish_reason": None}
    chunk = {"id": "c", "object": "chat.completion.chunk", "created": 0, "model": "m"}
    return json.dumps({**chunk, "choices": [delta]})


def _bad_stream(mode: str) -> tuple[str, bytes]:
    """The content type and body of a streamed reply that starts well and goes wrong."""
    first = f"data: {chunk_json('Hello')}\n\n"
    if mode == "garbage":  # half a JSON object, then bytes that are no JSON at all
        return "text/event-stream", (
            first + 'data: {"id": "c", "choi\n\ndata: \x00\xff}{\n\n'
        ).encode("utf-8", "surrogateescape")
    if mode == "error":  # the backend reports a failure in the stream, as OpenAI does
        error = {"error": {"message": "upstream model crashed", "type": "server_error"}}
        return "text/event-stream", (first + f"data: {json.dumps(error)}\n\n").encode()
    if mode == "html":  # a captive portal or proxy page served with status 200
        return "text/html", b"<html><body>Please sign in to the network</body></html>"
    if mode == "wrong-shape":  # valid JSON of another shape
        return "text/event-stream", (first + 'data: [1, 2, 3]\n\ndata: "text"\n\n').encode()
    raise ValueError(f"unknown mode {mode!r}; one of {BAD_STREAM_MODES}")


@contextlib.asynccontextmanager
async def bad_stream_server(mode: str) -> AsyncIterator[str]:
    """An HTTP server on 127.0.0.1 whose streamed chat replies break in ``mode``; the base URL."""
    content_type, body = _bad_stream(mode)
    head = (
        f"HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode()
    writers: list[asyncio.StreamWriter] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        with contextlib.suppress(Exception):
            headers = await reader.readuntil(b"\r\n\r\n")
            length = next(
                (
                    int(line.split(b":", 1)[1])
                    for line in headers.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                ),
                0,
            )
            await reader.readexactly(length)
            writer.write(head + body)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1"
    finally:
        for writer in writers:
            writer.close()
        server.close()
        await server.wait_closed()


@contextlib.contextmanager
def bad_stream_server_thread(mode: str) -> Iterator[str]:
    """``bad_stream_server`` on a thread of its own, for a server in another process."""
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    stop = asyncio.Event()
    urls: list[str] = []

    async def serve() -> None:
        async with bad_stream_server(mode) as url:
            urls.append(url)
            ready.set()
            await stop.wait()

    thread = threading.Thread(target=loop.run_until_complete, args=(serve(),), daemon=True)
    thread.start()
    if not ready.wait(10):
        raise RuntimeError("the bad stream server did not start")
    try:
        yield urls[0]
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(10)
        loop.close()
