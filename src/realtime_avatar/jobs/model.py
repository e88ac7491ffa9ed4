"""A video job's record: its state machine, what it asked for, how far it got, its timings.

States: ``queued`` -> ``running`` -> ``done`` | ``failed`` | ``cancelled``. A running job
may go back to ``queued`` (its worker died or was stopped, the queue hands it to another)
and a queued or running one may be cancelled. ``done``, ``failed`` and ``cancelled`` are
final: nothing moves a job out of them.
"""

from __future__ import annotations

import re
import time
import uuid
from dataclasses import asdict, dataclass, field, fields
from enum import StrEnum
from typing import Any

from ..errors import AvatarError


class JobState(StrEnum):
    """Where a video job is."""

    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


FINAL = frozenset({JobState.DONE, JobState.FAILED, JobState.CANCELLED})
ACTIVE = frozenset({JobState.QUEUED, JobState.RUNNING})
# The moves the state machine allows; a store refuses any other.
MOVES: dict[JobState, frozenset[JobState]] = {
    JobState.QUEUED: frozenset({JobState.RUNNING, JobState.CANCELLED, JobState.FAILED}),
    JobState.RUNNING: frozenset(
        {JobState.QUEUED, JobState.RUNNING, JobState.DONE, JobState.FAILED, JobState.CANCELLED}
    ),
    JobState.DONE: frozenset(),
    JobState.FAILED: frozenset(),
    JobState.CANCELLED: frozenset(),
}

JOB_ID = re.compile(r"^[0-9a-f]{32}$")
VIDEO_NAME = "video.mp4"  # the finished file in the job's folder


class JobNotFoundError(AvatarError):
    """No video job with that id (or it was removed)."""

    status_code = 404


class JobConflictError(AvatarError):
    """The job is not in a state that allows what was asked (e.g. cancelling a done job)."""

    status_code = 409


class JobQueueFullError(AvatarError):
    """Too many queued or running jobs for one token."""

    status_code = 429


class JobStoreDownError(AvatarError):
    """The job store or queue (Redis) cannot be reached."""

    status_code = 503


class JobLimitError(AvatarError):
    """A job's input over a limit (text length, upload size)."""

    status_code = 422


def check_job_id(job_id: str) -> str:
    """The id if it is one this server makes (32 hex digits), else a 404."""
    if not JOB_ID.match(job_id or ""):
        raise JobNotFoundError(f"no video job {job_id[:40]!r}: ids are 32 hexadecimal digits")
    return job_id


@dataclass
class JobRecord:
    """Everything known about one job; stored as JSON, answered (mostly) as is."""

    id: str
    kind: str  # "text": speak the script; "audio": lip-sync the uploaded recording
    owner: str  # who submitted it (a hash of the bearer token), for the per-token limit
    avatar: str
    language: str
    text: str = ""
    audio_name: str = ""  # the uploaded recording's file in the job's folder
    state: JobState = JobState.QUEUED
    progress: float = 0.0  # 0..1 of the script's characters or the recording's samples
    error: str | None = None
    attempt: int = 0  # how many times a worker started it (more than 1: it was re-run)
    worker: str | None = None  # the worker running it (host:pid)
    stream_name: str | None = None  # the growing fragmented MP4 of the current attempt
    created_unix: float = field(default_factory=time.time)
    started_unix: float | None = None  # the current attempt's start
    first_started_unix: float | None = None
    heartbeat_unix: float | None = None
    finished_unix: float | None = None
    video_s: float | None = None
    frames: int | None = None
    size_bytes: int | None = None

    @classmethod
    def new(cls, kind: str, owner: str, avatar: str, language: str, **extra: Any) -> JobRecord:
        """A queued job with a fresh id."""
        return cls(uuid.uuid4().hex, kind, owner, avatar, language, **extra)

    def to_json(self) -> dict[str, Any]:
        """The record as JSON-able values (the state as its string)."""
        data = asdict(self)
        data["state"] = str(self.state)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> JobRecord:
        """Read a stored record; unknown keys (from a newer version) are ignored."""
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        values["state"] = JobState(values.get("state", "queued"))
        return cls(**values)

    def public(self, now: float | None = None) -> dict[str, Any]:
        """What ``GET /api/v1/videos/{id}`` answers: state, progress, error, timings."""
        now = time.time() if now is None else now
        started = self.first_started_unix
        return {
            "id": self.id,
            "state": str(self.state),
            "kind": self.kind,
            "avatar": self.avatar,
            "language": self.language,
            "progress": round(self.progress, 4),
            "error": self.error,
            "attempt": self.attempt,
            "timings": {
                "created_unix": self.created_unix,
                "queued_s": _span(self.created_unix, started, now),
                "running_s": _span(self.started_unix, self.finished_unix, now)
                if self.state is not JobState.QUEUED
                else None,
                "total_s": _span(self.created_unix, self.finished_unix, now),
                "video_s": self.video_s,
            },
            "frames": self.frames,
            "size_bytes": self.size_bytes,
            "stream_url": f"/api/v1/videos/{self.id}/stream",
        }


def _span(start: float | None, end: float | None, now: float) -> float | None:
    if start is None:
        return None
    return round((end if end is not None else now) - start, 3)
