"""Shared fixtures: the project's own DXLink server on 127.0.0.1, and task and socket leak
checks."""

from __future__ import annotations

import contextlib
import functools
import gc
import io
import logging
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from typing import Any

import attrs
import psutil
import pytest
import trio

from trio_dxlink import ReconnectPolicy, Token
from trio_dxlink.testing import DXLinkServer, Market, ServerConfig, open_dxlink_server

NOW = 1_700_000_000.0


def pinned_market(seed: int = 0) -> Market:
    """A market whose wall clock is pinned, so its events are deterministic."""
    return Market(seed=seed, clock=lambda: NOW)


def scripted_server(
    *, in_memory: bool = False, token: str | None = None
) -> contextlib.AbstractAsyncContextManager[DXLinkServer]:
    """A faithful local server (no simulation: tests publish what they need), on 127.0.0.1 or
    reached in memory (clients then pass ``connector=server.connector()``).

    It keeps closed connections, so tests can inspect what a client sent after it has gone.
    """
    config = ServerConfig(simulate=False, token=token, keep_closed_connections=True)
    return open_dxlink_server(config=config, market=pinned_market(), in_memory=in_memory)


@pytest.fixture
async def server() -> AsyncIterator[DXLinkServer]:
    """A scripted server (:func:`scripted_server`) on 127.0.0.1, no token."""
    async with scripted_server() as srv:
        yield srv


@pytest.fixture
async def loopback_server() -> AsyncIterator[DXLinkServer]:
    """:func:`server` under a name a module that reaches its ``server`` in memory can still use,
    for its real-loopback tests."""
    async with scripted_server() as srv:
        yield srv


@pytest.fixture
async def token_server() -> AsyncIterator[DXLinkServer]:
    """A scripted server (:func:`scripted_server`) on 127.0.0.1 that requires the token
    ``"secret"``."""
    async with scripted_server(token="secret") as srv:
        yield srv


def task_count() -> int:
    """How many of the client's tasks exist now (the server's are not counted).

    Every task the client starts descends from a task of ``trio_dxlink._client``; after an
    ``open_dxlink`` block has exited there must be none.
    """
    stack = [trio.lowlevel.current_root_task()]
    seen = 0
    while stack:
        task = stack.pop()
        if "trio_dxlink._client" in task.name:
            seen += 1
        for nursery in task.child_nurseries:
            stack.extend(nursery.child_tasks)
    return seen


def _tcp_sockets() -> list[Any]:
    process = psutil.Process()
    # psutil renamed connections() to net_connections() in 6.0
    list_them = getattr(process, "net_connections", None) or process.connections
    sockets: list[Any] = list_them(kind="tcp")
    return sockets


class SocketCheck:
    """This process's TCP sockets: which are open now, and which were opened since the check
    began and are still open (leaked)."""

    def __init__(self) -> None:
        self._before = {_identity(s) for s in _tcp_sockets()}

    def connected_to(self, port: int) -> list[Any]:
        """The open sockets whose peer is ``port`` on this host (a client's ends)."""
        return [s for s in _tcp_sockets() if s.raddr and s.raddr.port == port]

    def leaked(self) -> list[Any]:
        """Sockets opened since the check began that are still open."""
        return [s for s in _tcp_sockets() if _identity(s) not in self._before]


def _identity(sock: Any) -> tuple[Any, ...]:
    return (sock.fd, sock.laddr, sock.raddr)


@pytest.fixture
def sockets() -> Iterator[SocketCheck]:
    """Fail the test if it leaves TCP sockets open.

    The cyclic garbage collector is off for the duration, so a socket that only it would close
    (a stream kept alive by a reference cycle) counts as leaked. Tests can also assert on
    :meth:`SocketCheck.connected_to` while their server is still up.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        check = SocketCheck()
        yield check
        assert check.leaked() == []
    finally:
        if enabled:
            gc.enable()


CLI = [sys.executable, "-m", "trio_dxlink"]
"""The command line as a real subprocess: for what only a process shows (the entry point, exit
status from ``sys.exit``, signals, a pseudo-terminal). Each start costs about half a second of
imports, so argument checks and output formats run in-process (:func:`run_main`)."""


@attrs.frozen
class MainResult:
    """What :func:`run_main` saw: the exit status and everything written to stdout and stderr."""

    returncode: int
    stdout: str
    stderr: str


def run_main(*args: str) -> MainResult:
    """Run the command line's ``main(args)`` in this process, as ``python -m trio_dxlink ARGS``
    would: stdout and stderr captured (neither is a terminal), log records at WARNING and above
    written to the captured stderr (``main``'s ``logging.basicConfig`` adds nothing while pytest's
    handlers are installed), argparse's ``SystemExit`` turned into the exit status.

    ``main`` calls ``trio.run``: call this from a synchronous test, or from a trio test through
    ``trio.to_thread.run_sync`` (one at a time: stdout and stderr are this process's).
    """
    from trio_dxlink.__main__ import main

    stdout = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", write_through=True)
    stderr = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", write_through=True)
    handler = logging.StreamHandler(stderr)
    handler.setLevel(logging.WARNING)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            try:
                status = main(list(args))
            except SystemExit as exit:
                code = exit.code
                status = code if isinstance(code, int) else (0 if code is None else 1)
    finally:
        root.removeHandler(handler)
    stdout.flush()
    stderr.flush()
    return MainResult(
        status,
        stdout.buffer.getvalue().decode(),  # type: ignore[attr-defined]
        stderr.buffer.getvalue().decode(),  # type: ignore[attr-defined]
    )


async def start_serve(nursery: trio.Nursery, *flags: str) -> tuple[trio.Process, str]:
    """Start ``trio-dxlink serve --port 0 FLAGS`` in ``nursery``; return it and its URL.

    The URL is read from the first line the command prints (``listening on ws://...``).
    """
    run = functools.partial(trio.run_process, stdout=subprocess.PIPE, check=False)
    process: trio.Process = await nursery.start(run, [*CLI, "serve", "--port", "0", *flags])
    assert process.stdout is not None
    buffer = b""
    with trio.fail_after(30):
        while b"\n" not in buffer:
            chunk = await process.stdout.receive_some()
            assert chunk, "serve exited before printing its URL"
            buffer += chunk
    first = buffer.split(b"\n", 1)[0].decode()
    assert first.startswith("listening on ws://127.0.0.1:")
    return process, first.removeprefix("listening on ")


FAST = ReconnectPolicy(initial_delay=0.01, max_delay=0.05, jitter=0.0)
"""Reconnects at once, for tests that drop connections."""


async def until(server: DXLinkServer, predicate: object) -> None:
    """Wait (at most 10 s) until ``predicate()`` holds after a change on ``server``."""
    with trio.fail_after(10):
        await server.wait_for(predicate)  # type: ignore[arg-type]


class Session:
    """A stand-in for a tastytrade session: hands out the given tokens in turn (the last one
    forever), counts the calls."""

    def __init__(self, url: str, tokens: list[str]) -> None:
        self.url = url
        self.tokens = tokens
        self.calls = 0

    async def get_token(self) -> Token:
        await trio.lowlevel.checkpoint()
        token = self.tokens[min(self.calls, len(self.tokens) - 1)]
        self.calls += 1
        return Token(token, self.url)
