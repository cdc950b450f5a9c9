"""Shared fixtures: the project's own DXLink server on 127.0.0.1, and task-leak checks."""

from __future__ import annotations

import functools
import subprocess
import sys
from collections.abc import AsyncIterator

import pytest
import trio

from trio_dxlink.testing import DXLinkServer, Market, ServerConfig, open_dxlink_server

NOW = 1_700_000_000.0


def pinned_market(seed: int = 0) -> Market:
    """A market whose wall clock is pinned, so its events are deterministic."""
    return Market(seed=seed, clock=lambda: NOW)


@pytest.fixture
async def server() -> AsyncIterator[DXLinkServer]:
    """A faithful local server (no token, no simulation): tests publish what they need.

    It keeps closed connections, so tests can inspect what a client sent after it has gone.
    """
    config = ServerConfig(keep_closed_connections=True)
    async with open_dxlink_server(config=config, market=pinned_market()) as srv:
        yield srv


@pytest.fixture
async def token_server() -> AsyncIterator[DXLinkServer]:
    """A local server that requires the token ``"secret"`` (and keeps closed connections)."""
    config = ServerConfig(token="secret", keep_closed_connections=True)
    async with open_dxlink_server(config=config, market=pinned_market()) as srv:
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


CLI = [sys.executable, "-m", "trio_dxlink"]


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
