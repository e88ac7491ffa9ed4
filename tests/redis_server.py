"""Test support: a real Debian ``redis-server`` on a free loopback port.

``running_redis()`` starts one (no persistence, bound to 127.0.0.1 only, its own working
folder), waits until it answers ``PING`` and stops it afterwards; the ``redis_url``
fixture gives each test its own server and yields its URL (``redis://127.0.0.1:PORT/0``).
Use it from a test module with ``from .redis_server import redis_url  # noqa: F401``.

Nothing here needs a Redis client library: readiness is a ``PING`` over a plain socket, so
the helper works for any test whatever queue or client it uses.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

READY_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 10.0


class RedisStartError(RuntimeError):
    """redis-server is missing, exited, or never answered PING; says what to do."""


@dataclass(frozen=True)
class RedisServer:
    """A started redis-server: its URL, port, process id and log file."""

    url: str
    port: int
    pid: int
    log_path: Path


def redis_binary() -> str:
    """The path of ``redis-server``, or an error saying how to install it."""
    path = shutil.which("redis-server")
    if path is None:
        raise RedisStartError(
            "redis-server is not installed; run `make deps` (it installs Debian's "
            "redis-server) or `apt-get install redis-server`"
        )
    return path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def ping(port: int, timeout_s: float = 1.0) -> bool:
    """Whether a Redis server on 127.0.0.1:``port`` answers PING with PONG."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as sock:
            sock.sendall(b"*1\r\n$4\r\nPING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


@contextlib.contextmanager
def running_redis(workdir: Path | None = None) -> Iterator[RedisServer]:
    """Start ``redis-server`` on a free loopback port, yield it once it answers, stop it."""
    binary = redis_binary()
    own_dir = workdir is None
    folder = Path(tempfile.mkdtemp(prefix="redis-")) if workdir is None else Path(workdir)
    folder.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    log_path = folder / f"redis-{port}.log"
    args = [
        binary,
        "--port", str(port),
        "--bind", "127.0.0.1",
        "--protected-mode", "yes",
        "--save", "",  # no RDB snapshots: a test's data dies with its server
        "--appendonly", "no",
        "--daemonize", "no",
        "--dir", str(folder),
        "--logfile", str(log_path),
    ]  # fmt: skip
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not ping(port):
            if proc.poll() is not None:
                tail = log_path.read_text(errors="replace")[-2000:] if log_path.exists() else ""
                raise RedisStartError(f"redis-server exited ({proc.returncode}): {tail}")
            if time.monotonic() > deadline:
                raise RedisStartError(f"redis-server did not answer PING in {READY_TIMEOUT_S} s")
            time.sleep(0.05)
        yield RedisServer(f"redis://127.0.0.1:{port}/0", port, proc.pid, log_path)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=STOP_TIMEOUT_S)
        if own_dir:
            shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A fresh redis-server for one test (its log in the test's tmp_path)."""
    try:
        with running_redis(tmp_path / "redis") as server:
            yield server
    except RedisStartError as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The URL of a fresh redis-server for one test: ``redis://127.0.0.1:PORT/0``."""
    return redis_server.url
