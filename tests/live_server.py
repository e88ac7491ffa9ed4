"""Test support: run `avatar serve` as a real subprocess on a free loopback port."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from realtime_avatar.evaluate import server_proc
from realtime_avatar.evaluate.server_proc import free_port

__all__ = ["free_port", "running_server"]


@contextlib.contextmanager
def running_server(data_dir: Path, **env: str) -> Iterator[str]:
    """Start the server with ``data_dir``, wait for /health, yield its base URL, stop it."""
    with server_proc.running_server(data_dir, data_dir, **env) as server:
        yield server.base_url
