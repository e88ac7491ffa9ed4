"""Prometheus metrics: per-stage turn timings, sessions, frames."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry()

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
FRAMES = Counter("avatar_frames_sent_total", "Video frames sent to peers", registry=REGISTRY)


def observe_turn(stage_ms: dict[str, float], interrupted: bool, error: bool) -> None:
    """Record one finished turn."""
    for name, value in stage_ms.items():
        STAGE_SECONDS.labels(stage=name.removesuffix("_ms")).observe(value / 1000.0)
    TURNS.labels(outcome="error" if error else "interrupted" if interrupted else "answered").inc()
