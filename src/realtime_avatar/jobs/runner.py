"""One attempt at a video job: the engine's script (or recording) path, reporting as it goes.

The same function runs in the server's own job thread and in ``avatar worker``. It takes
the job (queued, or running under an attempt that is presumed dead, which is how a re-run
after a killed worker starts), renders with ``engine.script`` into the job's folder as a
fragmented MP4 that grows where the API can stream it, beats a heartbeat, and ends in
exactly one final state by compare-and-set. The finished file appears only whole: the
writer renames it into place when complete, so a killed attempt leaves at most a stale
``attempt-N.mp4.part`` and never a broken ``video.mp4``.
"""

from __future__ import annotations

import ctypes
import logging
import os
import socket
import threading
import time
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from ..errors import AvatarError
from ..settings import Settings
from .model import ACTIVE, VIDEO_NAME, JobRecord, JobState
from .store import JobStore, only_if

log = logging.getLogger(__name__)

HEARTBEAT_S = 2.0


class Outcome(StrEnum):
    """How an attempt ended, for the queue that ran it."""

    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"
    HANDED_BACK = "handed_back"  # the worker is stopping: the job goes back to the queue
    SKIPPED = "skipped"  # final already (cancelled while queued, or a duplicate delivery)
    SUPERSEDED = "superseded"  # another attempt took the job over


class _Stop(Exception):
    """Raised from the progress callback (or into the render thread) to end an attempt."""

    outcome = Outcome.FAILED


class _Cancelled(_Stop):
    outcome = Outcome.CANCELLED


class _Superseded(_Stop):
    outcome = Outcome.SUPERSEDED


class _HandedBack(_Stop):
    outcome = Outcome.HANDED_BACK


class JobTimedOut(_Stop):
    """The attempt ran past ``AVATAR_JOB_TIMEOUT_S`` (stuck, or far too long a script)."""


def jobs_root(settings: Settings) -> Path:
    """The folder that holds each job's folder (shared by the server and its workers)."""
    root = settings.jobs_dir or Path(settings.data_dir).expanduser() / "videos"
    return Path(root).expanduser()


def job_folder(settings: Settings, job_id: str) -> Path:
    """One job's folder: its upload, the growing stream, the finished video."""
    return jobs_root(settings) / job_id


def worker_name() -> str:
    """This process, as a job record names it."""
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass
class _Signals:
    cancelled: bool = False
    superseded: bool = False
    timed_out: bool = False


def _raise_in_thread(thread_id: int, exc_type: type[BaseException]) -> None:
    """Raise ``exc_type`` in another thread at its next Python instruction (a stuck render
    caught in Python code; a native call that never returns is beyond this)."""
    ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(thread_id), ctypes.py_object(exc_type)
    )


def run_job(
    job_id: str,
    store: JobStore,
    settings: Settings,
    *,
    worker: str | None = None,
    stop: threading.Event | None = None,
    heartbeat_s: float = HEARTBEAT_S,
) -> Outcome:
    """Run one attempt at ``job_id``; never raises for a job's own failure.

    ``stop`` set (the worker is shutting down) ends the attempt after the sentence being
    rendered and puts the job back in the queue (``Outcome.HANDED_BACK``).
    """
    from ..engine.script import render_audio, render_script

    worker = worker or worker_name()
    now = time.time()

    def take(record: JobRecord) -> dict[str, object] | None:
        if record.state not in ACTIVE:
            return None
        attempt = record.attempt + 1
        return {
            "state": JobState.RUNNING,
            "attempt": attempt,
            "worker": worker,
            "started_unix": now,
            "first_started_unix": record.first_started_unix or now,
            "heartbeat_unix": now,
            "progress": 0.0,
            "error": None,
            "stream_name": f"attempt-{attempt}.mp4.part",
        }

    record = store.update(job_id, take)
    if record is None:
        log.info("job %s: nothing to do (final or gone)", job_id)
        return Outcome.SKIPPED
    attempt = record.attempt
    folder = job_folder(settings, job_id)
    folder.mkdir(parents=True, exist_ok=True)
    stream_path = folder / str(record.stream_name)
    out_path = folder / VIDEO_NAME
    for earlier in range(1, attempt):  # what a killed attempt left (a reader keeps its copy)
        (folder / f"attempt-{earlier}.mp4.part").unlink(missing_ok=True)
    deadline = time.monotonic() + settings.job_timeout_s
    signals = _Signals()
    render_thread = threading.get_ident()
    beating = threading.Event()
    log.info("job %s: attempt %d on %s", job_id, attempt, worker)

    def check() -> None:
        if signals.timed_out:
            raise JobTimedOut()
        if signals.cancelled:
            raise _Cancelled()
        if signals.superseded:
            raise _Superseded()
        if stop is not None and stop.is_set():
            raise _HandedBack()

    def heartbeat() -> None:
        while not beating.wait(heartbeat_s):
            if time.monotonic() > deadline and not signals.timed_out:
                signals.timed_out = True
                _raise_in_thread(render_thread, JobTimedOut)
                return
            beat = store.update(
                job_id, only_if({JobState.RUNNING}, {"heartbeat_unix": time.time()}, attempt)
            )
            if beat is None:
                current = store.get(job_id)
                if current is not None and current.state is JobState.CANCELLED:
                    signals.cancelled = True
                else:
                    signals.superseded = True

    def progress(done: int, total: int) -> None:
        check()
        store.update(
            job_id,
            only_if({JobState.RUNNING}, {"progress": done / max(total, 1)}, attempt),
        )

    beater = threading.Thread(target=heartbeat, name=f"job-heartbeat-{job_id[:8]}", daemon=True)
    beater.start()
    try:
        try:
            if record.kind == "audio":
                result = render_audio(
                    folder / record.audio_name,
                    out_path,
                    avatar_name=record.avatar,
                    settings=settings,
                    progress=progress,
                    stream_path=stream_path,
                    reuse_renderer=True,
                )
            else:
                result = render_script(
                    record.text,
                    out_path,
                    avatar_name=record.avatar,
                    language=record.language,
                    settings=settings,
                    progress=progress,
                    stream_path=stream_path,
                    reuse_renderer=True,
                )
            check()  # cancelled while the last frames were encoded: not done after all
        finally:
            beating.set()
            beater.join()
    except _Stop as stopped:
        return _stopped(store, job_id, attempt, stopped, settings)
    except AvatarError as exc:
        return _fail(store, job_id, attempt, exc.message)
    except Exception as exc:  # noqa: BLE001 - any bug becomes a failed job, never a dead worker
        log.exception("job %s failed", job_id)
        return _fail(
            store,
            job_id,
            attempt,
            f"internal error while rendering ({type(exc).__name__}); see the worker's log",
        )
    size = out_path.stat().st_size if out_path.exists() else None
    done = store.update(
        job_id,
        only_if(
            {JobState.RUNNING},
            {
                "state": JobState.DONE,
                "progress": 1.0,
                "finished_unix": time.time(),
                "video_s": round(result.duration_s, 3),
                "frames": result.frames,
                "size_bytes": size,
                "heartbeat_unix": time.time(),
            },
            attempt,
        ),
    )
    if done is None:  # cancelled or taken over at the last moment
        current = store.get(job_id)
        if current is not None and current.state is JobState.CANCELLED:
            out_path.unlink(missing_ok=True)
            return Outcome.CANCELLED
        return Outcome.SUPERSEDED
    store.push_ended(str(Outcome.DONE), (done.finished_unix or time.time()) - done.created_unix)
    log.info("job %s: done, %.1f s of video in %.1f s", job_id, result.duration_s, result.wall_s)
    return Outcome.DONE


def _stopped(
    store: JobStore,
    job_id: str,
    attempt: int,
    stopped: _Stop,
    settings: Settings,
) -> Outcome:
    if isinstance(stopped, JobTimedOut):
        return _fail(
            store,
            job_id,
            attempt,
            f"timed out: the render ran longer than {settings.job_timeout_s:.0f} s "
            "(AVATAR_JOB_TIMEOUT_S); shorten the script or raise the limit",
        )
    if isinstance(stopped, _HandedBack):
        store.update(
            job_id,
            only_if(
                {JobState.RUNNING},
                {"state": JobState.QUEUED, "worker": None, "progress": 0.0},
                attempt,
            ),
        )
        log.info("job %s: handed back to the queue", job_id)
    return stopped.outcome


def _fail(store: JobStore, job_id: str, attempt: int, message: str) -> Outcome:
    log.info("job %s failed: %s", job_id, message)
    failed = store.update(
        job_id,
        only_if(
            {JobState.RUNNING},
            {"state": JobState.FAILED, "error": message, "finished_unix": time.time()},
            attempt,
        ),
    )
    if failed is not None:
        store.push_ended(str(Outcome.FAILED), time.time() - failed.created_unix)
    return Outcome.FAILED
