"""``avatar worker``: takes video jobs from the Redis queue and renders them.

Run any number, on any machine that reaches Redis and sees the same jobs folder
(``AVATAR_JOBS_DIR``, a shared mount): results reach the API node through that folder,
which is also how the API streams a video while a worker on another machine renders it.

Stopping: ``stop()`` (SIGTERM, Ctrl-C) ends the job being rendered after its current
sentence and hands it back to the queue, where another worker takes it; ``stop(hand_back=
False)`` lets it finish first. A worker killed outright loses nothing either: Dramatiq
requeues its unacknowledged job once its heartbeats stop.
"""

from __future__ import annotations

import logging
import threading

from ..settings import Settings
from .queue import ACTOR_NAME, QUEUE_NAME, job_message, make_broker
from .runner import Outcome, jobs_root, run_job, worker_name
from .store import RedisJobStore

log = logging.getLogger(__name__)

POLL_MS = 500  # how long an idle worker waits between looks at the queue


class VideoWorker:
    """A Dramatiq worker with ``threads`` render threads (1 fits a 2-core machine)."""

    def __init__(self, settings: Settings, *, threads: int = 1, name: str | None = None) -> None:
        import dramatiq

        if not settings.redis_url:
            raise ValueError("avatar worker needs AVATAR_REDIS_URL")
        self.settings = settings
        self.name = name or worker_name()
        self.jobs_root = jobs_root(settings)
        self.store = RedisJobStore(settings.redis_url)
        self.broker = make_broker(settings)
        self._hand_back = threading.Event()
        self._stopped = threading.Event()
        self.jobs_run: dict[str, int] = {}  # outcome -> count, for the log at exit
        dramatiq.Actor(
            self._handle,
            broker=self.broker,
            actor_name=ACTOR_NAME,
            queue_name=QUEUE_NAME,
            priority=0,
            options={},
        )
        self._worker = dramatiq.Worker(
            self.broker, queues={QUEUE_NAME}, worker_threads=threads, worker_timeout=POLL_MS
        )
        # Take only as many jobs as there are threads: a second job held in memory would
        # wait behind the first while another worker sits idle.
        self._worker.queue_prefetch = threads

    def _handle(self, job_id: str) -> None:
        outcome = run_job(job_id, self.store, self.settings, worker=self.name, stop=self._hand_back)
        self.jobs_run[outcome] = self.jobs_run.get(outcome, 0) + 1
        if outcome is Outcome.HANDED_BACK:
            self.broker.enqueue(job_message(job_id))

    def start(self) -> None:
        """Start taking jobs (returns at once; the work runs on Dramatiq's threads)."""
        self.store.ping()
        self._worker.start()
        log.info("worker %s taking jobs from %s", self.name, QUEUE_NAME)

    def stop(self, *, hand_back: bool = True, timeout_s: float = 60.0) -> None:
        """Stop taking jobs; with ``hand_back`` a job being rendered goes back to the queue
        after its current sentence, else it is finished first (up to ``timeout_s``)."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        if hand_back:
            self._hand_back.set()
        self._worker.stop(timeout=int(timeout_s * 1000))
        self.broker.close()
        self.store.close()
        log.info("worker %s stopped: %s", self.name, self.jobs_run or "no jobs")

    def wait(self, until: threading.Event) -> None:
        """Block until ``until`` is set (the CLI's signal handler sets it)."""
        while not until.wait(0.5):
            pass

    def warm_up(self) -> None:
        """Load the default avatar and the English voice now, not in the first job."""
        from ..avatars.registry import ensure_default_avatar
        from ..tts.registry import get_synthesizer

        ensure_default_avatar(self.settings)
        synth = get_synthesizer("en", self.settings)
        warm = getattr(synth, "warm_up", None)
        if callable(warm):
            warm()
