"""Video jobs as the API sees them: validate, record, queue, look up, cancel, find the bytes.

One object per server (``VideoJobs``), built from the settings: with no
``AVATAR_REDIS_URL`` records live in SQLite under the jobs folder and jobs run on a thread
of the server; with it, records live in Redis and jobs go to ``avatar worker`` processes.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from ..avatars.registry import avatars_dir, validate_name
from ..constants import OUTPUT_RATE_HZ
from ..engine.script import MAX_USER_AUDIO_S, check_script_text
from ..errors import AvatarError, AvatarNotFoundError, InvalidAudioError, UnsupportedLanguageError
from ..server import metrics
from ..settings import Settings
from ..text.chunker import split_sentences
from ..text.language import resolve_language, script_language
from .model import (
    ACTIVE,
    FINAL,
    VIDEO_NAME,
    JobConflictError,
    JobLimitError,
    JobNotFoundError,
    JobQueueFullError,
    JobRecord,
    JobState,
    JobStoreDownError,
    check_job_id,
)
from .queue import InProcessQueue, JobQueue, RedisQueue
from .runner import job_folder, jobs_root
from .store import JobStore, RedisJobStore, SqliteJobStore, only_if

log = logging.getLogger(__name__)

AUDIO_SUFFIXES = (".wav", ".mp3", ".m4a", ".ogg", ".oga", ".opus", ".flac", ".webm", ".aac")
LOCAL_OWNER = "local"  # jobs submitted when no token is set
METRICS_EVERY_S = 2.0  # how often ended jobs are counted into the metrics


@contextlib.contextmanager
def _store_reachable() -> Iterator[None]:
    """Turn a store or broker failure (Redis down) into a clear 503."""
    try:
        yield
    except AvatarError:
        raise
    except Exception as exc:  # noqa: BLE001 - redis' errors, sqlite's, OS errors
        log.warning("job store unreachable: %s", exc)
        raise JobStoreDownError(
            f"the job queue is unreachable ({type(exc).__name__}); try again shortly"
        ) from None


def owner_of(authorization: str | None) -> str:
    """Who a request is, for the per-token queue limit: a hash of its bearer token."""
    if not authorization:
        return LOCAL_OWNER
    return hashlib.sha256(authorization.encode()).hexdigest()[:16]


class VideoJobs:
    """The server's video jobs: store, queue and files."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.root = jobs_root(settings)
        self._stopping = threading.Event()
        self._counter: threading.Thread | None = None
        self.store: JobStore
        self.queue: JobQueue
        if settings.redis_url:
            self.store = RedisJobStore(settings.redis_url)
            self.queue = RedisQueue(settings)
        else:
            self.root.mkdir(parents=True, exist_ok=True)
            sqlite = SqliteJobStore(self.root / "jobs.db")
            self.store = sqlite
            self.queue = InProcessQueue(sqlite, settings)

    @property
    def mode(self) -> str:
        """``in-process`` or ``redis``."""
        return self.queue.kind

    def start(self) -> None:
        """Make the folder, start the queue (the in-process one takes up left jobs) and the
        metrics: queue depth read at each scrape, ended jobs counted every few seconds."""
        self.root.mkdir(parents=True, exist_ok=True)
        self.queue.start()
        metrics.VIDEO_JOBS_QUEUED.set_function(lambda: self._count(JobState.QUEUED))
        metrics.VIDEO_JOBS_RUNNING.set_function(lambda: self._count(JobState.RUNNING))
        self._counter = threading.Thread(
            target=self._count_ended, name="video-job-metrics", daemon=True
        )
        self._counter.start()

    def _count(self, state: JobState) -> float:
        try:
            return float(self.store.count_state(state))
        except Exception:  # noqa: BLE001 - Redis away: the gauge says nothing, not a 500
            return float("nan")

    def _count_ended(self) -> None:
        while not self._stopping.wait(METRICS_EVERY_S):
            self.count_ended()

    def count_ended(self) -> int:
        """Move the ended jobs any process noted into this server's counters; how many."""
        try:
            ended = self.store.pop_ended()
        except Exception:  # noqa: BLE001 - Redis away: counted at the next look
            log.debug("could not read ended jobs", exc_info=True)
            return 0
        for outcome, seconds in ended:
            metrics.VIDEO_JOBS.labels(outcome=outcome).inc()
            metrics.VIDEO_JOB_SECONDS.observe(seconds)
        return len(ended)

    def close(self) -> None:
        """Stop the queue (an in-process job goes back to queued) and the store."""
        self._stopping.set()
        if self._counter is not None:
            self._counter.join(timeout=10)
        self.queue.close()
        self.store.close()

    # ------------------------------------------------------------------ submitting
    def _check_avatar(self, avatar: str) -> str:
        name = validate_name(avatar)
        if name != "default" and not (avatars_dir(self.settings) / name).is_dir():
            raise AvatarNotFoundError(
                f"no avatar named {name!r}; list them with GET /api/v1/avatars or register one"
            )
        return name

    def _check_room(self, owner: str) -> None:
        with _store_reachable():
            active = self.store.count_active(owner)
        if active >= self.settings.job_max_queued:
            raise JobQueueFullError(
                f"{active} video job(s) of yours are queued or running (the limit is "
                f"{self.settings.job_max_queued}, AVATAR_JOB_MAX_QUEUED); wait for one to "
                "finish or cancel one"
            )

    def submit_text(self, owner: str, text: str, avatar: str, language: str) -> JobRecord:
        """Check a script job and queue it (the checks a worker would fail on, up front)."""
        limit = self.settings.job_max_text_chars
        if len(text) > limit:
            raise JobLimitError(
                f"the script has {len(text)} characters; the limit is {limit} "
                "(AVATAR_JOB_MAX_TEXT_CHARS): split it into several videos"
            )
        clean = check_script_text(text)
        name = self._check_avatar(avatar)
        lang = (language or "auto").strip().lower()
        if lang != "auto":
            try:
                lang = resolve_language(lang, clean)
            except UnsupportedLanguageError as exc:  # its words name the CLI's flag
                raise UnsupportedLanguageError(
                    exc.message.replace("Pass --lang with", 'Set "language" to').replace(
                        "--lang auto", '"auto"'
                    )
                ) from None
        else:
            for sentence in split_sentences(clean):
                script_language(sentence)  # a script no voice reads: refused now
        self._check_room(owner)
        record = JobRecord.new("text", owner, name, lang, text=clean)
        return self._queue(record)

    def submit_audio(self, owner: str, upload: Path, filename: str, avatar: str) -> JobRecord:
        """Queue a recording to lip-sync; ``upload`` (a temporary file) is moved in."""
        from ..media.audio import decode_audio

        name = self._check_avatar(avatar)
        suffix = Path(filename or "").suffix.lower()
        if suffix not in AUDIO_SUFFIXES:
            suffix = ".bin"  # decoded by content; the name only keeps the extension
        if upload.stat().st_size == 0:
            raise InvalidAudioError("the uploaded audio file is empty; send a recording")
        try:
            pcm = decode_audio(upload, OUTPUT_RATE_HZ, max_s=MAX_USER_AUDIO_S + 1)
        except InvalidAudioError as exc:  # name the file the user sent, not our temporary one
            shown = Path(filename).name[:80] if filename else "the upload"
            raise InvalidAudioError(exc.message.replace(upload.name, shown)) from None
        if len(pcm) > MAX_USER_AUDIO_S * OUTPUT_RATE_HZ:
            raise JobLimitError(
                f"the recording is longer than {MAX_USER_AUDIO_S:.0f} s; cut it into parts"
            )
        self._check_room(owner)
        record = JobRecord.new("audio", owner, name, "", audio_name=f"input{suffix}")
        folder = job_folder(self.settings, record.id)
        folder.mkdir(parents=True, exist_ok=True)
        shutil.move(str(upload), folder / record.audio_name)
        return self._queue(record)

    def _queue(self, record: JobRecord) -> JobRecord:
        with _store_reachable():
            self.store.create(record)
        try:
            self.queue.submit(record.id)
        except Exception as exc:  # noqa: BLE001 - the broker is down: say so, keep no ghost
            with contextlib.suppress(Exception):
                self.store.update(
                    record.id,
                    only_if(
                        ACTIVE,
                        {
                            "state": JobState.FAILED,
                            "error": "could not be queued",
                            "finished_unix": time.time(),
                        },
                    ),
                )
            log.warning("queueing job %s failed: %s", record.id, exc)
            raise JobStoreDownError(
                f"the job queue is unreachable ({type(exc).__name__}); try again shortly"
            ) from None
        log.info("job %s queued (%s, %s)", record.id, record.kind, self.mode)
        return record

    # ------------------------------------------------------------------ reading
    def get(self, job_id: str) -> JobRecord:
        """A job's record, or a 404."""
        job_id = check_job_id(job_id)
        with _store_reachable():
            record = self.store.get(job_id)
        if record is None:
            raise JobNotFoundError(f"no video job {job_id}; it may have been removed")
        return record

    def cancel(self, job_id: str) -> JobRecord:
        """Cancel a queued or running job (a running one stops after its sentence)."""
        record = self.get(job_id)
        if record.state in FINAL:
            raise JobConflictError(
                f"job {job_id} is already {record.state}; only queued or running jobs can be "
                "cancelled"
            )
        cancel = only_if(
            ACTIVE,
            {
                "state": JobState.CANCELLED,
                "finished_unix": time.time(),
                "error": "cancelled by request",
            },
        )
        with _store_reachable():
            cancelled = self.store.update(job_id, cancel)
            if cancelled is None:  # it finished in between
                return self.get(job_id)
            self.store.push_ended(str(JobState.CANCELLED), time.time() - cancelled.created_unix)
        return cancelled

    def video_path(self, record: JobRecord) -> Path:
        """Where a done job's video is."""
        return job_folder(self.settings, record.id) / VIDEO_NAME

    def stream_path(self, record: JobRecord) -> Path | None:
        """The growing file of the job's current attempt, if one is under way."""
        if record.stream_name is None:
            return None
        return job_folder(self.settings, record.id) / record.stream_name

    def heartbeat_age_s(self, record: JobRecord) -> float | None:
        """Seconds since the job's worker last reported (None unless running)."""
        if record.state is not JobState.RUNNING or record.heartbeat_unix is None:
            return None
        return max(time.time() - record.heartbeat_unix, 0.0)
