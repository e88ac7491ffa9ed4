"""The server's event-loop lag histogram on ``/metrics``, and the p99 the fps bench reads.

Fast tier: the app is built without warm-up, so nothing loads a model.
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path

from prometheus_client import CollectorRegistry, Histogram, generate_latest

from realtime_avatar.benchmark.live import (
    LOOP_LAG_METRIC,
    histogram_buckets,
    quantile_from_buckets,
)
from realtime_avatar.server.metrics import LOOP_LAG_BUCKETS
from realtime_avatar.settings import Settings

# Modules that only a model load imports (Whisper, Piper/Silero via onnxruntime, ...).
MODEL_MODULES = {
    "faster_whisper", "ctranslate2", "onnxruntime", "piper", "pocketsphinx", "mediapipe",
    "resemblyzer", "llama_cpp", "torch",
}  # fmt: skip


def test_loop_lag_histogram_is_served_without_loading_models(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from realtime_avatar.server.app import create_app

    loaded = set(sys.modules)
    app = create_app(Settings(data_dir=tmp_path), warm_up=False)
    # A loopback Host: the app refuses names it does not serve (DNS rebinding).
    with TestClient(app, base_url="http://127.0.0.1") as client:  # the lifespan runs
        first = histogram_buckets(client.get("/metrics").text, LOOP_LAG_METRIC)
        assert sorted(first) == [*LOOP_LAG_BUCKETS, math.inf]
        deadline = time.monotonic() + 5.0
        later = first
        while later[math.inf] <= first[math.inf] and time.monotonic() < deadline:
            time.sleep(0.05)
            later = histogram_buckets(client.get("/metrics").text, LOOP_LAG_METRIC)
        assert later[math.inf] > first[math.inf], "the monitor observed nothing"
    newly = {name.partition(".")[0] for name in set(sys.modules) - loaded}
    assert not newly & MODEL_MODULES


def test_p99_from_bucket_deltas() -> None:
    registry = CollectorRegistry()
    lag = Histogram(LOOP_LAG_METRIC, "lag", buckets=LOOP_LAG_BUCKETS, registry=registry)
    for _ in range(50):
        lag.observe(0.3)  # before the run: not counted
    before = histogram_buckets(generate_latest(registry).decode(), LOOP_LAG_METRIC)
    for _ in range(98):
        lag.observe(0.0005)
    lag.observe(0.004)
    lag.observe(0.02)
    after = histogram_buckets(generate_latest(registry).decode(), LOOP_LAG_METRIC)
    # 100 observations in between: the 99th is 4 ms, in the (3 ms, 5 ms] bucket.
    assert quantile_from_buckets(before, after, 0.99) == 0.005
    assert quantile_from_buckets(before, after, 0.5) == 0.001
    assert quantile_from_buckets(before, after, 1.0) == 0.02
    assert math.isnan(quantile_from_buckets(after, after, 0.99))  # nothing observed
    assert histogram_buckets("", LOOP_LAG_METRIC) == {}
    for _ in range(1000):
        lag.observe(5.0)  # beyond every finite bucket: at least the largest bound
    beyond = histogram_buckets(generate_latest(registry).decode(), LOOP_LAG_METRIC)
    assert quantile_from_buckets(after, beyond, 0.99) == LOOP_LAG_BUCKETS[-1]
