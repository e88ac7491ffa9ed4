"""The two ways a job gets run: a thread in the server, or Dramatiq workers over Redis.

- ``InProcessQueue`` (no ``AVATAR_REDIS_URL``): one thread in the server runs jobs one at a
  time, in order; jobs a stopped server left queued or running are taken up at start.
- ``RedisQueue`` (``AVATAR_REDIS_URL`` set): the server only enqueues a Dramatiq message;
  ``avatar worker`` processes (``jobs/worker.py``) on any machine take them.

Why Dramatiq: its Redis broker acknowledges a message only after the actor returns (late
ack) and keeps every taken message in a per-worker set; a worker whose heartbeats stop for
``AVATAR_JOB_HEARTBEAT_TIMEOUT_S`` is declared dead and its messages go back on the queue,
so a SIGKILLed worker's job is run again by another: at-least-once, out of the box, with a
plain Redis and no extra service. It runs actors in threads of one process (our render
releases the GIL in ONNX Runtime, OpenCV and x264), and its worker stops cleanly.
"""

from __future__ import annotations

import logging
import queue
import threading
from typing import TYPE_CHECKING, Any, Protocol

from ..settings import Settings
from .runner import Outcome, run_job
from .store import SqliteJobStore

if TYPE_CHECKING:
    from dramatiq.brokers.redis import RedisBroker

log = logging.getLogger(__name__)

QUEUE_NAME = "avatar-videos"
ACTOR_NAME = "render_video"
BROKER_NAMESPACE = "avatar-dramatiq"
# Out of a million broker commands, how many also run the queue's maintenance (requeueing
# the messages of dead workers). Dramatiq's default (1 000) means a dead worker's job may
# wait many minutes; with workers polling about once a second, 100 000 looks every few
# seconds, and the work it does is a few set reads on a small queue.
MAINTENANCE_CHANCE = 100_000
INFRA_RETRIES = 3  # a Redis hiccup that escapes the runner: Dramatiq retries the message


class JobQueue(Protocol):
    """What the API needs from a queue."""

    kind: str

    def start(self) -> None:
        """Begin running (or accepting) jobs."""

    def submit(self, job_id: str) -> None:
        """Queue a job whose record is stored."""

    def close(self) -> None:
        """Stop; a job being rendered in this process goes back to the queue."""


class InProcessQueue:
    """Jobs run one at a time on a thread of the server: nothing else to start."""

    kind = "in-process"

    def __init__(self, store: SqliteJobStore, settings: Settings) -> None:
        self._store = store
        self._settings = settings
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        for job_id in self._store.active_ids():  # left by a server that stopped
            self._queue.put(job_id)
        self._thread = threading.Thread(target=self._run, name="video-jobs", daemon=True)
        self._thread.start()

    def submit(self, job_id: str) -> None:
        self._queue.put(job_id)

    def _run(self) -> None:
        while (job_id := self._queue.get()) is not None:
            if self._stop.is_set():
                return
            try:
                run_job(job_id, self._store, self._settings, stop=self._stop)
            except Exception:  # noqa: BLE001 - the store failed; the thread must go on
                log.exception("video job %s could not be run", job_id)

    def close(self) -> None:
        self._stop.set()  # the job being rendered stops after its sentence, back to queued
        self._queue.put(None)
        if self._thread is not None:
            self._thread.join(timeout=60)


def make_broker(settings: Settings) -> RedisBroker:
    """The Dramatiq Redis broker the server and the workers share."""
    from dramatiq.brokers.redis import RedisBroker
    from dramatiq.middleware import Retries

    if not settings.redis_url:
        raise ValueError("make_broker needs AVATAR_REDIS_URL")
    broker = RedisBroker(
        url=settings.redis_url,
        namespace=BROKER_NAMESPACE,
        heartbeat_timeout=int(settings.job_heartbeat_timeout_s * 1000),
        maintenance_chance=MAINTENANCE_CHANCE,
        # No TimeLimit middleware: the runner enforces AVATAR_JOB_TIMEOUT_S itself, the
        # same way in the server and in workers, and records the reason.
        middleware=[Retries(max_retries=INFRA_RETRIES, min_backoff=1000, max_backoff=30_000)],
    )
    broker.declare_queue(QUEUE_NAME)
    return broker


def job_message(job_id: str) -> Any:
    """The Dramatiq message that asks a worker to run ``job_id``."""
    from dramatiq import Message

    return Message(
        queue_name=QUEUE_NAME,
        actor_name=ACTOR_NAME,
        args=(job_id,),
        kwargs={},
        options={"max_retries": INFRA_RETRIES},
    )


class RedisQueue:
    """Enqueue on Redis for ``avatar worker`` processes; nothing runs in the server."""

    kind = "redis"

    def __init__(self, settings: Settings) -> None:
        self._broker = make_broker(settings)

    def start(self) -> None:
        try:
            self._broker.client.ping()
        except Exception as exc:  # noqa: BLE001 - live calls must not wait on the job queue
            log.warning("Redis at AVATAR_REDIS_URL is unreachable (%s): video jobs answer 503", exc)

    def submit(self, job_id: str) -> None:
        self._broker.enqueue(job_message(job_id))

    def depth(self) -> int:
        """Messages waiting (not yet taken by a worker)."""
        return int(self._broker.client.llen(f"{BROKER_NAMESPACE}:{QUEUE_NAME}"))

    def close(self) -> None:
        self._broker.close()


__all__ = [
    "ACTOR_NAME",
    "QUEUE_NAME",
    "InProcessQueue",
    "JobQueue",
    "Outcome",
    "RedisQueue",
    "job_message",
    "make_broker",
]
