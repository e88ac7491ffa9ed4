"""Video jobs: the state machine and stores, the API's answers to bad requests, the stream
follower (fast); a real job streamed while it renders, Redis workers that survive a
SIGKILL, hand-back on stop, and the page in Chromium (slow)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from realtime_avatar.jobs.model import (
    FINAL,
    JobNotFoundError,
    JobRecord,
    JobState,
    check_job_id,
)
from realtime_avatar.jobs.service import VideoJobs, owner_of
from realtime_avatar.jobs.store import SqliteJobStore, apply_patch, only_if
from realtime_avatar.server.app import create_app
from realtime_avatar.server.videos_api import _follow
from realtime_avatar.settings import Settings

LOCAL = "http://127.0.0.1:8000"
TOKEN = "video-token-for-tests"


# ---------------------------------------------------------------- the state machine
def _record(**extra: Any) -> JobRecord:
    return JobRecord.new("text", "local", "default", "en", text="Hello.", **extra)


def test_final_states_are_final() -> None:
    for state in FINAL:
        record = _record(state=state)
        for target in JobState:
            if target is state:
                continue
            with pytest.raises(ValueError, match="not allowed"):
                apply_patch(record, {"state": target})


def test_allowed_moves() -> None:
    queued = _record()
    running = apply_patch(queued, {"state": JobState.RUNNING, "attempt": 1})
    assert running.state is JobState.RUNNING and running.attempt == 1
    # A dead worker's job goes back to the queue; a queued job cannot be "done" unrun.
    assert apply_patch(running, {"state": JobState.QUEUED}).state is JobState.QUEUED
    with pytest.raises(ValueError):
        apply_patch(queued, {"state": JobState.DONE})
    assert apply_patch(queued, {"state": JobState.CANCELLED}).state is JobState.CANCELLED


def test_record_round_trips_through_json_and_ignores_unknown_keys() -> None:
    record = _record(progress=0.5, attempt=2)
    data = json.loads(json.dumps(record.to_json()))
    data["from_a_newer_version"] = 1
    again = JobRecord.from_json(data)
    assert again == record
    public = again.public(now=record.created_unix + 3)
    assert public["state"] == "queued" and public["timings"]["queued_s"] == 3.0
    assert public["timings"]["running_s"] is None
    assert public["timings"]["total_s"] == 3.0 and "owner" not in public and "text" not in public


def test_job_ids_are_checked_before_any_lookup() -> None:
    assert check_job_id("a" * 32) == "a" * 32
    for bad in ("", "../etc", "A" * 32, "a" * 33, "abc"):
        with pytest.raises(JobNotFoundError):
            check_job_id(bad)


def test_owner_is_a_hash_of_the_token_never_the_token() -> None:
    assert owner_of(None) == "local"
    owner = owner_of(f"Bearer {TOKEN}")
    assert TOKEN not in owner and owner == owner_of(f"Bearer {TOKEN}") != owner_of("Bearer x")


def test_sqlite_store_compare_and_set(tmp_path: Path) -> None:
    store = SqliteJobStore(tmp_path / "jobs.db")
    record = _record()
    store.create(record)
    assert store.count_active("local") == 1
    taken = store.update(
        record.id, only_if({JobState.QUEUED}, {"state": JobState.RUNNING, "attempt": 1})
    )
    assert taken is not None and taken.state is JobState.RUNNING
    # A stale attempt cannot change the job; the current one can.
    assert (
        store.update(record.id, only_if({JobState.RUNNING}, {"progress": 0.5}, attempt=0)) is None
    )
    assert (
        store.update(record.id, only_if({JobState.RUNNING}, {"progress": 0.5}, attempt=1))
        is not None
    )
    cancelled = store.update(record.id, only_if({JobState.RUNNING}, {"state": JobState.CANCELLED}))
    assert cancelled is not None and store.count_active("local") == 0
    # A finish racing the cancel loses: nothing leaves a final state.
    assert store.update(record.id, only_if({JobState.RUNNING}, {"state": JobState.DONE}, 1)) is None
    stored = store.get(record.id)
    assert stored is not None and stored.state is JobState.CANCELLED and stored.progress == 0.5
    assert store.get("f" * 32) is None
    store.close()


def test_sqlite_store_lists_jobs_left_active(tmp_path: Path) -> None:
    store = SqliteJobStore(tmp_path / "jobs.db")
    queued, done = _record(), _record(state=JobState.DONE)
    store.create(queued)
    store.create(done)
    assert store.active_ids() == [queued.id]
    store.close()


def test_sqlite_store_counts_states_and_hands_out_ended_jobs_once(tmp_path: Path) -> None:
    store = SqliteJobStore(tmp_path / "jobs.db")
    for _ in range(3):
        store.create(_record())
    store.create(_record(state=JobState.RUNNING))
    assert store.count_state(JobState.QUEUED) == 3 and store.count_state(JobState.RUNNING) == 1
    store.push_ended("done", 4.5)
    store.push_ended("failed", 1.0)
    assert store.pop_ended() == [("done", 4.5), ("failed", 1.0)]
    assert store.pop_ended() == []
    store.close()


def test_ended_jobs_reach_the_servers_metrics(tmp_path: Path) -> None:
    from realtime_avatar.server import metrics

    jobs = VideoJobs(Settings(data_dir=tmp_path))
    def done() -> float:
        return metrics.REGISTRY.get_sample_value("avatar_video_jobs_total", {"outcome": "done"}) or 0

    before = done()
    record = _record()
    jobs.store.create(record)
    jobs.store.push_ended("done", 12.0)
    jobs.cancel(record.id)  # a cancel is an ending too
    assert jobs.count_ended() == 2
    assert done() == before + 1
    assert jobs.count_ended() == 0  # each ending is counted once
    jobs.close()


# ---------------------------------------------------------------- the API's answers
@pytest.fixture
def make_client(tmp_path: Path) -> Iterator[Any]:
    clients: list[TestClient] = []

    def make(**options: Any) -> TestClient:
        app = create_app(Settings(data_dir=tmp_path, **options), warm_up=False)
        client = TestClient(app, base_url=LOCAL, raise_server_exceptions=False)
        client.__enter__()
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        ({"text": ""}, 400, "nothing to say"),
        ({"text": "?!"}, 400, "no words"),
        ({"text": "Hi.", "avatar": "../etc"}, 400, "invalid avatar name"),
        ({"text": "Hi.", "avatar": "nobody"}, 404, "no avatar named 'nobody'"),
        ({"text": "Hi.", "language": "xx"}, 400, 'Set "language" to one of'),
        ({"text": "word " * 1100}, 422, "AVATAR_JOB_MAX_TEXT_CHARS"),
        ({"avatar": "default"}, 422, "text: Field required"),
        ([1, 2], 422, "invalid request"),
        ({"text": 5}, 422, "text"),
    ],
)
def test_bad_job_requests_get_a_clear_4xx(
    make_client: Any, body: Any, status: int, words: str
) -> None:
    res = make_client().post("/api/v1/videos", json=body)
    assert res.status_code == status, res.text
    assert set(res.json()) == {"error"} and words in res.json()["error"], res.text


def test_non_json_bodies_are_refused(make_client: Any) -> None:
    client = make_client()
    res = client.post(
        "/api/v1/videos", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert res.status_code == 422 and "invalid request" in res.json()["error"]
    res = client.post("/api/v1/videos", content=b"hello", headers={"content-type": "text/plain"})
    assert res.status_code == 415 and "multipart/form-data" in res.json()["error"]


def test_uploads_must_be_a_decodable_recording(make_client: Any) -> None:
    client = make_client()
    res = client.post("/api/v1/videos", files={"audio": ("talk.wav", b"RIFF garbage", "audio/wav")})
    assert res.status_code == 400 and "cannot decode talk.wav" in res.json()["error"]
    res = client.post("/api/v1/videos", files={"audio": ("empty.wav", b"", "audio/wav")})
    assert res.status_code == 400 and "empty" in res.json()["error"]
    res = client.post("/api/v1/videos", data={"avatar": "default"}, files={"x": ("a", b"1")})
    assert res.status_code == 400 and "no 'audio' file" in res.json()["error"]
    res = client.post(
        "/api/v1/videos", files={"audio": ("a.wav", b"x", "audio/wav")}, data={"avatar": "../x"}
    )
    assert res.status_code == 400 and "invalid avatar name" in res.json()["error"]


def test_the_queue_limit_per_token_is_a_429(make_client: Any) -> None:
    res = make_client(job_max_queued=0).post("/api/v1/videos", json={"text": "Hello."})
    assert res.status_code == 429 and "AVATAR_JOB_MAX_QUEUED" in res.json()["error"]


def test_unknown_jobs_are_404_and_ids_are_checked(make_client: Any) -> None:
    client = make_client()
    for path in (
        "/api/v1/videos/" + "a" * 32,
        "/api/v1/videos/..%2F..%2Fetc",
        "/api/v1/videos/x/stream",
    ):
        assert client.get(path).status_code == 404, path
    assert client.delete("/api/v1/videos/" + "b" * 32).status_code == 404


def test_routes_need_the_token_and_the_stream_key_opens_one_job(make_client: Any) -> None:
    client = make_client(token=TOKEN)
    job = "c" * 32
    assert client.post("/api/v1/videos", json={"text": "Hi."}).status_code == 401
    assert client.get(f"/api/v1/videos/{job}").status_code == 401
    assert client.delete(f"/api/v1/videos/{job}").status_code == 401
    assert client.get(f"/api/v1/videos/{job}/stream").status_code == 401
    assert client.get(f"/api/v1/videos/{job}/stream?key=nope").status_code == 401
    from realtime_avatar.server.videos_api import _stream_key

    # The right key passes the token check (and then finds no such job).
    assert (
        client.get(f"/api/v1/videos/{job}/stream?key={_stream_key(TOKEN, job)}").status_code == 404
    )
    other = "d" * 32
    assert (
        client.get(f"/api/v1/videos/{other}/stream?key={_stream_key(TOKEN, job)}").status_code
        == 401
    )


def test_the_routes_are_in_openapi_with_both_bodies(make_client: Any) -> None:
    spec = make_client().get("/openapi.json").json()
    post = spec["paths"]["/api/v1/videos"]["post"]
    assert set(post["requestBody"]["content"]) == {"application/json", "multipart/form-data"}
    assert {"get", "delete"} <= set(spec["paths"]["/api/v1/videos/{job_id}"])
    assert "get" in spec["paths"]["/api/v1/videos/{job_id}/stream"]


def test_an_unreachable_redis_is_a_503_not_a_traceback(make_client: Any) -> None:
    """With AVATAR_REDIS_URL pointing nowhere the server still starts (live calls do not
    need the queue) and every job route says the queue is unreachable."""
    client = make_client(redis_url="redis://127.0.0.1:1/0")
    res = client.post("/api/v1/videos", json={"text": "Hello."})
    assert res.status_code == 503 and "unreachable" in res.json()["error"], res.text
    res = client.get("/api/v1/videos/" + "e" * 32)
    assert res.status_code == 503 and set(res.json()) == {"error"}
    assert client.delete("/api/v1/videos/" + "e" * 32).status_code == 503
    assert client.get("/health").status_code == 200


def test_cancelling_a_final_job_is_a_409(tmp_path: Path) -> None:
    jobs = VideoJobs(Settings(data_dir=tmp_path))
    record = _record(state=JobState.DONE)
    jobs.store.create(record)
    with pytest.raises(Exception, match="already done") as info:
        jobs.cancel(record.id)
    assert getattr(info.value, "status_code", None) == 409
    queued = _record()
    jobs.store.create(queued)
    assert jobs.cancel(queued.id).state is JobState.CANCELLED
    jobs.close()


# ---------------------------------------------------------------- following a growing file
def test_the_stream_follows_a_growing_file_until_the_job_is_done(tmp_path: Path) -> None:
    """A stand-in writer appends to the attempt's file and renames it into place at the end,
    as Mp4Writer does; the follower must deliver every byte, in order, exactly once."""
    settings = Settings(data_dir=tmp_path)
    jobs = VideoJobs(settings)
    record = _record()
    jobs.store.create(record)
    folder = jobs.root / record.id
    folder.mkdir(parents=True)
    pieces = [bytes([i]) * (1000 + i) for i in range(30)]

    def writer() -> None:
        time.sleep(0.2)  # the follower starts while the job is still queued
        jobs.store.update(
            record.id,
            only_if(
                {JobState.QUEUED},
                {"state": JobState.RUNNING, "attempt": 1, "stream_name": "attempt-1.mp4.part"},
            ),
        )
        part = folder / "attempt-1.mp4.part"
        with open(part, "wb") as out:
            for piece in pieces:
                out.write(piece)
                out.flush()
                time.sleep(0.01)
        part.rename(folder / "video.mp4")
        jobs.store.update(record.id, only_if({JobState.RUNNING}, {"state": JobState.DONE}))

    async def follow() -> bytes:
        got = bytearray()
        async for chunk in _follow(jobs, record.id):
            got += chunk
        return bytes(got)

    thread = threading.Thread(target=writer)
    thread.start()
    received = asyncio.run(asyncio.wait_for(follow(), timeout=30))
    thread.join()
    assert received == b"".join(pieces)
    jobs.close()


def test_the_stream_of_a_cancelled_job_ends(tmp_path: Path) -> None:
    jobs = VideoJobs(Settings(data_dir=tmp_path))
    record = _record()
    jobs.store.create(record)

    def cancel() -> None:
        time.sleep(0.3)
        jobs.cancel(record.id)

    async def follow() -> bytes:
        got = bytearray()
        async for chunk in _follow(jobs, record.id):
            got += chunk
        return bytes(got)

    thread = threading.Thread(target=cancel)
    thread.start()
    assert asyncio.run(asyncio.wait_for(follow(), timeout=30)) == b""
    thread.join()
    jobs.close()


# ---------------------------------------------------------------- real jobs (slow)
@pytest.mark.slow
def test_redis_store_compare_and_set_and_counts(redis_url: str) -> None:
    from realtime_avatar.jobs.store import RedisJobStore

    store = RedisJobStore(redis_url)
    record = _record()
    store.create(record)
    assert store.count_active("local") == 1 and store.count_state(JobState.QUEUED) == 1
    running = only_if({JobState.QUEUED}, {"state": JobState.RUNNING, "attempt": 1})
    assert store.update(record.id, running) is not None
    assert store.update(record.id, running) is None  # already taken
    assert store.count_state(JobState.QUEUED) == 0 and store.count_state(JobState.RUNNING) == 1
    # Two racers: exactly one moves the job out of running.
    results: list[JobRecord | None] = []
    racers = [
        threading.Thread(
            target=lambda target=target: results.append(
                store.update(record.id, only_if({JobState.RUNNING}, {"state": target}, 1))
            )
        )
        for target in (JobState.DONE, JobState.CANCELLED) * 4
    ]
    for racer in racers:
        racer.start()
    for racer in racers:
        racer.join()
    assert sum(r is not None for r in results) == 1
    final = store.get(record.id)
    assert final is not None and final.state in FINAL
    assert store.count_active("local") == 0 and store.count_state(JobState.RUNNING) == 0
    store.push_ended("done", 3.0)
    assert store.pop_ended() == [("done", 3.0)] and store.pop_ended() == []
    store.close()


SCRIPT = (
    "Good morning, and welcome to the show. Today we look at how a video is made while you "
    "watch. Each sentence is spoken, then drawn, then encoded. The file grows as it goes. "
    "You can play it before it is finished. That is the whole idea."
)
FRAME_S = 1 / 25


def _boxes(data: bytes) -> list[str]:
    """The top-level MP4 box types in ``data`` (as far as it is complete)."""
    kinds, at = [], 0
    while at + 8 <= len(data):
        size = int.from_bytes(data[at : at + 4], "big")
        kinds.append(data[at + 4 : at + 8].decode("latin-1"))
        if size < 8:
            break
        at += size
    return kinds


def _first_fragment(client: httpx.Client, url: str) -> tuple[bytes, float]:
    """Read the stream until the first complete movie fragment (moof + mdat); its bytes and
    when it arrived."""
    got = bytearray()
    with client.stream("GET", url, timeout=120) as res:
        assert res.status_code == 200 and res.headers["content-type"] == "video/mp4"
        for chunk in res.iter_bytes():
            got += chunk
            kinds = _boxes(bytes(got))
            if "moof" in kinds and "mdat" in kinds[kinds.index("moof") :]:
                return bytes(got), time.monotonic()
    raise AssertionError(f"the stream ended before a fragment: {_boxes(bytes(got))}")


def check_video(path: Path) -> dict[str, float]:
    """H.264 + AAC, 25 fps, audio and video equally long within a frame; their durations."""
    from .helpers import ffprobe

    info = ffprobe(path)
    streams = {s["codec_type"]: s for s in info["streams"]}
    assert streams["video"]["codec_name"] == "h264", streams
    assert streams["audio"]["codec_name"] == "aac", streams
    assert streams["video"]["r_frame_rate"] == "25/1", streams["video"]
    video_s, audio_s = float(streams["video"]["duration"]), float(streams["audio"]["duration"])
    assert video_s > 1.0 and abs(video_s - audio_s) <= FRAME_S + 1e-3, (video_s, audio_s)
    return {"video_s": video_s, "audio_s": audio_s}


def _wait_final(client: httpx.Client, ids: list[str], timeout_s: float) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout_s
    while True:
        records = [client.get(f"/api/v1/videos/{job}").json() for job in ids]
        if all(r["state"] in ("done", "failed", "cancelled") for r in records):
            return records
        assert time.monotonic() < deadline, [(r["id"][:8], r["state"]) for r in records]
        time.sleep(0.5)


@pytest.mark.slow
def test_a_job_plays_while_it_renders_then_serves_ranges(data_dir: Path, tmp_path: Path) -> None:
    """In-process (no Redis): the first fragment arrives while the job is running; the whole
    stream is the finished file, byte for byte; the finished file answers Range requests."""
    from .live_server import running_server

    env = {"AVATAR_JOBS_DIR": str(tmp_path / "videos")}
    with running_server(data_dir, **env) as base, httpx.Client(base_url=base, timeout=60) as client:
        job = client.post("/api/v1/videos", json={"text": SCRIPT, "language": "en"})
        assert job.status_code == 202, job.text
        body = job.json()
        assert body["state"] == "queued" and body["stream_url"].endswith("/stream")
        first, _ = _first_fragment(client, body["stream_url"])
        state = client.get(body["status_url"]).json()
        assert state["state"] == "running", state  # playable before it is finished
        assert _boxes(first)[:2] == ["ftyp", "moov"]
        with client.stream("GET", body["stream_url"], timeout=300) as res:
            streamed = b"".join(res.iter_bytes())
        done = _wait_final(client, [body["id"]], 300)[0]
        assert done["state"] == "done" and done["progress"] == 1.0, done
        finished = client.get(body["stream_url"])
        assert finished.status_code == 200 and finished.content == streamed
        assert streamed.startswith(first)
        part = client.get(body["stream_url"], headers={"Range": "bytes=100-199"})
        assert part.status_code == 206 and part.content == streamed[100:200]
        out = tmp_path / "got.mp4"
        out.write_bytes(finished.content)
        durations = check_video(out)
        assert abs(durations["video_s"] - done["timings"]["video_s"]) < 0.1
        assert client.delete(body["status_url"]).status_code == 409  # done: nothing to cancel

        # A recording to lip-sync, as a multipart upload: the video is as long as it.
        import numpy as np
        import soundfile as sf

        rate = 16_000
        t = np.arange(int(2.5 * rate)) / rate
        tone = 0.3 * np.sin(2 * np.pi * 180 * t) * np.clip(np.sin(2 * np.pi * 2 * t), 0, None)
        wav = tmp_path / "talk.wav"
        sf.write(wav, tone.astype(np.float32), rate)
        upload = client.post(
            "/api/v1/videos",
            files={"audio": ("talk.wav", wav.read_bytes(), "audio/wav")},
            data={"avatar": "default"},
        )
        assert upload.status_code == 202, upload.text
        lip = _wait_final(client, [upload.json()["id"]], 300)[0]
        assert lip["state"] == "done" and lip["kind"] == "audio", lip
        synced = tmp_path / "lip.mp4"
        synced.write_bytes(client.get(upload.json()["stream_url"]).content)
        assert abs(check_video(synced)["audio_s"] - 2.5) < 0.1


def _start_worker(env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    with open(log_path, "wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "realtime_avatar.cli", "worker"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )


@contextlib.contextmanager
def _workers(env: dict[str, str], logs: list[Path]) -> Iterator[list[subprocess.Popen[bytes]]]:
    procs = [_start_worker(env, log) for log in logs]
    try:
        yield procs
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


def _job_env(data_dir: Path, redis: str, jobs_dir: Path) -> dict[str, str]:
    return {
        "AVATAR_REDIS_URL": redis,
        "AVATAR_JOBS_DIR": str(jobs_dir),
        # A killed worker is declared dead after 4 s without heartbeats (30 s by default).
        "AVATAR_JOB_HEARTBEAT_TIMEOUT_S": "4",
        "AVATAR_LOG_LEVEL": "INFO",
    }


@pytest.mark.slow
def test_redis_workers_lose_no_job_when_one_is_killed(
    data_dir: Path, redis_url: str, tmp_path: Path
) -> None:
    """Two `avatar worker` processes and a server on Redis; six jobs; one worker SIGKILLed
    mid-job. All six finish as whole, valid MP4s, each exactly once; the killed one is
    re-run by the other worker; a job streams while a worker in another process renders it."""
    from realtime_avatar.jobs.store import RedisJobStore

    from .live_server import running_server

    jobs_dir = tmp_path / "videos"
    env = _job_env(data_dir, redis_url, jobs_dir)
    worker_env = dict(os.environ, AVATAR_DATA_DIR=str(data_dir), **env)
    logs = [tmp_path / "worker-a.log", tmp_path / "worker-b.log"]
    store = RedisJobStore(redis_url)
    server_env = {k: v for k, v in env.items() if k != "AVATAR_LOG_LEVEL"}
    with (
        _workers(worker_env, logs) as workers,
        running_server(data_dir, **server_env) as base,
        httpx.Client(base_url=base, timeout=60) as client,
    ):
        texts = [f"This is video number {i + 1}. " + SCRIPT for i in range(6)]
        posted = [client.post("/api/v1/videos", json={"text": t, "language": "en"}) for t in texts]
        assert all(p.status_code == 202 for p in posted), [p.text for p in posted]
        ids = [p.json()["id"] for p in posted]

        first, _ = _first_fragment(client, posted[0].json()["stream_url"])
        assert client.get(f"/api/v1/videos/{ids[0]}").json()["state"] == "running"
        assert "moof" in _boxes(first)

        pids = {proc.pid: proc for proc in workers}
        victim: tuple[str, int] | None = None
        deadline = time.monotonic() + 300
        while victim is None:
            assert time.monotonic() < deadline, "no job was seen mid-render on a worker"
            for job in ids:
                record = store.get(job)
                if record is None or record.state is not JobState.RUNNING or not record.worker:
                    continue
                pid = int(record.worker.rsplit(":", 1)[1])
                stream = jobs_dir / job / str(record.stream_name)
                if pid in pids and stream.exists() and stream.stat().st_size > 0:
                    os.kill(pid, signal.SIGKILL)  # mid-job: its file is half written
                    pids[pid].wait(timeout=30)
                    victim = (job, pid)
                    break
            time.sleep(0.1)

        records = _wait_final(client, ids, 600)
        # The workers' endings reach the server's /metrics (counted by the server node).
        deadline = time.monotonic() + 60
        while 'avatar_video_jobs_total{outcome="done"} 6.0' not in client.get("/metrics").text:
            assert time.monotonic() < deadline, client.get("/metrics").text[-3000:]
            time.sleep(0.5)
        assert "avatar_video_jobs_queued 0.0" in client.get("/metrics").text
    store.close()

    assert [r["state"] for r in records] == ["done"] * 6, [
        (r["state"], r["error"]) for r in records
    ]
    by_id = {r["id"]: r for r in records}
    assert by_id[victim[0]]["attempt"] >= 2, by_id[victim[0]]  # re-run after the kill
    for job in ids:
        # Whole, valid, and only the finished file: no half-written attempt left behind.
        assert sorted(p.name for p in (jobs_dir / job).iterdir()) == ["video.mp4"], job
        check_video(jobs_dir / job / "video.mp4")
    # Each job was finished exactly once, across both workers' logs.
    finished = "".join(log.read_text(errors="replace") for log in logs)
    for job in ids:
        assert finished.count(f"job {job}: done") == 1, job


@pytest.mark.slow
def test_a_stopped_worker_hands_its_job_back(
    data_dir: Path, redis_url: str, tmp_path: Path
) -> None:
    """SIGTERM: the worker puts the job it is rendering back in the queue and exits; another
    worker finishes it."""
    from realtime_avatar.jobs.queue import RedisQueue
    from realtime_avatar.jobs.store import RedisJobStore

    jobs_dir = tmp_path / "videos"
    env = _job_env(data_dir, redis_url, jobs_dir)
    settings = Settings(data_dir=data_dir, redis_url=redis_url, jobs_dir=jobs_dir)
    worker_env = dict(os.environ, AVATAR_DATA_DIR=str(data_dir), **env)
    store = RedisJobStore(redis_url)
    queue = RedisQueue(settings)
    record = JobRecord.new("text", "local", "default", "en", text=SCRIPT * 2)
    store.create(record)
    queue.submit(record.id)
    with _workers(worker_env, [tmp_path / "first.log"]) as (first,):
        deadline = time.monotonic() + 300
        while (got := store.get(record.id)) is None or got.progress == 0.0:
            assert time.monotonic() < deadline and first.poll() is None, got
            time.sleep(0.1)
        first.send_signal(signal.SIGTERM)
        assert first.wait(timeout=120) == 0
    back = store.get(record.id)
    assert back is not None and back.state is JobState.QUEUED and back.attempt == 1, back
    with _workers(worker_env, [tmp_path / "second.log"]):
        deadline = time.monotonic() + 300
        while (got := store.get(record.id)) is None or got.state is not JobState.DONE:
            assert got is not None and got.state in (JobState.QUEUED, JobState.RUNNING), got
            assert time.monotonic() < deadline
            time.sleep(0.2)
    assert got.attempt == 2
    check_video(jobs_dir / record.id / "video.mp4")
    queue.close()
    store.close()


@pytest.mark.slow
def test_the_page_plays_the_video_while_it_renders(data_dir: Path, tmp_path: Path) -> None:
    """Chromium: from the main page's link to the videos page; paste a script, pick the
    avatar and language, press the button; the <video> shows frames while the job is still
    running; at the end the download link is the whole MP4."""
    import shutil

    from playwright.sync_api import sync_playwright

    from .live_server import running_server

    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    args = [
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--autoplay-policy=no-user-gesture-required",
    ]
    env = {"AVATAR_JOBS_DIR": str(tmp_path / "videos")}
    with running_server(data_dir, **env) as base, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, headless=True, args=args)
        page = browser.new_page(viewport={"width": 1280, "height": 820})
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(base)
        page.click("a[href='/static/videos.html']")
        page.wait_for_selector("#avatar option[value='default']", state="attached", timeout=15_000)
        page.fill("#script", SCRIPT)
        page.select_option("#avatar", "default")
        page.select_option("#language", "en")
        # Count decoded frames and note the job's state as the page shows it at the first.
        page.evaluate(
            """() => {
              const v = document.getElementById('job-video');
              window.seen = {frames: 0, stateAtFirst: null};
              const tick = () => {
                window.seen.frames++;
                if (window.seen.frameStateTaken !== true) {
                  window.seen.stateAtFirst = document.getElementById('job-state').textContent;
                  window.seen.frameStateTaken = true;
                }
                v.requestVideoFrameCallback(tick);
              };
              v.requestVideoFrameCallback(tick);
            }"""
        )
        page.click("#render")
        page.wait_for_function("window.seen.frames > 0", timeout=120_000)
        # The page's own state line, and the API, at the first shown frame: still rendering.
        job_id = page.evaluate("job")
        with httpx.Client(base_url=base, timeout=30) as client:
            api_state = client.get(f"/api/v1/videos/{job_id}").json()["state"]
            assert api_state == "running", api_state
            assert not page.evaluate("window.seen.stateAtFirst").startswith("done")
            page.wait_for_selector("#download:not([hidden])", timeout=300_000)
            href = page.get_attribute("#download", "href")
            assert href is not None and href.startswith(f"/api/v1/videos/{job_id}/stream")
            assert page.evaluate("document.getElementById('job-state').textContent").startswith("done")
            page.screenshot(path=str(tmp_path / "videos-page.png"))
            download = client.get(href)
        assert download.status_code == 200
        out = tmp_path / "download.mp4"
        out.write_bytes(download.content)
        check_video(out)
        assert page.evaluate("window.seen.frames") > 25, "the video did not play on"
        assert not errors, errors
        browser.close()


@pytest.mark.slow
def test_an_attempt_past_the_time_limit_fails_clearly_and_leaves_nothing(
    data_dir: Path, tmp_path: Path
) -> None:
    """A real render with AVATAR_JOB_TIMEOUT_S=1: stopped by the heartbeat thread, failed
    with words that name the setting, no partial or finished file left."""
    from realtime_avatar.jobs.runner import Outcome, run_job

    settings = Settings(data_dir=data_dir, jobs_dir=tmp_path / "videos", job_timeout_s=1.0)
    store = SqliteJobStore(tmp_path / "jobs.db")
    record = JobRecord.new("text", "local", "default", "en", text=SCRIPT * 3)
    store.create(record)
    assert run_job(record.id, store, settings, heartbeat_s=0.2) is Outcome.FAILED
    failed = store.get(record.id)
    assert failed is not None and failed.state is JobState.FAILED
    assert failed.error is not None and "timed out" in failed.error
    assert "AVATAR_JOB_TIMEOUT_S" in failed.error
    assert list((tmp_path / "videos" / record.id).iterdir()) == []
    assert store.pop_ended()[0][0] == "failed"
    store.close()


@pytest.mark.slow
def test_cancelling_a_running_job_stops_it_and_removes_its_file(
    data_dir: Path, tmp_path: Path
) -> None:
    from realtime_avatar.jobs.runner import Outcome, run_job

    settings = Settings(data_dir=data_dir, jobs_dir=tmp_path / "videos")
    jobs = VideoJobs(settings)
    record = JobRecord.new("text", "local", "default", "en", text=SCRIPT * 3)
    jobs.store.create(record)
    outcome: list[Outcome] = []
    runner = threading.Thread(
        target=lambda: outcome.append(run_job(record.id, jobs.store, settings, heartbeat_s=0.2))
    )
    runner.start()
    deadline = time.monotonic() + 300
    while (got := jobs.store.get(record.id)) is not None and got.progress == 0.0:
        assert time.monotonic() < deadline and runner.is_alive()
        time.sleep(0.05)
    assert jobs.cancel(record.id).state is JobState.CANCELLED
    runner.join(timeout=120)
    assert outcome == [Outcome.CANCELLED]
    assert list((tmp_path / "videos" / record.id).iterdir()) == []
    final = jobs.store.get(record.id)
    assert final is not None and final.state is JobState.CANCELLED
    jobs.close()


@pytest.mark.slow
def test_jobs_a_stopped_server_left_are_taken_up_at_start(data_dir: Path, tmp_path: Path) -> None:
    """In-process: a job left queued and one left running (its server died mid-render) are
    both run when the next server starts; the running one as attempt 2."""
    settings = Settings(data_dir=data_dir, jobs_dir=tmp_path / "videos")
    left = SqliteJobStore(tmp_path / "videos" / "jobs.db")
    queued = JobRecord.new("text", "local", "default", "en", text="Hello there.")
    running = JobRecord.new(
        "text", "local", "default", "en", text="Still here.", state=JobState.RUNNING, attempt=1
    )
    left.create(queued)
    left.create(running)
    left.close()
    jobs = VideoJobs(settings)
    jobs.start()
    try:
        deadline = time.monotonic() + 300
        while not all(jobs.get(r.id).state is JobState.DONE for r in (queued, running)):
            states = [jobs.get(r.id).state for r in (queued, running)]
            assert JobState.FAILED not in states and time.monotonic() < deadline, states
            time.sleep(0.2)
        assert jobs.get(running.id).attempt == 2
        for record in (queued, running):
            check_video(tmp_path / "videos" / record.id / "video.mp4")
    finally:
        jobs.close()
