"""Where job records live: SQLite for the embedded default, Redis when workers are remote.

Both answer the same small protocol. Every change is a compare-and-set on the state (and,
for a worker, its attempt), so a cancel racing a finish, or a re-run racing the run it
replaced, leaves exactly one winner, and a final state is never left.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Protocol

from .model import ACTIVE, MOVES, JobRecord, JobState

Patch = dict[str, Any]


class JobStore(Protocol):
    """Job records, changed only by compare-and-set."""

    def create(self, record: JobRecord) -> None:
        """Add a new record."""

    def get(self, job_id: str) -> JobRecord | None:
        """A record, or None."""

    def update(
        self,
        job_id: str,
        change: Callable[[JobRecord], Patch | None],
    ) -> JobRecord | None:
        """Apply ``change`` atomically: it sees the current record and returns the fields to
        set (a new ``state`` must be an allowed move), or None to leave it; the new record
        is returned, or None when nothing changed."""

    def count_active(self, owner: str) -> int:
        """Queued and running jobs of one owner."""

    def count_state(self, state: JobState) -> int:
        """Jobs in one active state (queued or running), everyone's."""

    def push_ended(self, outcome: str, seconds: float) -> None:
        """Note that a job ended (for the server's metrics, whichever process ran it)."""

    def pop_ended(self, limit: int = 500) -> list[tuple[str, float]]:
        """Take the ended jobs noted so far (each is taken once, by one server)."""

    def close(self) -> None:
        """Release connections."""


def apply_patch(record: JobRecord, patch: Patch) -> JobRecord:
    """The record with ``patch`` applied, refusing a move the state machine forbids."""
    data = record.to_json()
    new_state = JobState(patch.get("state", record.state))
    if new_state is not record.state and new_state not in MOVES[record.state]:
        raise ValueError(f"job {record.id}: {record.state} -> {new_state} is not allowed")
    data.update({k: (str(v) if isinstance(v, JobState) else v) for k, v in patch.items()})
    return JobRecord.from_json(data)


class SqliteJobStore:
    """Job records in one SQLite file (WAL); for the server's in-process queue."""

    def __init__(self, path: Path) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(
            """CREATE TABLE IF NOT EXISTS video_jobs (
                id TEXT PRIMARY KEY,
                owner TEXT NOT NULL,
                state TEXT NOT NULL,
                record TEXT NOT NULL,
                updated_unix REAL NOT NULL)"""
        )
        self._db.execute("CREATE INDEX IF NOT EXISTS video_jobs_owner ON video_jobs(owner, state)")
        self._db.execute(
            """CREATE TABLE IF NOT EXISTS video_job_ends (
                n INTEGER PRIMARY KEY AUTOINCREMENT, outcome TEXT NOT NULL, seconds REAL)"""
        )

    def create(self, record: JobRecord) -> None:
        with self._lock:
            self._db.execute(
                "INSERT INTO video_jobs (id, owner, state, record, updated_unix) "
                "VALUES (?,?,?,?,?)",
                (record.id, record.owner, str(record.state), _dump(record), time.time()),
            )

    def get(self, job_id: str) -> JobRecord | None:
        with self._lock:
            row = self._db.execute("SELECT record FROM video_jobs WHERE id=?", (job_id,)).fetchone()
        return JobRecord.from_json(json.loads(row[0])) if row else None

    def update(self, job_id: str, change: Callable[[JobRecord], Patch | None]) -> JobRecord | None:
        with self._lock:  # one connection, one lock: read, decide and write as one step
            row = self._db.execute("SELECT record FROM video_jobs WHERE id=?", (job_id,)).fetchone()
            if row is None:
                return None
            current = JobRecord.from_json(json.loads(row[0]))
            patch = change(current)
            if patch is None:
                return None
            new = apply_patch(current, patch)
            self._db.execute(
                "UPDATE video_jobs SET state=?, record=?, updated_unix=? WHERE id=?",
                (str(new.state), _dump(new), time.time(), job_id),
            )
            return new

    def count_active(self, owner: str) -> int:
        with self._lock:
            row = self._db.execute(
                "SELECT COUNT(*) FROM video_jobs WHERE owner=? AND state IN (?,?)",
                (owner, *(str(s) for s in ACTIVE)),
            ).fetchone()
        return int(row[0])

    def count_state(self, state: JobState) -> int:
        with self._lock:
            row = self._db.execute(
                "SELECT COUNT(*) FROM video_jobs WHERE state=?", (str(state),)
            ).fetchone()
        return int(row[0])

    def push_ended(self, outcome: str, seconds: float) -> None:
        with self._lock:
            self._db.execute(
                "INSERT INTO video_job_ends (outcome, seconds) VALUES (?,?)", (outcome, seconds)
            )

    def pop_ended(self, limit: int = 500) -> list[tuple[str, float]]:
        with self._lock:
            rows = self._db.execute(
                "SELECT n, outcome, seconds FROM video_job_ends ORDER BY n LIMIT ?", (limit,)
            ).fetchall()
            if rows:
                self._db.execute("DELETE FROM video_job_ends WHERE n <= ?", (rows[-1][0],))
        return [(str(r[1]), float(r[2])) for r in rows]

    def active_ids(self) -> list[str]:
        """Jobs left queued or running (by a server that stopped), oldest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id FROM video_jobs WHERE state IN (?,?) ORDER BY updated_unix",
                tuple(str(s) for s in ACTIVE),
            ).fetchall()
        return [r[0] for r in rows]

    def close(self) -> None:
        with self._lock:
            self._db.close()


class RedisJobStore:
    """Job records in Redis, where the server and workers on any machine see them.

    One string key per job (its JSON), changed in a WATCH/MULTI transaction; a set per
    owner holds the ids of its active jobs for the per-token limit, a set per active state
    the ids in it (queue depth for the metrics), and a list the jobs that ended.
    """

    def __init__(self, url: str, namespace: str = "avatar:jobs") -> None:
        import redis

        self._redis = redis.Redis.from_url(url)
        self._ns = namespace

    def _key(self, job_id: str) -> str:
        return f"{self._ns}:job:{job_id}"

    def _owner_key(self, owner: str) -> str:
        return f"{self._ns}:active:{owner}"

    def _state_key(self, state: JobState) -> str:
        return f"{self._ns}:state:{state}"

    def create(self, record: JobRecord) -> None:
        pipe = self._redis.pipeline()
        pipe.set(self._key(record.id), _dump(record))
        pipe.sadd(self._owner_key(record.owner), record.id)
        pipe.sadd(self._state_key(record.state), record.id)
        pipe.execute()

    def get(self, job_id: str) -> JobRecord | None:
        raw = self._redis.get(self._key(job_id))
        return JobRecord.from_json(json.loads(raw)) if raw else None

    def update(self, job_id: str, change: Callable[[JobRecord], Patch | None]) -> JobRecord | None:
        import redis

        key = self._key(job_id)
        with self._redis.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(key)
                    raw = pipe.get(key)
                    if not raw:
                        pipe.reset()
                        return None
                    current = JobRecord.from_json(json.loads(raw))
                    patch = change(current)
                    if patch is None:
                        pipe.reset()
                        return None
                    new = apply_patch(current, patch)
                    pipe.multi()
                    pipe.set(key, _dump(new))
                    if new.state not in ACTIVE:
                        pipe.srem(self._owner_key(new.owner), job_id)
                    if new.state is not current.state:
                        pipe.srem(self._state_key(current.state), job_id)
                        if new.state in ACTIVE:
                            pipe.sadd(self._state_key(new.state), job_id)
                    pipe.execute()
                    return new
                except redis.WatchError:
                    continue  # someone else changed it in between: decide again

    def count_active(self, owner: str) -> int:
        return int(self._redis.scard(self._owner_key(owner)))

    def count_state(self, state: JobState) -> int:
        return int(self._redis.scard(self._state_key(state)))

    def push_ended(self, outcome: str, seconds: float) -> None:
        self._redis.rpush(f"{self._ns}:ended", json.dumps([outcome, seconds]))

    def pop_ended(self, limit: int = 500) -> list[tuple[str, float]]:
        raw: Any = self._redis.lpop(f"{self._ns}:ended", limit) or []
        return [(str(o), float(s)) for o, s in (json.loads(item) for item in raw)]

    def ping(self) -> None:
        """Raise if Redis cannot be reached."""
        self._redis.ping()

    def close(self) -> None:
        self._redis.close()


def _dump(record: JobRecord) -> str:
    return json.dumps(record.to_json(), separators=(",", ":"))


def only_if(
    states: Iterable[JobState], patch: Patch, attempt: int | None = None
) -> Callable[[JobRecord], Patch | None]:
    """A change that applies ``patch`` only in one of ``states`` (and that attempt)."""
    allowed = frozenset(states)

    def change(record: JobRecord) -> Patch | None:
        if record.state not in allowed:
            return None
        if attempt is not None and record.attempt != attempt:
            return None
        return patch

    return change
