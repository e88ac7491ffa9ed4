"""Figures for the dialogue stage: time to the first delta, per backend, as JSON.

- persona: the retrieval responder on the default persona (first delta and whole reply);
- openai: OpenAIResponder against a real ``llama_cpp.server`` serving the tiny random
  model of tests/llm_server.py (time to first token, tokens per second, server start);
- llama-cpp: LlamaCppResponder in-process with the same model.

The tiny model measures the plumbing (HTTP, SSE, threads, queues), not a real model's
speed. Run: .venv/bin/python bench/dialogue_latency.py
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # for tests.llm_server

QUESTIONS = [
    ("What is your name?", "en"),
    ("Where do you run?", "en"),
    ("What is the capital of Peru?", "en"),
    ("Hello!", "en"),
    ("¿Cómo te llamas?", "es"),
    ("你会说什么语言？", "zh"),
]


async def _timed(responder, text: str, language: str) -> tuple[float, float, int]:  # type: ignore[no-untyped-def]
    """Seconds to the first delta, seconds to the end, number of deltas."""
    started = time.perf_counter()
    first = 0.0
    count = 0
    async for _ in responder.respond([], text, language):
        if count == 0:
            first = time.perf_counter() - started
        count += 1
    return first, time.perf_counter() - started, count


def _summary(samples: list[tuple[float, float, int]]) -> dict[str, float]:
    firsts = sorted(sample[0] * 1000 for sample in samples)
    totals = [sample[1] * 1000 for sample in samples]
    return {
        "first_delta_ms_median": round(statistics.median(firsts), 3),
        "first_delta_ms_p95": round(firsts[int(0.95 * (len(firsts) - 1))], 3),
        "reply_ms_median": round(statistics.median(totals), 3),
        "deltas_median": statistics.median(sample[2] for sample in samples),
        "replies": len(samples),
    }


async def persona_figures() -> dict[str, object]:
    from realtime_avatar.dialogue.persona import PersonaResponder

    persona = (ROOT / "src/realtime_avatar/assets/default/persona.md").read_text()
    started = time.perf_counter()
    responder = PersonaResponder(persona, "Ava")
    build_ms = (time.perf_counter() - started) * 1000
    samples = [await _timed(responder, q, lang) for _ in range(50) for q, lang in QUESTIONS]
    return {"index_build_ms": round(build_ms, 2), **_summary(samples)}


async def server_figures(model: Path, log: Path) -> dict[str, object]:
    from realtime_avatar.dialogue.openai_compat import OpenAIResponder
    from tests.llm_server import LlamaServer

    server = LlamaServer(model, log).start()
    try:
        responder = OpenAIResponder(
            server.base_url, server.model_id, system_prompt="You are Ava.", max_tokens=64
        )
        await _timed(responder, "warm up", "en")
        samples = [await _timed(responder, q, lang) for q, lang in QUESTIONS for _ in range(3)]
        await responder.aclose()
    finally:
        server.stop()
    return {"server_start_s": round(server.startup_s, 2), **_summary(samples)}


async def local_figures(model: Path) -> dict[str, object]:
    from realtime_avatar.dialogue.llama_local import LlamaCppResponder

    responder = LlamaCppResponder(model, n_ctx=2048, system_prompt="You are Ava.", max_tokens=64)
    started = time.perf_counter()
    responder.load()
    load_ms = (time.perf_counter() - started) * 1000
    samples = [await _timed(responder, q, lang) for q, lang in QUESTIONS for _ in range(3)]
    responder.close()
    return {"load_ms": round(load_ms, 1), **_summary(samples)}


def main() -> None:
    result: dict[str, object] = {"persona": asyncio.run(persona_figures())}
    try:
        from tests.llm_server import write_tiny_gguf
    except ImportError as error:  # gguf missing
        result["skipped"] = str(error)
    else:
        with tempfile.TemporaryDirectory() as folder:
            model = write_tiny_gguf(Path(folder) / "tiny.gguf")
            try:
                result["openai_llama_cpp_server"] = asyncio.run(
                    server_figures(model, Path(folder) / "server.log")
                )
                result["llama_cpp_in_process"] = asyncio.run(local_figures(model))
            except ImportError as error:
                result["skipped"] = f"llama-cpp-python is not installed: {error}"
    print(json.dumps(result, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
