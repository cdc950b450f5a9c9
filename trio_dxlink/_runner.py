"""One connection's tasks: the thin trio driver around the sans-I/O :class:`ClientConnection`.

:func:`run_connection` opens a transport, tells a fresh core everything the feed wants, and
runs four sibling tasks until the connection ends:

* the **reader** drains the socket continuously, feeds each frame to the core and hands what
  happened to the :class:`Host` in the same step (a synchronous hand-off that never blocks);
* the **writer** sends whatever the core queued;
* the **keepalive** task sleeps until the core's next deadline (sending KEEPALIVE, or declaring
  the link dead);
* the **renewer** asks the token source for a fresh token before the current one expires and
  sends AUTH again on the live connection.

The first task to fail cancels the others and its error is raised alone. While the block is
being left (``host.closing()``), a task that sees the connection end waits to be cancelled, so
the WebSocket close handshake can finish.
"""

from __future__ import annotations

import logging
import re
import sys
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import attrs
import trio

from . import _connection as c
from ._channel_key import ChannelKey
from ._connection import ClientConnection
from ._exceptions import (
    ChannelError,
    ConnectionClosedError,
    ServerError,
    SubscriptionRefusedError,
)
from ._lanes import LaneAction
from ._messages import SubscriptionEntry
from ._reconnect import TokenRejected
from ._tokens import Token, TokenSource, fetch_token, renewal_delay
from ._transport import Connector, Transport
from ._util import unwrap_group

if TYPE_CHECKING:
    from ._dom import DepthOfMarket

__all__ = ["ConnectionSettings", "Host", "Live", "is_subscription_refusal", "run_connection"]

log = logging.getLogger("trio_dxlink")


class Host(Protocol):
    """What a connection runner reports to, and asks of, the feed that runs it."""

    def replay(self) -> dict[ChannelKey, list[SubscriptionEntry]]:
        """Every subscription a fresh connection must ask for, by channel."""

    def replay_dom(self) -> list[DepthOfMarket]:
        """Every depth-of-market handle a fresh connection must open a DOM channel for."""

    def closing(self) -> bool:
        """Whether the feed's block is being left (the connection is closing on purpose)."""

    def connected(self, live: Live | None) -> None:
        """``live`` is the feed's connection now (``None``: the connection has ended).

        Set before the handshake: what the feed asks for from then on is sent on ``live``
        (queued until the channels open), since :meth:`replay` has already been told.
        """

    def authorized(self) -> None:
        """The live connection was authorized."""

    def frame(self, now: float) -> None:
        """A frame arrived (for the feed's counters)."""

    def events(self, batch: c.FeedEvents) -> None:
        """Decoded events to dispatch."""

    def skipped(self, live: Live, skipped: c.DataSkipped) -> None:
        """Malformed data was skipped."""

    def channel_failed(self, key: ChannelKey, error: ChannelError) -> None:
        """The channel ``key`` failed or was closed by the server."""

    def lane_failed(self, lane: int, error: ChannelError) -> None:
        """History lane ``lane``'s channel failed or was closed by the server."""

    def subscription_refused(self, live: Live, lane: int | None, error: ServerError) -> None:
        """The server refused a subscription (a limit), on history lane ``lane`` or elsewhere
        (``None``); the connection goes on."""


@attrs.frozen(kw_only=True)
class ConnectionSettings:
    """What every connection of a feed is configured with (see :func:`open_dxlink`)."""

    connector: Connector
    keepalive_timeout: float
    keepalive_interval: float
    handshake_timeout: float
    aggregation_period: float | None
    subscription_budget: int
    token_refresh_margin: float


class Live:
    """The per-connection state: the sans-I/O core, the FEED channel of each
    :class:`~trio_dxlink._channel_key.ChannelKey` and the depth-of-market handle of each DOM
    channel."""

    def __init__(self, core: ClientConnection, transport: Transport, settings: ConnectionSettings):
        self.core = core
        self.transport = transport
        self.settings = settings
        self.channel_of: dict[ChannelKey, int] = {}
        self.key_of: dict[int, ChannelKey] = {}
        self.lane_channels: dict[int, int] = {}  # history lane -> its channel
        self.lane_of: dict[int, int] = {}
        self.dom: dict[int, DepthOfMarket] = {}
        self.wakeup = trio.Event()
        self.rearm = trio.Event()

    def wake(self) -> None:
        self.wakeup.set()

    def usable(self) -> bool:
        return self.core.state not in (c.ConnectionState.CLOSED, c.ConnectionState.ERROR)

    def channel_for(self, key: ChannelKey) -> int:
        """The channel of ``key``, opened with its aggregation period when first needed."""
        cid = self.channel_of.get(key)
        if cid is None:
            period = key.aggregation_period
            if period is None:
                period = self.settings.aggregation_period
            cid = self.core.open_channel(accept_aggregation_period=period)
            self.channel_of[key] = cid
            self.key_of[cid] = key
        return cid

    def subscribe(self, key: ChannelKey, entries: list[SubscriptionEntry]) -> None:
        """Ask for ``entries`` on ``key``'s channel, with its field list (FEED_SETUP
        acceptEventFields), now (the feed calls this only while the connection is usable)."""
        fields: dict[str, Sequence[str]] | None = None
        if key.fields is not None:
            fields = {key.event_type: key.fields}
        self.core.subscribe(self.channel_for(key), entries, fields=fields)
        self.wake()

    def lane_channel(self, lane: int) -> int:
        """History lane ``lane``'s channel (a FEED channel with ``contract: "HISTORY"``),
        opened when first needed (again, if the server closed it)."""
        cid = self.lane_channels.get(lane)
        if cid is None:
            cid = self.core.open_channel(
                contract="HISTORY", accept_aggregation_period=self.settings.aggregation_period
            )
            self.lane_channels[lane] = cid
            self.lane_of[cid] = lane
        return cid

    def send_lanes(self, actions: list[LaneAction]) -> None:
        """Send history lane changes (the feed calls this only while the connection is usable)."""
        for lane, add, entry in actions:
            if add:
                self.core.subscribe(self.lane_channel(lane), [entry])
            elif (cid := self.lane_channels.get(lane)) is not None:
                self.core.unsubscribe(cid, [entry])
        if actions:
            self.wake()

    def open_dom(self, handle: DepthOfMarket) -> None:
        """Open a DOM channel for ``handle`` (requested once the connection is authorized)."""
        cid = self.core.open_dom_channel(
            handle.symbol,
            handle.sources,
            depth=handle.depth,
            aggregation_period=handle.aggregation_period,
        )
        self.dom[cid] = handle
        self.wake()

    def close_dom(self, handle: DepthOfMarket) -> None:
        """Cancel ``handle``'s DOM channel, if it has one here."""
        for cid, held in list(self.dom.items()):
            if held is handle:
                del self.dom[cid]
                self.core.close_channel(cid)
                self.wake()

    def unsubscribe(self, key: ChannelKey, entries: list[SubscriptionEntry]) -> None:
        cid = self.channel_of.get(key)
        if cid is not None:
            self.core.unsubscribe(cid, entries)
            self.wake()


_REFUSAL = re.compile(r"subscription.*too (big|many|large)|too many .*subscription", re.I | re.S)


def is_subscription_refusal(code: str, message: str) -> bool:
    """Whether a server ERROR refuses a subscription at a limit rather than fails a channel or
    the connection (reference §12: "the subscription size for event type 'Candle' is too
    big"); such an ERROR fails one request, never the connection."""
    return bool(_REFUSAL.search(message)) if isinstance(message, str) else False


async def run_connection(
    host: Host,
    settings: ConnectionSettings,
    source: TokenSource,
    task_status: trio.TaskStatus[None],
    authorized_at: list[float],
) -> None:
    """Fetch a token, connect, and run one connection until it ends (by raising).

    ``task_status.started()`` is called, and the time appended to ``authorized_at``, once the
    server has authorized the connection.
    """
    token = await fetch_token(source)
    with unwrap_group():  # the connector's own nursery must not wrap our error in a group
        await _run_on(host, settings, source, token, task_status, authorized_at)


async def _run_on(
    host: Host,
    settings: ConnectionSettings,
    source: TokenSource,
    token: Token,
    task_status: trio.TaskStatus[None],
    authorized_at: list[float],
) -> None:
    async with settings.connector(token.url) as transport:
        core = ClientConnection(
            token.token or None,
            keepalive_timeout=settings.keepalive_timeout,
            keepalive_interval=settings.keepalive_interval,
            subscription_budget=settings.subscription_budget,
        )
        live = Live(core, transport, settings)
        core.start(trio.current_time())
        for key, entries in host.replay().items():
            live.subscribe(key, entries)
        for handle in host.replay_dom():
            live.open_dom(handle)
        host.connected(live)
        try:
            await _run_tasks(
                host.closing,
                _writer(live),
                _keepalive(live),
                _reader(host, live, task_status, authorized_at),
                _renewer(live, source, token),
            )
        finally:
            host.connected(None)
            core.connection_closed()


async def _reader(
    host: Host, live: Live, task_status: trio.TaskStatus[None], authorized_at: list[float]
) -> None:
    core = live.core
    receive = live.transport.receive
    timeout = live.settings.handshake_timeout
    with trio.move_on_after(timeout) as handshake:
        while not core.authorized:
            _handle_frame(host, live, await receive())
    if handshake.cancelled_caught:
        raise ConnectionClosedError(
            f"the server did not complete the handshake within {timeout:g} s"
        )
    authorized_at.append(trio.current_time())
    host.authorized()
    task_status.started()
    while True:
        _handle_frame(host, live, await receive())


def _handle_frame(host: Host, live: Live, frame: str | bytes) -> None:
    now = trio.current_time()
    host.frame(now)
    for event in live.core.receive_message(frame, now):
        if isinstance(event, c.FeedEvents):
            host.events(event)
        elif isinstance(event, c.DomSnapshotReceived):
            handle = live.dom.get(event.channel)
            if handle is not None:
                handle._push(event.snapshot)
        elif isinstance(event, c.DomConfigChanged):
            handle = live.dom.get(event.channel)
            if handle is not None:
                handle._configured(event.config)
        elif isinstance(event, c.DataSkipped):
            host.skipped(live, event)
        elif isinstance(event, c.AuthRejected):
            if event.had_token:
                raise TokenRejected("the server rejected the token")
            raise TokenRejected("the server requires a token and none was given")
        elif isinstance(event, c.ServerErrorReceived):
            if is_subscription_refusal(event.code, event.message):
                refusal = SubscriptionRefusedError(event.code, event.message, event.channel)
                host.subscription_refused(live, live.lane_of.get(event.channel), refusal)
                continue
            if event.channel == 0:
                raise ServerError(event.code, event.message, 0)
            error = ChannelError(event.code, event.message, event.channel)
            _fail_channel(host, live, event.channel, error)
            if event.channel in live.core.channels or event.channel in live.core.dom_channels:
                live.core.close_channel(event.channel)
        elif isinstance(event, c.SetupReceived):
            live.rearm.set()  # the server's keepalive timeout may shorten our interval
        elif isinstance(event, c.ChannelClosed) and not event.requested:
            error = ChannelError("CHANNEL_CLOSED", "the server closed the channel", event.channel)
            _fail_channel(host, live, event.channel, error)
    if live.core.wants_to_send:
        live.wake()


def _fail_channel(host: Host, live: Live, channel: int, error: ChannelError) -> None:
    lane = live.lane_of.pop(channel, None)
    if lane is not None:
        del live.lane_channels[lane]
        host.lane_failed(lane, error)
    handle = live.dom.pop(channel, None)
    if handle is not None:
        log.warning("%s; failing the depth of market of %s on it", error, handle.symbol)
        handle._fail(error)
        return
    key = live.key_of.pop(channel, None)
    if key is not None:
        live.channel_of.pop(key, None)
        host.channel_failed(key, error)


async def _writer(live: Live) -> None:
    core = live.core
    send = live.transport.send
    while True:
        frames = core.data_to_send(trio.current_time())
        if frames:
            for frame in frames:
                await send(frame)
            continue
        live.wakeup = trio.Event()
        await live.wakeup.wait()


async def _keepalive(live: Live) -> None:
    core = live.core
    while True:
        live.rearm = trio.Event()
        with trio.move_on_at(core.next_deadline()):
            await live.rearm.wait()  # set when the deadlines change (server SETUP)
        core.handle_timers(trio.current_time())
        if core.wants_to_send:
            live.wake()


async def _renewer(live: Live, source: TokenSource, token: Token) -> None:
    margin = live.settings.token_refresh_margin
    while (delay := renewal_delay(token, time.time(), margin)) is not None:
        await trio.sleep(delay)
        fresh = await fetch_token(source)
        if fresh.expires_at is not None and fresh.expires_at <= (token.expires_at or 0):
            log.warning("the session returned a token that expires no later than the old one")
            await trio.sleep(max(1.0, margin / 2))
        token = fresh
        if live.usable() and live.core.authorized:
            live.core.reauthenticate(token.token)
            live.wake()
    await trio.sleep_forever()


async def _run_tasks(closing: Callable[[], bool], *coros: Any) -> None:
    """Run coroutines as sibling tasks; the first to fail cancels the rest and is raised alone.

    While ``closing()`` is true (the block is being left and the WebSocket close handshake is
    under way) a task that sees the connection end just waits to be cancelled, so the
    handshake can finish instead of being cut short.
    """
    async with trio.open_nursery() as nursery:
        failure: list[BaseException] = []

        async def guard(coro: Any) -> None:
            try:
                await coro
            except trio.Cancelled:
                raise
            except ConnectionClosedError:
                if closing():
                    await trio.sleep_forever()
                if not failure:
                    failure.append(sys.exc_info()[1])  # type: ignore[arg-type]
                nursery.cancel_scope.cancel()
            except BaseException as exc:
                if not failure:
                    failure.append(exc)
                nursery.cancel_scope.cancel()

        for coro in coros:
            nursery.start_soon(guard, coro)
    if failure:
        raise failure[0]
