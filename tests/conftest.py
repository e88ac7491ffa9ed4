"""Shared fixtures: an isolated data directory and the default avatar, made once per run."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")


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
