"""Prometheus metrics: per-stage turn timings, sessions, frames, event-loop lag."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

REGISTRY = CollectorRegistry()


class FramesSent(Collector):
    """``avatar_frames_sent_total`` as the frames go: the closed sessions' count plus the
    live sessions' (read at each scrape), so ``rate()`` of it is the frames per second."""

    def __init__(self) -> None:
        self.closed = 0
        self.live: Callable[[], int] = lambda: 0  # the server sets its live sessions' sum

    def inc(self, frames: int) -> None:
        """A session closed having sent ``frames``."""
        self.closed += frames

    def collect(self) -> Iterator[Metric]:
        """The total now."""
        yield CounterMetricFamily(
            "avatar_frames_sent", "Video frames sent to peers", value=self.closed + self.live()
        )

STAGE_SECONDS = Histogram(
    "avatar_turn_stage_seconds",
    "Time from the end of the user's speech to each stage's first output",
    ["stage"],
    buckets=(0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0),
    registry=REGISTRY,
)
SESSIONS = Gauge("avatar_sessions_active", "Live conversation sessions", registry=REGISTRY)
SESSIONS_REFUSED = Counter(
    "avatar_sessions_refused_total", "Offers refused (busy)", registry=REGISTRY
)
TURNS = Counter("avatar_turns_total", "Conversation turns", ["outcome"], registry=REGISTRY)
FRAMES = FramesSent()
REGISTRY.register(FRAMES)
# This node among several (server/cluster.py); Prometheus adds the scraped instance.
NODE_INFO = Gauge(
    "avatar_node_info", "This node's id and public URL (value 1)", ["node", "url"],
    registry=REGISTRY,
)  # fmt: skip
SESSIONS_MAX = Gauge(
    "avatar_sessions_max", "Live sessions this node takes (AVATAR_MAX_SESSIONS)", registry=REGISTRY
)
NODE_DRAINING = Gauge(
    "avatar_node_draining", "1 while the node drains after SIGTERM: no new sessions",
    registry=REGISTRY,
)  # fmt: skip
CLUSTER_NODES = Gauge(
    "avatar_cluster_nodes", "Live nodes registered in Redis, as this node last read them",
    registry=REGISTRY,
)  # fmt: skip
CLUSTER_REDIS_UP = Gauge(
    "avatar_cluster_redis_up", "1 when this node's last heartbeat reached Redis",
    registry=REGISTRY,
)  # fmt: skip
OFFERS_FORWARDED = Counter(
    "avatar_offers_forwarded_total",
    "Offers this full node passed to a peer, by what came of each try",
    ["outcome"],
    registry=REGISTRY,
)
# Fine from 1 to 50 ms: a session's frames are 40 ms apart, so a lag of tens of ms is felt.
LOOP_LAG_BUCKETS = (
    0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.1, 0.25, 1.0,
)  # fmt: skip
LOOP_LAG_SECONDS = Histogram(
    "avatar_event_loop_lag_seconds",
    "How late the event loop runs a timer (sampled every 50 ms); audio, frames and events "
    "wait that long",
    buckets=LOOP_LAG_BUCKETS,
    registry=REGISTRY,
)


def observe_turn(stage_ms: dict[str, float], interrupted: bool, error: bool) -> None:
    """Record one finished turn."""
    for name, value in stage_ms.items():
        STAGE_SECONDS.labels(stage=name.removesuffix("_ms")).observe(value / 1000.0)
    TURNS.labels(outcome="error" if error else "interrupted" if interrupted else "answered").inc()

# Video jobs (jobs/): depth read from the job store at scrape time; outcomes and durations
# reported by whichever process ran the job and counted by a server node (jobs/service.py).
VIDEO_JOBS_QUEUED = Gauge(
    "avatar_video_jobs_queued", "Video jobs waiting for a worker", registry=REGISTRY
)
VIDEO_JOBS_RUNNING = Gauge("avatar_video_jobs_running", "Video jobs rendering", registry=REGISTRY)
VIDEO_JOBS = Counter(
    "avatar_video_jobs_total", "Video jobs that ended, by outcome", ["outcome"], registry=REGISTRY
)
VIDEO_JOB_SECONDS = Histogram(
    "avatar_video_job_seconds",
    "Video job time from submission to its end",
    buckets=(1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800),
    registry=REGISTRY,
)
