"""``open_dxlink`` and :class:`DXLinkFeed`: the feed a user holds, a thin trio driver.

One :class:`DXLinkFeed` lives inside one ``async with open_dxlink(...)`` block, and so does
every task it runs, in a nursery of its own. The feed's decisions live in pure modules; this
one wires them to trio:

* :class:`~trio_dxlink._desired.DesiredState` — which wire subscriptions exist, who holds them;
* :class:`~trio_dxlink._router.Router` — which handle gets which event; the latest values;
* :class:`~trio_dxlink._reconnect.Reconnector` — what to do after a connection fails;
* :func:`~trio_dxlink._runner.run_connection` — one connection's reader, writer, keepalive
  and token-renewer tasks.

The **connection loop** (:meth:`DXLinkFeed._run`) runs one connection after another, waiting
between them as the reconnect decision says. Each connection is told the whole desired state
when it starts, so a reconnect replays every subscription and handles simply see events
resume. Calls made while disconnected change the desired state and take effect on the next
connection.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import math
import random
import ssl
import sys
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import attrs
import trio

from . import _connection as c
from ._book import O
from ._desired import DesiredState
from ._exceptions import ChannelError, ConnectionClosedError, DXLinkError
from ._messages import SubscriptionEntry
from ._order_book import LiveOrderBook
from ._reconnect import NO_RECONNECT, GiveUp, Reconnector, ReconnectPolicy
from ._router import Router
from ._runner import ConnectionSettings, Live, run_connection
from ._subscription import DEFAULT_MAX_BUFFER, Overflow, Subscription
from ._tokens import FixedToken, LegacyTokenSource, Token, TokenSource, as_token_source
from ._transport import Connector, websocket_connector
from ._util import raise_single
from .events import Event, IndexedEvent, Order, TimeSeriesEvent, event_class

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup

__all__ = [
    "NO_RECONNECT",
    "DXLinkFeed",
    "FeedState",
    "FeedStatistics",
    "ReconnectPolicy",
    "Token",
    "TokenSource",
    "open_dxlink",
]

log = logging.getLogger("trio_dxlink")

E = TypeVar("E", bound=Event)

_CLOSE_GRACE = 2.0
"""Seconds a leaving ``open_dxlink`` block gives the WebSocket close handshake."""


class FeedState(enum.Enum):
    """Where a feed's connection is."""

    CONNECTING = "connecting"
    CONNECTED = "connected"
    RECONNECTING = "reconnecting"
    CLOSED = "closed"


@attrs.frozen
class FeedStatistics:
    """A snapshot of a feed's state and counters.

    Attributes:
        state: the connection state now.
        reason: why the last connection was lost (``None`` if it never was).
        reconnects: connections established after the first.
        connection_losses: connections lost.
        messages_received / events_received: totals over all connections.
        events_unrouted: events for symbols no handle wanted (counted, not delivered).
        malformed_messages: frames that were not valid JSON messages, or whose data was (partly)
            undecodable; what could be decoded was delivered, the rest skipped.
        events_skipped: COMPACT rows and FULL objects skipped because they could not be decoded.
        last_message_time: ``trio.current_time()`` of the last frame received, if any.
        subscriptions: wire subscriptions currently wanted.
    """

    state: FeedState
    reason: BaseException | None
    reconnects: int
    connection_losses: int
    messages_received: int
    events_received: int
    events_unrouted: int
    malformed_messages: int
    events_skipped: int
    last_message_time: float | None
    subscriptions: int


def _check_event_type(event_type: object) -> None:
    """``event_type`` must be an event class the codec knows (before any state changes)."""
    if not (isinstance(event_type, type) and issubclass(event_type, Event)):
        raise TypeError(f"event_type must be an event class, got {event_type!r}")
    name = getattr(event_type, "EVENT_TYPE", None)
    try:
        known = event_class(name) if isinstance(name, str) else None
    except KeyError:
        known = None
    if known is not event_type:
        raise TypeError(
            f"{event_type.__name__} is not a registered event type (a subclass of an event"
            " class is not one by itself; declare it with trio_dxlink.events.event_type)"
        )


class DXLinkFeed:
    """A live DXLink market-data feed; create it with :func:`open_dxlink`.

    Subscribe with :meth:`subscribe`, read single values with :meth:`get_event`, watch the
    connection with :attr:`state`, :meth:`wait_state` and :meth:`statistics`.
    """

    def __init__(
        self,
        source: TokenSource,
        settings: ConnectionSettings,
        policy: ReconnectPolicy,
        *,
        rng: random.Random | None = None,
    ) -> None:
        self._source = source
        self._settings = settings
        self._reconnector = Reconnector(policy, fixed_token=isinstance(source, FixedToken), rng=rng)
        self._live: Live | None = None
        self._state = FeedState.CONNECTING
        self._state_changed = trio.Event()
        self._reason: BaseException | None = None
        self._closed = False
        self._closing = False
        self._handles: dict[Subscription[Any], None] = {}
        self._desired = DesiredState()
        self._router = Router()
        # counters
        self._reconnects = 0
        self._losses = 0
        self._messages = 0
        self._malformed = 0  # by connections that have ended
        self._skipped = 0
        self._last_message: float | None = None

    def __repr__(self) -> str:
        return f"<DXLinkFeed {self._state.value} {len(self._handles)} subscriptions>"

    # --- public API ---

    def subscribe(
        self,
        event_type: type[E],
        symbols: Iterable[str],
        *,
        from_time: int | None = None,
        source: str | None = None,
        overflow: Overflow | None = None,
        max_buffer: int = DEFAULT_MAX_BUFFER,
        notify_gaps: bool = False,
    ) -> Subscription[E]:
        """A subscription handle for ``event_type`` events of ``symbols``; enter it to start.

        Args:
            event_type: the event class, e.g. :class:`~trio_dxlink.Quote`.
            symbols: dxFeed symbols (``"SPY"``, ``".SPY250117C500"``, ``"AAPL{=5m}"``, ``"*"``).
            from_time: for time-series events, request history from this epoch-millisecond
                time (a snapshot, then live updates).
            source: for order events, the order source (``"NTV"``).
            overflow: what to do when the consumer falls behind; default ``LATEST`` for
                non-indexed events and ``LOSSLESS`` for indexed ones.
            max_buffer: the bound on buffered events (default 25,000). A LATEST handle keeps one
                event per symbol, so it is bounded by its symbols; max_buffer then only caps
                what a wildcard ("*") handle collects.
            notify_gaps: raise :class:`~trio_dxlink.DataGapError` from the handle, once, where
                a lost connection may have left a gap in its events (it can be read on after).
        """
        _check_event_type(event_type)
        if from_time is not None and not issubclass(event_type, TimeSeriesEvent):
            raise ValueError(
                f"from_time is for time-series events (Candle, TimeAndSale, Greeks, ...),"
                f" not {event_type.__name__}"
            )
        if source is not None and (
            not issubclass(event_type, IndexedEvent) or issubclass(event_type, TimeSeriesEvent)
        ):
            raise ValueError(
                f"source is for order-book events (Order, SpreadOrder, ...),"
                f" not {event_type.__name__}"
            )
        if self._closed:
            raise ConnectionClosedError("the feed is closed")
        return Subscription(
            self,
            event_type,
            symbols,
            from_time=from_time,
            source=source,
            overflow=overflow,
            max_buffer=max_buffer,
            notify_gaps=notify_gaps,
        )

    def order_book(
        self,
        symbol: str,
        *,
        sources: Iterable[str],
        depth: int | None = 10,
        event_type: type[O] = Order,  # type: ignore[assignment]
        notify_gaps: bool = False,
    ) -> LiveOrderBook[O]:
        """A consistent order book of ``symbol`` from ``sources``; enter it to start.

        ``async with feed.order_book("AAPL", sources=["NTV"]) as book:`` then ``async for view
        in book`` (see :class:`~trio_dxlink.LiveOrderBook` and the order-books guide).

        Args:
            symbol: the symbol (not ``"*"``).
            sources: order sources (§7 syntax: ``NTV``, ``ntv``, ``GLBX``, ``AGGREGATE_BID``...).
            depth: price levels per side in each view (``None``: all).
            event_type: :class:`~trio_dxlink.Order` (default), :class:`~trio_dxlink.SpreadOrder`
                or :class:`~trio_dxlink.AnalyticOrder`.
            notify_gaps: raise :class:`~trio_dxlink.DataGapError` from the book, once per lost
                connection, before the views after it.

        Raises:
            TypeError / ValueError / SymbolError: a bad event type, symbol, source or depth.
            ConnectionClosedError: the feed is closed.
        """
        if self._closed:
            raise ConnectionClosedError("the feed is closed")
        return LiveOrderBook(
            self, event_type, symbol, sources=sources, depth=depth, notify_gaps=notify_gaps
        )

    async def get_event(self, event_type: type[E], symbol: str) -> E:
        """The latest known ``event_type`` event for ``symbol``, or the next one to arrive.

        Bound the wait with :func:`trio.move_on_after` / :func:`trio.fail_after`.
        """
        last = self._router.latest(event_type.EVENT_TYPE, symbol)
        if last is not None:
            await trio.lowlevel.checkpoint()
            return last  # type: ignore[return-value]
        async with self.subscribe(event_type, [symbol], overflow=Overflow.LATEST) as rx:
            return await rx.receive()

    @property
    def state(self) -> FeedState:
        """The connection state now."""
        return self._state

    async def wait_state(self, *states: FeedState) -> FeedState:
        """Wait until the feed is in one of ``states`` (returns at once if it already is)."""
        while self._state not in states:
            await self._state_changed.wait()
        await trio.lowlevel.checkpoint()
        return self._state

    def statistics(self) -> FeedStatistics:
        """A snapshot of the feed's counters."""
        return FeedStatistics(
            state=self._state,
            reason=self._reason,
            reconnects=self._reconnects,
            connection_losses=self._losses,
            messages_received=self._messages,
            events_received=self._router.events,
            events_unrouted=self._router.unrouted,
            malformed_messages=self._malformed
            + (self._live.core.statistics.malformed_messages if self._live else 0),
            events_skipped=self._skipped,
            last_message_time=self._last_message,
            subscriptions=len(self._desired),
        )

    # --- the handles' side (_subscription.SubscriptionHost, which documents each call; not
    # for users, so without docstrings: the API reference lists documented members only) ---

    def attach(self, handle: Subscription[Any]) -> None:
        if self._closed:
            raise ConnectionClosedError("the feed is closed")
        self._handles[handle] = None
        self._router.attach(handle)
        self.add_symbols(handle, handle.symbols)

    def detach(self, handle: Subscription[Any]) -> None:
        if self._handles.pop(handle, False) is not False:
            self.remove_symbols(handle, handle.symbols)
            self._router.detach(handle)

    def add_symbols(self, handle: Subscription[Any], symbols: Iterable[str]) -> None:
        if handle not in self._handles:
            return
        symbols = list(symbols)
        self._router.add(handle, symbols)
        name = handle.event_type.EVENT_TYPE
        added = self._desired.add(
            handle, name, symbols, from_time=handle.from_time, source=handle.source
        )
        live = self._live
        if added and live is not None and live.usable():
            live.subscribe(name, added)

    def remove_symbols(self, handle: Subscription[Any], symbols: Iterable[str]) -> None:
        symbols = list(symbols)
        self._router.remove(handle, symbols)
        name = handle.event_type.EVENT_TYPE
        removed = self._desired.remove(handle, name, symbols, source=handle.source)
        live = self._live
        if removed and live is not None and live.usable():
            live.unsubscribe(name, removed)

    # --- the connection runner's side (runner.Host) ---

    def replay(self) -> dict[str, list[SubscriptionEntry]]:
        return self._desired.replay()

    def closing(self) -> bool:
        return self._closing

    def connected(self, live: Live | None) -> None:
        if self._live is not None:  # its counts become history
            self._malformed += self._live.core.statistics.malformed_messages
        self._live = live

    def authorized(self) -> None:
        if self._reason is not None or self._losses:
            self._reconnects += 1
        self._set_state(FeedState.CONNECTED)

    def frame(self, now: float) -> None:
        self._messages += 1
        self._last_message = now

    def events(self, batch: c.FeedEvents) -> None:
        self._router.dispatch(batch.event_type, batch.events, batch.symbols)

    def skipped(self, live: Live, skipped: c.DataSkipped) -> None:
        self._skipped += skipped.events
        name = skipped.event_type
        if name is None and skipped.channel is not None:
            name = live.type_of.get(skipped.channel)
        if name is not None:
            for handle in self._router.handles(name):
                handle._mark_skipped(skipped.events, skipped.reason)

    def channel_failed(self, event_type: str, error: ChannelError) -> None:
        log.warning("%s; failing the %s subscriptions on it", error, event_type)
        for handle in self._router.handles(event_type):
            handle._fail(error)

    # --- the connection loop ---

    async def _run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        started = task_status
        while True:
            connected_once = self._reconnector.connected_once
            self._set_state(FeedState.RECONNECTING if connected_once else FeedState.CONNECTING)
            authorized_at: list[float] = []
            try:
                await run_connection(self, self._settings, self._source, started, authorized_at)
                raise ConnectionClosedError("the server ended the connection")
            except DXLinkError as exc:
                if self._closing:
                    await trio.sleep_forever()  # the block is being left: wait to be cancelled
                if authorized_at:
                    # The caller has been told we are up; the connection is lost.
                    started = trio.TASK_STATUS_IGNORED
                    self._losses += 1
                    for handle in self._handles:
                        handle._mark_gap()
                decision = self._reconnector.failed(
                    exc,
                    authorized_at=authorized_at[0] if authorized_at else None,
                    now=trio.current_time(),
                )
                if isinstance(decision, GiveUp):
                    raise decision.error  # noqa: B904 - the decision chained it already
                if decision.attempt:
                    self._reason = exc
                    log.warning("connection lost (%s); reconnect attempt %d", exc, decision.attempt)
                else:
                    log.warning("token rejected; fetching a fresh one and retrying once")
            if self._reconnector.connected_once:
                self._set_state(FeedState.RECONNECTING)
            await trio.sleep(decision.delay)

    def _set_state(self, state: FeedState) -> None:
        if state is not self._state:
            self._state = state
            self._state_changed.set()
            self._state_changed = trio.Event()

    async def _shutdown(self) -> None:
        """Close the live connection gracefully; the connection loop then ends quietly."""
        self._closing = True
        live = self._live
        if live is not None:
            with contextlib.suppress(DXLinkError):
                await live.transport.aclose()
        else:
            await trio.lowlevel.checkpoint()

    def _close(self) -> None:
        self._closed = True
        self._set_state(FeedState.CLOSED)
        error = ConnectionClosedError("the feed is closed")
        for handle in list(self._handles):
            handle._fail(error)


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
    """
    if connector is not None and ssl_context is not None:
        raise TypeError("pass ssl_context= to the connector, not to open_dxlink, with connector=")
    source: TokenSource | None
    if isinstance(target, str):
        if not target.startswith(("ws://", "wss://")):
            raise ValueError(f"DXLink URL must start with ws:// or wss://, got {target!r}")
        source = FixedToken(target, token)
    elif (source := as_token_source(target)) is not None:
        if token is not None:
            raise TypeError("token= is only for a URL target; a session supplies its own")
    else:
        raise TypeError(f"target must be a URL or a TokenSource, got {target!r}")
    for name, value in (
        ("keepalive_timeout", keepalive_timeout),
        ("keepalive_interval", keepalive_interval),
        ("handshake_timeout", handshake_timeout),
    ):
        if not value > 0:
            raise ValueError(f"{name} must be positive, got {value!r}")
    settings = ConnectionSettings(
        connector=connector or websocket_connector(ssl_context=ssl_context),
        keepalive_timeout=keepalive_timeout,
        keepalive_interval=keepalive_interval,
        handshake_timeout=handshake_timeout,
        aggregation_period=aggregation_period,
        subscription_budget=subscription_budget,
        token_refresh_margin=token_refresh_margin,
    )
    feed = DXLinkFeed(source, settings, reconnect or ReconnectPolicy(), rng=rng)
    raised: list[BaseException] = []  # what the block itself raised, if anything
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(feed._run)
            try:
                yield feed
            except BaseException as exc:
                if not isinstance(exc, trio.Cancelled):
                    raised.append(exc)
                raise
            finally:
                if trio.current_effective_deadline() != -math.inf:
                    # Not cancelled from outside: close the WebSocket politely, briefly.
                    with trio.CancelScope(shield=True), trio.move_on_after(_CLOSE_GRACE):
                        await feed._shutdown()
                feed._close()
                nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        raise_single(group, raised[0] if raised else None)
    finally:
        feed._close()
