"""Shared fixtures (an isolated data directory and the default avatar, made once per run)
and the two test tiers.

A test is marked ``slow`` when it loads a model (Piper, espeak-ng synthesis, Whisper,
PocketSphinx, Silero VAD, mediapipe, resemblyzer, llama.cpp), registers an avatar, starts
a server, a subprocess or a browser, or waits in real time. ``pytest -m "not slow"`` runs
the rest in seconds; here a test that uses a fixture of the slow kind without the mark is
refused at collection, and each fast test gets a tight time-out.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

# redis_server / redis_url: a real redis-server per test (tests/redis_server.py).
from .redis_server import redis_server, redis_url  # noqa: F401

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
# Registering an avatar fits its voice by default (seconds to a minute); tests that want
# the fit ask for it (tests/test_voice_fit.py).
os.environ.setdefault("AVATAR_VOICE_FIT", "off")

# Fixtures that register the default avatar (mediapipe) or start a model server.
SLOW_FIXTURES = {
    "data_dir": "registers the default avatar",
    "default_avatar": "registers the default avatar",
    "fresh_data_dir": "registers the default avatar",
    "llama_server": "starts a llama.cpp server",
    "redis_server": "starts a redis-server",
    "redis_url": "starts a redis-server",
}
FAST_TIMEOUT_S = 60  # a fast test's limit; slow ones have the ini's `timeout`


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Refuse an unmarked test that uses a slow fixture; bound each fast test's time."""
    # pytest-timeout: a marker beats --timeout and PYTEST_TIMEOUT, so only when neither is set.
    bound = (
        config.pluginmanager.hasplugin("timeout")
        and config.getoption("timeout") is None
        and not os.environ.get("PYTEST_TIMEOUT")
    )
    unmarked = []
    for item in items:
        if item.get_closest_marker("slow") is not None:
            continue
        names = getattr(item, "fixturenames", ())
        used = [f"{name} ({why})" for name, why in SLOW_FIXTURES.items() if name in names]
        if used:
            unmarked.append(f"{item.nodeid} uses {', '.join(used)}")
        elif bound and item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(FAST_TIMEOUT_S))
    if unmarked:
        raise pytest.UsageError("mark these tests @pytest.mark.slow:\n  " + "\n  ".join(unmarked))


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data directory for the whole run, with the default avatar registered in it."""
    path = tmp_path_factory.mktemp("avatar-data")
    os.environ["AVATAR_DATA_DIR"] = str(path)
    from realtime_avatar.avatars.registry import ensure_default_avatar
    from realtime_avatar.settings import get_settings

    ensure_default_avatar(get_settings())
    return path


@pytest.fixture(scope="session")
def default_avatar(data_dir: Path):  # type: ignore[no-untyped-def]
    """The loaded default avatar."""
    from realtime_avatar.avatars.registry import load_avatar

    return load_avatar("default")


@pytest.fixture
def fresh_data_dir(tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty data directory for tests that register avatars (the default one copied in)."""
    target = tmp_path / "data"
    shutil.copytree(data_dir, target)
    monkeypatch.setenv("AVATAR_DATA_DIR", str(target))
    return target
