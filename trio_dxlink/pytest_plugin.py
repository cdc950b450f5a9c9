"""pytest fixtures for testing code that uses trio_dxlink, against the local DXLink server.

Installed with trio_dxlink and registered through the ``pytest11`` entry point, so a project
that uses pytest-trio (``trio_mode = true``) gets these fixtures with no import:

* ``dxlink_server`` — a running :class:`~trio_dxlink.testing.DXLinkServer` with a pinned,
  seeded market. It listens on ``127.0.0.1`` (``dxlink_server.url``) for code that opens its
  own connections, and takes in-memory connections (``dxlink_server.connector()``);
* ``dxlink_feed`` — a :class:`~trio_dxlink.DXLinkFeed` connected to it in memory, so a test
  may use pytest-trio's ``autojump_clock`` (keepalives, backoff and your own timeouts then
  pass in virtual time);
* ``dxlink_server_config`` and ``dxlink_market`` — override them in a ``conftest.py`` to
  configure the server (a token, the simulated market, faults) or its market. Its market
  is scripted (``simulate=False``), unlike ``open_dxlink_server()``'s default.

For example::

    async def test_spread(dxlink_server, dxlink_feed):
        dxlink_server.publish(Quote("SPY", bid_price=10.0, ask_price=10.5))
        assert (await dxlink_feed.get_event(Quote, "SPY")).ask_price == 10.5
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from . import DXLinkFeed, open_dxlink
from .testing import DXLinkServer, Market, ServerConfig, open_dxlink_server

__all__ = ["dxlink_feed", "dxlink_market", "dxlink_server", "dxlink_server_config"]

PINNED_TIME = 1_700_000_000.0
"""The wall-clock time (epoch seconds) of ``dxlink_market``: its events are the same each run."""


@pytest.fixture
def dxlink_server_config() -> ServerConfig:
    """The ``ServerConfig`` of ``dxlink_server``: no token, and a scripted market
    (``simulate=False``: nothing is published unless the test publishes it, so what a test
    reads is what it published). Override this fixture to change it, e.g. to
    ``ServerConfig(simulate=True)`` for a moving market."""
    return ServerConfig(simulate=False)


@pytest.fixture
def dxlink_market() -> Market:
    """The market of ``dxlink_server``: seed 0, its clock pinned at :data:`PINNED_TIME`."""
    return Market(seed=0, clock=lambda: PINNED_TIME)


@pytest.fixture
async def dxlink_server(
    dxlink_server_config: ServerConfig, dxlink_market: Market
) -> AsyncIterator[DXLinkServer]:
    """A local DXLink server, running for the duration of the test."""
    async with open_dxlink_server(config=dxlink_server_config, market=dxlink_market) as server:
        yield server


@pytest.fixture
async def dxlink_feed(
    dxlink_server: DXLinkServer, dxlink_server_config: ServerConfig
) -> AsyncIterator[DXLinkFeed]:
    """A feed connected to ``dxlink_server`` in memory (with its token, if it has one)."""
    async with open_dxlink(
        dxlink_server.url, token=dxlink_server_config.token, connector=dxlink_server.connector()
    ) as feed:
        yield feed
