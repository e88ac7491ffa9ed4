"""Run the real ``avatar serve`` as a subprocess on a free loopback port, for live scenarios."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

log = logging.getLogger(__name__)

READY_TIMEOUT_S = 180.0


class ServerStartError(RuntimeError):
    """The server exited or never became healthy; the message holds the tail of its log."""


@dataclass(frozen=True)
class RunningServer:
    """A started server: its base URL, how long it took to become healthy, its log."""

    base_url: str
    ready_s: float
    log_path: Path
    pid: int = 0  # the server process, for CPU and memory readings


def free_port() -> int:
    """An unused TCP port on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def running_server(data_dir: Path, log_dir: Path, **env: str) -> Iterator[RunningServer]:
    """Start ``avatar serve`` on loopback, wait for ``/health``, yield it, stop it."""
    port = free_port()
    environ = dict(os.environ, AVATAR_DATA_DIR=str(data_dir), AVATAR_PORT=str(port), **env)
    environ.pop("AVATAR_TOKEN", None)  # loopback needs none; a set token would lock us out
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"server-{port}.log"
    started = time.monotonic()
    with open(log_path, "w", encoding="utf-8") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "realtime_avatar.cli", "serve", "--port", str(port)],
            env=environ,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            while True:
                if proc.poll() is not None:
                    tail = log_path.read_text(encoding="utf-8", errors="replace")[-3000:]
                    raise ServerStartError(f"avatar serve exited ({proc.returncode}): {tail}")
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                        break
                if time.monotonic() - started > READY_TIMEOUT_S:
                    raise ServerStartError(f"avatar serve not healthy after {READY_TIMEOUT_S} s")
                time.sleep(0.3)
            ready = time.monotonic() - started
            log.info("server ready at %s after %.1f s", base, ready)
            yield RunningServer(base, ready, log_path, proc.pid)
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
