"""``open_dxlink``: check the arguments, run a :class:`~trio_dxlink.DXLinkFeed` in a nursery of
its own for the duration of the block, and collapse what the nursery raises into one exception."""

from __future__ import annotations

import math
import os
import random
import ssl
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import attrs
import trio

from . import _connection as c
from ._arguments import require_positive, token_source_for
from ._client import DEFAULT_MAX_HISTORY_REQUESTS, DXLinkFeed
from ._reconnect import ReconnectPolicy
from ._record import Recorder, recording_for
from ._runner import ConnectionSettings
from ._tokens import LegacyTokenSource, TokenSource
from ._transport import Connector, websocket_connector
from ._util import raise_single

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup

__all__ = ["connection_settings", "open_dxlink", "run_block"]

_CLOSE_GRACE = 2.0
"""Seconds a leaving ``open_dxlink`` block gives the WebSocket close handshake."""


def connection_settings(
    *,
    connector: Connector | None,
    ssl_context: ssl.SSLContext | None,
    keepalive_timeout: float,
    keepalive_interval: float,
    handshake_timeout: float,
    aggregation_period: float | None,
    subscription_budget: int,
    token_refresh_margin: float,
) -> ConnectionSettings:
    """Check :func:`open_dxlink`'s connection arguments (also the pool's) and bundle them."""
    if connector is not None and ssl_context is not None:
        raise TypeError("pass ssl_context= to the connector, not to open_dxlink, with connector=")
    require_positive(
        keepalive_timeout=keepalive_timeout,
        keepalive_interval=keepalive_interval,
        handshake_timeout=handshake_timeout,
    )
    return ConnectionSettings(
        connector=connector or websocket_connector(ssl_context=ssl_context),
        keepalive_timeout=keepalive_timeout,
        keepalive_interval=keepalive_interval,
        handshake_timeout=handshake_timeout,
        aggregation_period=aggregation_period,
        subscription_budget=subscription_budget,
        token_refresh_margin=token_refresh_margin,
    )


@asynccontextmanager
async def open_dxlink(
    target: str | TokenSource | LegacyTokenSource,
    token: str | None = None,
    *,
    reconnect: ReconnectPolicy | None = None,
    keepalive_timeout: float = 60.0,
    keepalive_interval: float = 30.0,
    handshake_timeout: float = 30.0,
    aggregation_period: float | None = None,
    subscription_budget: int = c.DEFAULT_SUBSCRIPTION_BUDGET,
    token_refresh_margin: float = 300.0,
    connector: Connector | None = None,
    ssl_context: ssl.SSLContext | None = None,
    rng: random.Random | None = None,
    max_history_requests: int = DEFAULT_MAX_HISTORY_REQUESTS,
    record: str | os.PathLike[str] | Recorder | None = None,
) -> AsyncIterator[DXLinkFeed]:
    """Connect to a DXLink server and keep the connection up for the duration of the block.

    ``target`` is either a ``ws://`` / ``wss://`` URL (with ``token``, if the server needs one)
    or a :class:`TokenSource` such as a tastytrade session, asked for a fresh token and URL
    before every connection. (An object with only the deprecated ``get_quote_token`` method is
    accepted too, with a :class:`DeprecationWarning`.)

    The block is entered once the server has authorized the connection. A rejected token raises
    :class:`AuthenticationError`; an unreachable server :class:`ConnectError`. A connection lost
    later is re-established according to ``reconnect`` (default: forever, with backoff), every
    subscription replayed; when the policy gives up, :class:`GaveUpError` (its ``__cause__`` the
    last failure) is raised from the block. Leaving the block closes everything.

    Args:
        keepalive_timeout: seconds of server silence after which the link counts as dead
            (advertised to the server in SETUP).
        keepalive_interval: the longest the client stays silent (at most half the server's
            keepalive timeout).
        handshake_timeout: how long the SETUP/AUTH exchange may take.
        aggregation_period: ``acceptAggregationPeriod`` for FEED_SETUP (``None``: server default).
        subscription_budget: the byte budget of each FEED_SUBSCRIPTION frame.
        token_refresh_margin: renew a token this many seconds before its ``expires_at``.
        connector: how to open the WebSocket (default: trio-websocket, 64 MiB messages).
        ssl_context: the TLS settings for ``wss://`` URLs (default: trust the system's CAs),
            e.g. to trust a private CA. Give it to the connector instead when passing
            ``connector=``: both together are a ``TypeError``.
        max_history_requests: how many requests that need a snapshot (:meth:`~DXLinkFeed.
            history`, :meth:`~DXLinkFeed.time_series`, ``subscribe(from_time=...)``) may wait
            for it at once; the rest queue (tastytrade refuses more than about 20).
        record: write every frame of the session, both ways, to this file (a path: NDJSON,
            zstd-compressed if it ends in ``.zst``; tokens redacted), or to a
            :class:`~trio_dxlink.Recorder` from :func:`~trio_dxlink.open_recorder`. See the
            "Record and replay" guide.
    """
    source = token_source_for(target, token)
    settings = connection_settings(
        connector=connector,
        ssl_context=ssl_context,
        keepalive_timeout=keepalive_timeout,
        keepalive_interval=keepalive_interval,
        handshake_timeout=handshake_timeout,
        aggregation_period=aggregation_period,
        subscription_budget=subscription_budget,
        token_refresh_margin=token_refresh_margin,
    )
    async with recording_for(record) as recorder:
        if recorder is not None:
            settings = attrs.evolve(settings, connector=recorder.connector(settings.connector))
        feed = DXLinkFeed(
            source,
            settings,
            reconnect or ReconnectPolicy(),
            rng=rng,
            max_history_requests=max_history_requests,
        )
        async with run_block(lambda nursery: nursery.start(feed._run), feed._shutdown, feed._close):
            yield feed


@asynccontextmanager
async def run_block(
    start: Callable[[trio.Nursery], Awaitable[object]],
    shutdown: Callable[[], Awaitable[None]],
    close: Callable[[], None],
) -> AsyncIterator[None]:
    """Host a feed (or a pool) in a nursery of its own for the duration of a block: ``start``
    its tasks, and on the way out ``shutdown`` politely (briefly, unless cancelled from
    outside), ``close``, and collapse what the nursery raises into one exception."""
    raised: list[BaseException] = []  # what the block itself raised, if anything
    try:
        async with trio.open_nursery() as nursery:
            await start(nursery)
            try:
                yield
            except BaseException as exc:
                if not isinstance(exc, trio.Cancelled):
                    raised.append(exc)
                raise
            finally:
                if trio.current_effective_deadline() != -math.inf:
                    # Not cancelled from outside: close the WebSocket politely, briefly.
                    with trio.CancelScope(shield=True), trio.move_on_after(_CLOSE_GRACE):
                        await shutdown()
                close()
                nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        raise_single(group, raised[0] if raised else None)
    finally:
        close()
