"""Video jobs through the real server: first playable byte, throughput, the queue's cost.

Three figures, each through `avatar serve` (and `avatar worker`) as real processes:

- ``first_fragment_ms``: from ``POST /api/v1/videos`` to the first complete movie
  fragment (moof + mdat) read from ``/stream``, for a one-sentence script, jobs one at a
  time with the embedded stack (no Redis: the job runs in the server) and, when
  ``redis-server`` is installed, through Redis and one idle worker;
- ``jobs_per_min``: a batch of jobs with a ~15 s script, submitted at once, with 1 and
  with 2 workers on Redis (wall time from the first POST to the last job done);
- ``queue_added_ms``: what the queue adds to a job: from POST to the job's start
  (``first_started_unix - created_unix``) on an idle worker, Redis vs in-process.

Each first-fragment run starts after a discarded warm-up job. The machine is shared:
treat the figures as what this machine gave at that minute.

Run: .venv/bin/python bench/video_jobs.py [--short-jobs 8] [--long-jobs 4]
     [--data-dir DIR] [--json bench/results/video_jobs.json] [--skip-redis]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from realtime_avatar.evaluate.server_proc import running_server

ONE_SENTENCE = "Hello, and welcome to the show."
# About 15 s of speech from Piper's English voice (checked with `avatar say`).
FIFTEEN_S = (
    "Thank you for joining us today. In the next few seconds I will tell you how this video "
    "was made. A script goes in, each sentence is spoken, and my face is drawn to match the "
    "words. Then the frames are encoded and streamed to you while the rest is still being "
    "made."
)


def _boxes(data: bytes) -> list[str]:
    kinds, at = [], 0
    while at + 8 <= len(data):
        size = int.from_bytes(data[at : at + 4], "big")
        kinds.append(data[at + 4 : at + 8].decode("latin-1"))
        if size < 8:
            break
        at += size
    return kinds


def first_fragment_s(client: httpx.Client, text: str) -> tuple[float, str]:
    """POST a job and read its stream until the first whole fragment; seconds, and the id."""
    started = time.perf_counter()
    res = client.post("/api/v1/videos", json={"text": text, "language": "en"})
    res.raise_for_status()
    body = res.json()
    got = bytearray()
    with client.stream("GET", body["stream_url"], timeout=300) as stream:
        for chunk in stream.iter_bytes():
            got += chunk
            kinds = _boxes(bytes(got))
            if "moof" in kinds and "mdat" in kinds[kinds.index("moof") :]:
                return time.perf_counter() - started, body["id"]
    raise RuntimeError(f"job {body['id']} ended before its first fragment")


def wait_done(client: httpx.Client, ids: list[str], timeout_s: float = 900) -> list[dict[str, Any]]:
    """Poll until every job is final; their records."""
    deadline = time.monotonic() + timeout_s
    while True:
        records = [client.get(f"/api/v1/videos/{job}").json() for job in ids]
        if all(r["state"] in ("done", "failed", "cancelled") for r in records):
            bad = [r for r in records if r["state"] != "done"]
            if bad:
                failed = [(r["state"], r["error"]) for r in bad]
                raise RuntimeError(f"jobs did not finish: {failed}")
            return records
        if time.monotonic() > deadline:
            raise RuntimeError("jobs did not finish in time")
        time.sleep(0.2)


def short_jobs(client: httpx.Client, count: int) -> dict[str, Any]:
    """Warm-up, then ``count`` one-sentence jobs one at a time."""
    _, warm = first_fragment_s(client, ONE_SENTENCE)
    wait_done(client, [warm])
    firsts, queued = [], []
    for _ in range(count):
        seconds, job = first_fragment_s(client, ONE_SENTENCE)
        record = wait_done(client, [job])[0]
        firsts.append(seconds * 1000)
        queued.append(record["timings"]["queued_s"] * 1000)
    return {
        "first_fragment_ms": _summary(firsts),
        "queue_added_ms": _summary(queued),
        "jobs": count,
    }


def throughput(client: httpx.Client, count: int) -> dict[str, Any]:
    """``count`` 15 s jobs at once; jobs per minute from the first POST to the last done."""
    started = time.perf_counter()
    ids = []
    for _ in range(count):
        res = client.post("/api/v1/videos", json={"text": FIFTEEN_S, "language": "en"})
        res.raise_for_status()
        ids.append(res.json()["id"])
    records = wait_done(client, ids)
    wall = time.perf_counter() - started
    video = [r["timings"]["video_s"] for r in records]
    return {
        "jobs": count,
        "wall_s": round(wall, 2),
        "jobs_per_min": round(count * 60 / wall, 2),
        "video_s_each": round(statistics.mean(video), 2),
        "render_s_each": _summary([r["timings"]["running_s"] for r in records]),
    }


def _summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "min": round(ordered[0], 1),
        "p50": round(statistics.median(ordered), 1),
        "p95": round(ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))], 1),
        "max": round(ordered[-1], 1),
    }


@contextlib.contextmanager
def redis_server(folder: Path) -> Iterator[str]:
    """Debian's redis-server on a free loopback port; its URL."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(folder)],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        while True:
            address = ("127.0.0.1", port)
            with contextlib.suppress(OSError), socket.create_connection(address, 1) as s:
                s.sendall(b"PING\r\n")
                if s.recv(16).startswith(b"+PONG"):
                    break
            if time.monotonic() > deadline:
                raise RuntimeError("redis-server did not start")
            time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@contextlib.contextmanager
def workers(count: int, env: dict[str, str], logs: Path) -> Iterator[None]:
    """``count`` `avatar worker` processes, waited for until each reports it is taking jobs."""
    procs = []
    try:
        for index in range(count):
            log = open(logs / f"worker-{index}.log", "wb")  # noqa: SIM115 - closed below
            procs.append((subprocess.Popen(
                [sys.executable, "-m", "realtime_avatar.cli", "worker"],
                env=env, stdout=log, stderr=subprocess.STDOUT,
            ), log))  # fmt: skip
        deadline = time.monotonic() + 180
        for index in range(count):
            path = logs / f"worker-{index}.log"
            while b"taking video jobs" not in path.read_bytes():
                if time.monotonic() > deadline:
                    raise RuntimeError(f"worker {index} did not start: {path.read_text()[-800:]}")
                time.sleep(0.2)
        yield
    finally:
        for proc, _ in procs:
            proc.terminate()
        for proc, log in procs:
            proc.wait(timeout=120)
            log.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--short-jobs", type=int, default=8)
    parser.add_argument("--long-jobs", type=int, default=4)
    parser.add_argument("--data-dir", type=Path, default=None, help="reuse a data directory")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--skip-redis", action="store_true")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-video-jobs-"))
    data_dir = args.data_dir or work / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {
        "command": "python bench/video_jobs.py " + " ".join(sys.argv[1:]),
        "machine": {"cpus": os.cpu_count(), "load_1min": round(os.getloadavg()[0], 2)},
    }
    env = {"AVATAR_JOBS_DIR": str(work / "videos-inprocess")}
    with running_server(data_dir, work, **env) as server, httpx.Client(
        base_url=server.base_url, timeout=60
    ) as client:
        results["in_process"] = short_jobs(client, args.short_jobs)
    print(json.dumps(results["in_process"]), flush=True)

    if not args.skip_redis and shutil.which("redis-server"):
        with redis_server(work) as url:
            job_env = {
                "AVATAR_REDIS_URL": url,
                "AVATAR_JOBS_DIR": str(work / "videos-redis"),
                "AVATAR_LOG_LEVEL": "INFO",
            }
            worker_env = dict(os.environ, AVATAR_DATA_DIR=str(data_dir), **job_env)
            server_env = {k: v for k, v in job_env.items() if k != "AVATAR_LOG_LEVEL"}
            with running_server(data_dir, work, **server_env) as server, httpx.Client(
                base_url=server.base_url, timeout=60
            ) as client:
                with workers(1, worker_env, work):
                    results["redis_1_worker"] = short_jobs(client, args.short_jobs)
                    print(json.dumps(results["redis_1_worker"]), flush=True)
                    results["throughput_1_worker"] = throughput(client, args.long_jobs)
                    print(json.dumps(results["throughput_1_worker"]), flush=True)
                with workers(2, worker_env, work):
                    results["throughput_2_workers"] = throughput(client, args.long_jobs)
                    print(json.dumps(results["throughput_2_workers"]), flush=True)
        inproc = results["in_process"]["queue_added_ms"]["p50"]
        redis = results["redis_1_worker"]["queue_added_ms"]["p50"]
        results["queue_added_by_redis_ms_p50"] = round(redis - inproc, 1)
    results["machine"]["load_1min_after"] = round(os.getloadavg()[0], 2)
    text = json.dumps(results, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
