"""A real Redis server for the tests: ``redis-server`` started on 127.0.0.1 on a free port.

Tests that need it skip, loudly, only when ``redis-server`` is not on PATH (``.ci/run``
installs it).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

REDIS_SERVER = shutil.which("redis-server")


def require_redis() -> str:
    """The path of ``redis-server``, or skip the test saying why."""
    if REDIS_SERVER is None:
        pytest.skip("REDIS TESTS SKIPPED: redis-server is not on PATH (apt install redis-server)")
    return REDIS_SERVER


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _answers_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """One ``redis-server`` process; :meth:`stop` and :meth:`start` it again on the same port."""

    def __init__(self, directory: Path) -> None:
        self.binary = require_redis()
        self.port = free_port()
        self.directory = directory
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def start(self) -> None:
        assert self.process is None
        self.process = subprocess.Popen(
            [
                self.binary,
                "--port", str(self.port),
                "--bind", "127.0.0.1",
                "--save", "",
                "--appendonly", "no",
                "--dir", str(self.directory),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        # A blocking wait for the process to answer (before any trio code uses it).
        for _ in range(500):
            if _answers_ping(self.port):
                return
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.process.returncode}")
            time.sleep(0.01)  # waiting for another process to start, before trio runs
        raise RuntimeError("redis-server did not answer PING")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)
            self.process = None

    def cli(self, *args: str) -> str:
        """Run ``redis-cli`` against this server (an independent client); its output."""
        cli = shutil.which("redis-cli")
        if cli is None:
            pytest.skip("REDIS TESTS SKIPPED: redis-cli is not on PATH")
        done = subprocess.run(
            [cli, "-p", str(self.port), "--raw", *args], capture_output=True, check=True, text=True
        )
        return done.stdout


@contextmanager
def running_redis(directory: Path) -> Iterator[RedisServer]:
    server = RedisServer(directory)
    server.start()
    try:
        yield server
    finally:
        server.stop()
