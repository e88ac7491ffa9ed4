"""What the model service adds: first frame and per-frame time over loopback vs in-process.

The same speech (Piper, one sentence) is pushed into the renderer built in-process and
into the same renderer on an ``avatar model-service`` started on a loopback port (raw
frames and JPEG frames), for mesh2d and, with ``--renderers mesh2d,wav2lip``, for
wav2lip on random weights of the real architecture in the public checkpoint layout.
For each:

- first frame: from ``push`` to the first speaking frame ``next_frame`` returns;
- per frame (unpaced): wall time per speaking frame when pulled as fast as possible
  (``avatar say``'s way);
- per frame (paced, 25 fps): how long the render thread waits in ``next_frame`` on a live
  call's clock (p50 / p95), the part of the 40 ms budget a frame costs there;
- and the synthesizer: one sentence spoken in-process vs on the service.

Both processes share this machine's cores, so on a loaded 2-core machine the remote
figures include the service's competition for the CPU; on a GPU box they would not.

Run: .venv/bin/python bench/modelservice_latency.py [--renderers mesh2d,wav2lip] [--reps 3]
     [--paced] [--no-tts] [--json bench/results/modelservice_latency.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

from realtime_avatar.frames import Speech  # noqa: E402
from realtime_avatar.render.base import Renderer  # noqa: E402
from realtime_avatar.settings import Settings  # noqa: E402

SENTENCE = "Hello there, this is a short test of the model service."
FPS = 25


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_service(env: dict[str, str]) -> tuple[subprocess.Popen[bytes], str]:
    import httpx

    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "realtime_avatar.cli", "model-service", "--port", str(port)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return proc, f"ws://127.0.0.1:{port}"
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit("the model service did not start within 120 s")


def unpaced(renderer: Renderer, speech: Speech) -> dict[str, float]:
    """First frame and mean time per speaking frame, pulled as fast as possible."""
    for _ in range(3):
        renderer.next_frame()  # idle: the session is open and drawing
    started = time.perf_counter()
    renderer.push(speech)
    first = None
    count = 0
    while renderer.busy:
        frame = renderer.next_frame()
        if frame.speaking:
            count += 1
            if first is None:
                first = time.perf_counter() - started
    total = time.perf_counter() - started
    from realtime_avatar.modelservice.client import frames_of

    # Every frame of this speech and no other: the figures are of the real reply.
    assert first is not None and count == frames_of(speech), (count, frames_of(speech))
    per_frame = (total - first) * 1e3 / max(count - 1, 1)
    return {"first_frame_ms": first * 1e3, "per_frame_ms": per_frame}


def paced(renderer: Renderer, speech: Speech) -> dict[str, float]:
    """Waits in ``next_frame`` on a 25 fps clock while one reply plays."""
    waits: list[float] = []
    start = time.monotonic()
    index = 0
    renderer.push(speech)
    while renderer.busy or index < 5:
        began = time.perf_counter()
        frame = renderer.next_frame()
        if frame.speaking:
            waits.append(time.perf_counter() - began)
        index += 1
        delay = start + index / FPS - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    waits.sort()
    return {
        "paced_p50_ms": waits[len(waits) // 2] * 1e3,
        "paced_p95_ms": waits[int(len(waits) * 0.95)] * 1e3,
    }


def median_of(runs: list[dict[str, float]]) -> dict[str, float]:
    return {k: round(statistics.median(r[k] for r in runs), 1) for k in runs[0]}


def wav2lip_checkpoint(folder: Path) -> Path:
    """Random weights of the real generator, saved as wav2lip_gan.pth is published."""
    import torch

    from realtime_avatar.render.wav2lip_net import random_weights

    path = folder / "wav2lip_gan.pth"
    weights = random_weights(seed=0)
    torch.save({"state_dict": {f"module.{k}": v for k, v in weights.items()},
                "global_step": 0, "global_epoch": 0}, path)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--renderers", default="mesh2d",
                        help="comma separated: mesh2d, wav2lip (random weights)")
    parser.add_argument("--no-tts", action="store_true", help="skip the synthesizer figures")
    parser.add_argument("--paced", action="store_true", help="also the 25 fps paced run")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    from realtime_avatar.avatars.registry import load_avatar
    from realtime_avatar.render.registry import create_renderer
    from realtime_avatar.tts.registry import get_synthesizer

    work = Path(tempfile.mkdtemp(prefix="ms-bench-"))
    avatar = load_avatar("default")
    speech = get_synthesizer("en", Settings()).synthesize(SENTENCE, "en", turn_id=1)
    renderers = [name.strip() for name in args.renderers.split(",") if name.strip()]
    env = {**os.environ}
    checkpoint = None
    if "wav2lip" in renderers:
        checkpoint = wav2lip_checkpoint(work)
        env["AVATAR_WAV2LIP_CHECKPOINT"] = str(checkpoint)
    proc, url = start_service(env)
    rows: list[dict[str, Any]] = []
    try:
        for name in renderers:
            local_settings = Settings(wav2lip_checkpoint=checkpoint)
            variants: list[tuple[str, Settings]] = [("in-process", local_settings)]
            for codec in ("raw", "jpeg"):
                variants.append((f"service, {codec}", local_settings.model_copy(update={
                    "model_service_url": url, "model_service_frame_codec": codec})))
            for label, settings in variants:
                renderer = create_renderer(name, avatar.face, settings)
                unpaced(renderer, speech)  # warm: models loaded, first batch compiled
                runs = [unpaced(renderer, speech) for _ in range(args.reps)]
                row: dict[str, Any] = {"renderer": name, "where": label, **median_of(runs)}
                if args.paced:
                    row.update(median_of([paced(renderer, speech)]))
                close = getattr(renderer, "close", None)
                if callable(close):
                    close()
                rows.append(row)
                print(row, flush=True)
        synth_rows = []
        for label, settings in () if args.no_tts else (
            ("in-process", Settings()), ("service", Settings(model_service_url=url))
        ):
            synth = get_synthesizer("en", settings)
            synth.synthesize("Warm up.", "en")
            times = []
            for _ in range(args.reps):
                began = time.perf_counter()
                synth.synthesize(SENTENCE, "en")
                times.append((time.perf_counter() - began) * 1e3)
            close = getattr(synth, "close", None)
            if callable(close):
                close()  # before the service stops: no "unreachable" line
            synth_rows.append({"synthesizer": synth.name, "where": label,
                               "sentence_ms": round(statistics.median(times), 1)})
            print(synth_rows[-1], flush=True)
    finally:
        proc.terminate()
        proc.wait(15)
    report = {
        "command": "python bench/modelservice_latency.py " + " ".join(sys.argv[1:]),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "load_average": [round(x, 1) for x in os.getloadavg()]},
        "speech_s": round(speech.duration_s, 2),
        "renderers": rows,
        "synthesizers": synth_rows,
    }
    print("\n| renderer | where | first frame ms | per frame ms (unpaced) |"
          + (" paced wait p50 / p95 ms |" if args.paced else ""))
    print("| --- | --- | --- | --- |" + (" --- |" if args.paced else ""))
    for row in rows:
        paced_cell = (f" {row['paced_p50_ms']} / {row['paced_p95_ms']} |" if args.paced else "")
        print(f"| {row['renderer']} | {row['where']} | {row['first_frame_ms']} | "
              f"{row['per_frame_ms']} |{paced_cell}")
    for row in synth_rows:
        print(f"synthesizer {row['synthesizer']} {row['where']}: "
              f"{row['sentence_ms']} ms a sentence")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
