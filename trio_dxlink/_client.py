"""``open_dxlink``: the trio I/O layer around the sans-I/O connection.

One :class:`DXLinkFeed` lives inside one ``async with open_dxlink(...)`` block, and so does
every task it runs, in a nursery of its own:

* the **connection loop** connects, runs one connection, and when that connection is lost
  reconnects with exponential backoff (jittered, capped, reset after a healthy connection);
* per connection, a **reader** drains the socket continuously, feeds each frame to the
  :class:`~trio_dxlink._connection.ClientConnection` and *dispatches* the decoded events to the
  subscription handles in the same step (a synchronous hand-off that never blocks), a
  **writer** sends whatever the connection queued, and a **keepalive** task sleeps until the
  connection's next deadline (sending KEEPALIVE, or declaring the link dead).

The feed owns the *desired* state (which handles want which symbols); each connection is told
all of it when it starts, so a reconnect replays every subscription and handles simply see
events resume. Calls made while disconnected change the desired state and take effect on the
next connection.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import math
import random
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from typing import Any, Protocol, TypeVar, runtime_checkable

import attrs
import trio

from . import _connection as c
from ._accel import speedups
from ._candle import normalize_candle_symbol
from ._connection import ClientConnection
from ._exceptions import (
    AuthenticationError,
    CertificateError,
    ChannelError,
    ConnectError,
    ConnectionClosedError,
    DXLinkError,
    GaveUpError,
    ServerError,
)
from ._messages import SubscriptionEntry
from ._subscription import DEFAULT_MAX_BUFFER, Overflow, Subscription
from ._transport import Connector, Transport, websocket_connector
from ._util import raise_single, unwrap_group
from .events import Candle, Event, IndexedEvent, TimeSeriesEvent

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup

__all__ = [
    "NO_RECONNECT",
    "DXLinkFeed",
    "FeedState",
    "FeedStatistics",
    "QuoteToken",
    "QuoteTokenSource",
    "ReconnectPolicy",
    "open_dxlink",
]

log = logging.getLogger("trio_dxlink")

E = TypeVar("E", bound=Event)

_CLOSE_GRACE = 2.0
"""Seconds a leaving ``open_dxlink`` block gives the WebSocket close handshake."""


def _py_route(
    table: dict[str, Any], latest: dict[str, Event], symbols: list[str], events: list[Event]
) -> list[Event] | None:
    """Record the latest event of each routed symbol; ``None`` if every symbol is routed,
    else the routed events. (``trio_dxlink._speedups.route`` does the same in one C pass.)"""
    if all(map(table.__contains__, symbols)):
        latest.update(zip(symbols, events, strict=True))
        return None
    kept = [(s, e) for s, e in zip(symbols, events, strict=True) if s in table]
    latest.update(kept)
    return [e for _, e in kept]


_Router = Callable[[dict[str, Any], dict[str, Event], list[str], list[Event]], list[Event] | None]
_route: _Router = _py_route if speedups is None else speedups.route


def _py_fan_out(
    table: dict[str, list[Any]], latest: dict[str, Event], symbols: list[str], events: list[Event]
) -> tuple[dict[Any, list[Event]], int]:
    """Each handle's share of a batch (in order), and how many events no handle wanted; records
    the latest event of each routed symbol. (``trio_dxlink._speedups.fan_out`` in C.)"""
    shares: dict[Any, list[Event]] = {}
    unrouted = 0
    for symbol, event in zip(symbols, events, strict=True):
        route = table.get(symbol)
        if route is None:
            unrouted += 1
            continue
        latest[symbol] = event
        for handle in route:
            share = shares.get(handle)
            if share is None:
                shares[handle] = [event]
            else:
                share.append(event)
    return shares, unrouted


_FanOut = Callable[
    [dict[str, list[Any]], dict[str, Event], list[str], list[Event]],
    tuple[dict[Any, list[Event]], int],
]
_fan_out: _FanOut = _py_fan_out if speedups is None else speedups.fan_out

FATAL_SERVER_ERRORS = frozenset({"UNSUPPORTED_PROTOCOL"})
"""Connection-level ERROR codes after which reconnecting is pointless."""

MAX_TOKEN_REJECTIONS = 3
"""Fresh tokens the server may reject in a row (each retried under the reconnect policy)
before the feed ends with :class:`AuthenticationError`."""


@attrs.frozen
class QuoteToken:
    """A DXLink token and where to use it.

    Attributes:
        token: the AUTH token (never shown in reprs or logs).
        url: the DXLink WebSocket URL this token is for.
        expires_at: when the token stops working, in epoch seconds, if known; the feed renews
            the token on a live connection before then.
    """

    token: str = attrs.field(repr=False)
    url: str
    expires_at: float | None = None


@runtime_checkable
class QuoteTokenSource(Protocol):
    """Anything that can hand out DXLink tokens: a tastytrade session, for example.

    ``get_quote_token`` is called before every connection attempt and before a token expires. It
    returns a :class:`QuoteToken` or a ``(token, url)`` pair.
    """

    async def get_quote_token(self) -> QuoteToken | tuple[str, str]:
        """A current token and the DXLink URL to use it on."""


@attrs.frozen
class _FixedToken:
    url: str
    token: str | None = attrs.field(repr=False)

    async def get_quote_token(self) -> QuoteToken | tuple[str, str]:
        await trio.lowlevel.checkpoint()
        return QuoteToken(self.token or "", self.url)


@attrs.frozen
class ReconnectPolicy:
    """How the feed reconnects after losing a connection.

    The first connection is not retried: a wrong URL, an unreachable server or a rejected token
    fail the ``async with`` at once. After a connection has been established, losing it starts
    reconnect attempts with delays ``initial_delay * multiplier**(n-1)``, capped at
    ``max_delay``, each randomised by ``±jitter`` (a fraction). A connection that stayed up for
    ``healthy_after`` seconds resets the count.

    Attributes:
        max_attempts: give up after this many failed attempts in a row (``None``: never; ``0``:
            do not reconnect at all).
        give_up_after: give up when this many seconds have passed since the connection was lost
            (``None``: no limit).
    """

    max_attempts: int | None = None
    give_up_after: float | None = None
    initial_delay: float = 0.5
    max_delay: float = 30.0
    multiplier: float = 2.0
    jitter: float = 0.2
    healthy_after: float = 30.0

    def delay(self, attempt: int, rng: random.Random) -> float:
        """The pause before reconnect attempt ``attempt`` (1-based)."""
        base = min(self.max_delay, self.initial_delay * self.multiplier ** max(0, attempt - 1))
        return max(0.0, base * (1 + self.jitter * (2 * rng.random() - 1)))


NO_RECONNECT = ReconnectPolicy(max_attempts=0)
"""A policy that never reconnects: the first lost connection ends the feed with its error."""


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


class _TokenRejected(AuthenticationError):
    pass


def _cannot_heal(exc: DXLinkError) -> bool:
    """Whether reconnecting is pointless after ``exc`` (a rejected token is handled apart)."""
    if isinstance(exc, ServerError):
        return exc.code in FATAL_SERVER_ERRORS
    return isinstance(exc, (AuthenticationError, CertificateError))


class _Live:
    """The per-connection state: the sans-I/O core and the channel of each event type."""

    def __init__(self, core: ClientConnection, transport: Transport) -> None:
        self.core = core
        self.transport = transport
        self.channel_of: dict[str, int] = {}
        self.type_of: dict[int, str] = {}
        self.wakeup = trio.Event()
        self.rearm = trio.Event()
        self.malformed = 0  # the core's malformed-message count already added to the feed's

    def wake(self) -> None:
        self.wakeup.set()

    def usable(self) -> bool:
        return self.core.state not in (c.ConnectionState.CLOSED, c.ConnectionState.ERROR)

    def channel_for(self, event_type: str, aggregation_period: float | None) -> int:
        cid = self.channel_of.get(event_type)
        if cid is None:
            cid = self.core.open_channel(accept_aggregation_period=aggregation_period)
            self.channel_of[event_type] = cid
            self.type_of[cid] = event_type
        return cid


class DXLinkFeed:
    """A live DXLink market-data feed; create it with :func:`open_dxlink`.

    Subscribe with :meth:`subscribe`, read single values with :meth:`get_event`, watch the
    connection with :attr:`state`, :meth:`wait_state` and :meth:`statistics`.
    """

    def __init__(
        self,
        source: QuoteTokenSource,
        *,
        connector: Connector,
        reconnect: ReconnectPolicy,
        keepalive_timeout: float,
        keepalive_interval: float,
        handshake_timeout: float,
        aggregation_period: float | None,
        subscription_budget: int,
        token_refresh_margin: float,
        rng: random.Random | None = None,
    ) -> None:
        self._source = source
        self._connector = connector
        self._policy = reconnect
        self._keepalive_timeout = keepalive_timeout
        self._keepalive_interval = keepalive_interval
        self._handshake_timeout = handshake_timeout
        self._aggregation_period = aggregation_period
        self._subscription_budget = subscription_budget
        self._token_refresh_margin = token_refresh_margin
        self._rng = rng or random.Random()
        self._live: _Live | None = None
        self._state = FeedState.CONNECTING
        self._state_changed = trio.Event()
        self._reason: BaseException | None = None
        self._closed = False
        self._closing = False
        # desired state
        self._handles: dict[Subscription[Any], None] = {}
        self._wire: dict[tuple[str, str, str | None], dict[Subscription[Any], None]] = {}
        self._entries: dict[tuple[str, str, str | None], SubscriptionEntry] = {}
        # per event type: symbol (as the server spells it) -> the handles it goes to
        self._routes: dict[str, dict[str, list[Subscription[Any]]]] = {}
        self._handles_of: dict[str, dict[Subscription[Any], None]] = {}
        self._latest: dict[str, dict[str, Event]] = {}  # last event per routed symbol
        # counters
        self._reconnects = 0
        self._losses = 0
        self._messages = 0
        self._events = 0
        self._unrouted = 0
        self._malformed = 0
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
        if not (isinstance(event_type, type) and issubclass(event_type, Event)):
            raise TypeError(f"event_type must be an event class, got {event_type!r}")
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

    async def get_event(self, event_type: type[E], symbol: str) -> E:
        """The latest known ``event_type`` event for ``symbol``, or the next one to arrive.

        Bound the wait with :func:`trio.move_on_after` / :func:`trio.fail_after`.
        """
        last = self._latest.get(event_type.EVENT_TYPE, {}).get(symbol)
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
            events_received=self._events,
            events_unrouted=self._unrouted,
            malformed_messages=self._malformed,
            events_skipped=self._skipped,
            last_message_time=self._last_message,
            subscriptions=len(self._wire),
        )

    # --- desired state, called by Subscription (synchronous, never blocks) ---

    def _attach(self, handle: Subscription[Any]) -> None:
        if self._closed:
            raise ConnectionClosedError("the feed is closed")
        self._handles[handle] = None
        self._handles_of.setdefault(handle.event_type.EVENT_TYPE, {})[handle] = None
        self._add_symbols(handle, handle.symbols)

    def _detach(self, handle: Subscription[Any]) -> None:
        if self._handles.pop(handle, False) is not False:
            self._handles_of[handle.event_type.EVENT_TYPE].pop(handle, None)
            self._remove_symbols(handle, handle.symbols)

    def _detach_failed(self, handle: Subscription[Any]) -> None:
        self._detach(handle)

    def _add_symbols(self, handle: Subscription[Any], symbols: Iterable[str]) -> None:
        if handle not in self._handles:
            return
        name = handle.event_type.EVENT_TYPE
        table = self._routes.setdefault(name, {})
        added = []
        for symbol in symbols:
            for alias in self._aliases(handle.event_type, symbol):
                route = table.get(alias)
                if route is None:
                    route = table[alias] = []
                if handle not in route:
                    route.append(handle)
            key = (name, symbol, handle.source)
            holders = self._wire.setdefault(key, {})
            holders[handle] = None
            entry = SubscriptionEntry(name, symbol, handle.from_time, handle.source)
            if self._entries.get(key) != entry and (
                len(holders) == 1 or handle.from_time is not None
            ):
                self._entries[key] = entry
                added.append(entry)
        if added:
            self._send_add(name, added)

    def _remove_symbols(self, handle: Subscription[Any], symbols: Iterable[str]) -> None:
        name = handle.event_type.EVENT_TYPE
        table = self._routes.get(name, {})
        symbols = list(symbols)
        # Two spellings of one candle symbol share a route: keep the handle on the routes that
        # a symbol it still has maps to.
        kept: set[str] = set()
        if issubclass(handle.event_type, Candle):
            for symbol in handle.symbols - set(symbols):
                kept.update(self._aliases(handle.event_type, symbol))
        removed = []
        for symbol in symbols:
            for alias in self._aliases(handle.event_type, symbol):
                if alias in kept:
                    continue
                route = table.get(alias)
                if route is not None and handle in route:
                    route.remove(handle)
                    if not route:
                        del table[alias]
                        self._latest.get(name, {}).pop(alias, None)
            key = (name, symbol, handle.source)
            holders = self._wire.get(key)
            if holders is None or handle not in holders:
                continue
            del holders[handle]
            if not holders:
                del self._wire[key]
                removed.append(self._entries.pop(key))
        if removed:
            self._send_remove(name, removed)

    @staticmethod
    def _aliases(event_type: type[Event], symbol: str) -> list[str]:
        if issubclass(event_type, Candle):
            try:
                normal = normalize_candle_symbol(symbol)
            except ValueError:
                return [symbol]
            return [symbol] if normal == symbol else [symbol, normal]
        return [symbol]

    def _send_add(self, name: str, entries: list[SubscriptionEntry]) -> None:
        live = self._live
        if live is None or not live.usable():
            return  # replayed by the next connection
        cid = live.channel_for(name, self._aggregation_period)
        live.core.subscribe(cid, entries)
        live.wake()

    def _send_remove(self, name: str, entries: list[SubscriptionEntry]) -> None:
        live = self._live
        if live is None or not live.usable():
            return
        cid = live.channel_of.get(name)
        if cid is not None:
            live.core.unsubscribe(cid, entries)
            live.wake()

    # --- dispatch ---

    def _dispatch(self, batch: c.FeedEvents) -> None:
        """Hand each handle its share of one decoded batch (synchronous; never blocks)."""
        events = batch.events
        name = batch.event_type.EVENT_TYPE
        self._events += len(events)
        table = self._routes.get(name)
        if not table:
            self._unrouted += len(events)
            return
        latest = self._latest.setdefault(name, {})
        handles = self._handles_of[name]
        if "*" not in table and all(h.source is None for h in handles):
            if len(handles) == 1:
                # The common case, one handle for the type: no per-event routing at all.
                (handle,) = handles
                kept = _route(table, latest, batch.symbols, events)
                if kept is None:
                    handle._push(events, batch.symbols)
                else:
                    self._unrouted += len(events) - len(kept)
                    if kept:
                        handle._push(kept)
            else:
                shares, unrouted = _fan_out(table, latest, batch.symbols, events)
                self._unrouted += unrouted
                for handle, share in shares.items():
                    handle._push(share)
            return
        self._route_each(table, latest, events)

    def _route_each(
        self,
        table: dict[str, list[Subscription[Any]]],
        latest: dict[str, Event],
        events: list[Event],
    ) -> None:
        # The general case: wildcard handles, or handles filtering by order source.
        wild = table.get("*")
        per_handle: dict[Subscription[Any], list[Event]] = {}
        unrouted = 0
        for event in events:
            route = table.get(event.event_symbol)
            if route is None:
                if wild is None:
                    unrouted += 1
                    continue
                route = wild
            else:
                latest[event.event_symbol] = event
            for handle in route:
                if handle.source is not None and getattr(event, "source", None) != handle.source:
                    continue
                bucket = per_handle.get(handle)
                if bucket is None:
                    per_handle[handle] = [event]
                else:
                    bucket.append(event)
            if wild is not None and route is not wild:
                for handle in wild:  # wildcard handles see every symbol
                    if handle not in route:
                        per_handle.setdefault(handle, []).append(event)
        self._unrouted += unrouted
        for handle, bucket in per_handle.items():
            handle._push(bucket)

    def _fail_channel(self, live: _Live, channel: int, error: ChannelError) -> None:
        name = live.type_of.pop(channel, None)
        if name is None:
            return
        live.channel_of.pop(name, None)
        log.warning("%s; failing the %s subscriptions on it", error, name)
        for handle in [h for h in self._handles if name == h.event_type.EVENT_TYPE]:
            handle._fail(error)

    # --- the connection loop ---

    async def _run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        policy = self._policy
        attempt = 0
        lost_at: float | None = None
        connected_once = False
        rejected = 0  # tokens rejected in a row
        started = task_status
        while True:
            self._set_state(FeedState.RECONNECTING if connected_once else FeedState.CONNECTING)
            connected_at: list[float] = []
            try:
                await self._connect_once(started, connected_at)
                raise ConnectionClosedError("the server ended the connection")
            except DXLinkError as exc:
                if self._closing:
                    await trio.sleep_forever()  # the block is being left: wait to be cancelled
                cause: DXLinkError = exc
                if connected_at:
                    # This connection was authorized: the caller has been told we are up.
                    connected_once = True
                    started = trio.TASK_STATUS_IGNORED
                    rejected = 0
                if isinstance(exc, _TokenRejected):
                    rejected += 1
                    if isinstance(self._source, _FixedToken):
                        raise AuthenticationError(str(exc)) from None
                    if rejected > (MAX_TOKEN_REJECTIONS if connected_once else 1):
                        raise AuthenticationError(
                            f"{exc}: the session's last {rejected} tokens were all rejected"
                        ) from None
                    if not connected_once:
                        # First contact: one fresh token from the session, at once.
                        log.warning("token rejected; fetching a fresh one and retrying once")
                        continue
                elif not connected_once or _cannot_heal(exc):
                    raise
            now = trio.current_time()
            if connected_at:
                self._losses += 1
                if now - connected_at[0] >= policy.healthy_after:
                    attempt = 0
                lost_at = now
                for handle in self._handles:
                    handle._mark_gap()
            self._reason = cause
            attempt += 1
            log.warning("connection lost (%s); reconnect attempt %d", cause, attempt)
            if policy.max_attempts == 0:
                raise cause  # reconnecting is off: the failure itself is the answer
            if policy.max_attempts is not None and attempt > policy.max_attempts:
                raise GaveUpError(
                    f"gave up after {attempt - 1} reconnect attempts: {cause}"
                ) from cause
            delay = policy.delay(attempt, self._rng)
            if policy.give_up_after is not None and lost_at is not None:
                remaining = lost_at + policy.give_up_after - now
                if remaining <= delay:
                    raise GaveUpError(
                        f"gave up reconnecting after {policy.give_up_after:g} s: {cause}"
                    ) from cause
            self._set_state(FeedState.RECONNECTING)
            await trio.sleep(delay)

    async def _connect_once(
        self, task_status: trio.TaskStatus[None], connected_at: list[float]
    ) -> None:
        token = await self._fetch_token()
        with unwrap_group():
            await self._connection(token, task_status, connected_at)

    async def _connection(
        self, token: QuoteToken, task_status: trio.TaskStatus[None], connected_at: list[float]
    ) -> None:
        async with self._connector(token.url) as transport:
            core = ClientConnection(
                token.token or None,
                keepalive_timeout=self._keepalive_timeout,
                keepalive_interval=self._keepalive_interval,
                subscription_budget=self._subscription_budget,
            )
            live = _Live(core, transport)
            core.start(trio.current_time())
            self._replay(live)
            self._live = live
            try:
                await _run_tasks(
                    lambda: self._closing,
                    self._writer(live),
                    self._keepalive(live),
                    self._reader(live, task_status, connected_at),
                    self._token_renewer(live, token),
                )
            finally:
                self._live = None
                core.connection_closed()

    def _replay(self, live: _Live) -> None:
        by_type: dict[str, list[SubscriptionEntry]] = {}
        for entry in self._entries.values():
            by_type.setdefault(entry.type, []).append(entry)
        for name, entries in by_type.items():
            live.core.subscribe(live.channel_for(name, self._aggregation_period), entries)

    async def _reader(
        self, live: _Live, task_status: trio.TaskStatus[None], connected_at: list[float]
    ) -> None:
        core = live.core
        receive = live.transport.receive
        with trio.move_on_after(self._handshake_timeout) as handshake:
            while not core.authorized:
                self._handle_frame(live, await receive())
        if handshake.cancelled_caught:
            raise ConnectionClosedError(
                f"the server did not complete the handshake within {self._handshake_timeout:g} s"
            )
        connected_at.append(trio.current_time())
        if self._reason is not None or self._losses:
            self._reconnects += 1
        self._set_state(FeedState.CONNECTED)
        task_status.started()
        while True:
            self._handle_frame(live, await receive())

    def _handle_frame(self, live: _Live, frame: str | bytes) -> None:
        now = trio.current_time()
        self._messages += 1
        self._last_message = now
        for event in live.core.receive_message(frame, now):
            if isinstance(event, c.FeedEvents):
                self._dispatch(event)
            elif isinstance(event, c.AuthRejected):
                if event.had_token:
                    raise _TokenRejected("the server rejected the token")
                raise _TokenRejected("the server requires a token and none was given")
            elif isinstance(event, c.ServerErrorReceived):
                if event.channel == 0:
                    raise ServerError(event.code, event.message, 0)
                error = ChannelError(event.code, event.message, event.channel)
                self._fail_channel(live, event.channel, error)
                if event.channel in live.core.channels:
                    live.core.close_channel(event.channel)
            elif isinstance(event, c.DataSkipped):
                self._data_skipped(live, event)
            elif isinstance(event, c.SetupReceived):
                live.rearm.set()  # the server's keepalive timeout may shorten our interval
            elif isinstance(event, c.ChannelClosed) and not event.requested:
                error = ChannelError(
                    "CHANNEL_CLOSED", "the server closed the channel", event.channel
                )
                self._fail_channel(live, event.channel, error)
        if live.core.wants_to_send:
            live.wake()
        malformed = live.core.statistics.malformed_messages
        if malformed != live.malformed:
            self._malformed += malformed - live.malformed
            live.malformed = malformed

    def _data_skipped(self, live: _Live, skipped: c.DataSkipped) -> None:
        """Count skipped data; tell the handles of its type (known from the channel if need be)."""
        self._skipped += skipped.events
        name = skipped.event_type
        if name is None and skipped.channel is not None:
            name = live.type_of.get(skipped.channel)
        if name is None:
            return
        for handle in self._handles_of.get(name, ()):
            handle._mark_skipped(skipped.events, skipped.reason)

    async def _writer(self, live: _Live) -> None:
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

    async def _keepalive(self, live: _Live) -> None:
        core = live.core
        while True:
            live.rearm = trio.Event()
            with trio.move_on_at(core.next_deadline()):
                await live.rearm.wait()  # set when the deadlines change (server SETUP)
            core.handle_timers(trio.current_time())
            if core.wants_to_send:
                live.wake()

    async def _fetch_token(self) -> QuoteToken:
        """Ask the session for a token; its failures become retryable :class:`ConnectError`."""
        try:
            token = await self._source.get_quote_token()
        except (trio.Cancelled, DXLinkError):
            raise
        except Exception as exc:
            raise ConnectError(
                f"the session could not supply a token: {type(exc).__name__}: {exc}"
            ) from exc
        if isinstance(token, tuple) and len(token) == 2:
            token = QuoteToken(*token)
        if not (
            isinstance(token, QuoteToken)
            and isinstance(token.token, str)
            and isinstance(token.url, str)
            and token.url.startswith(("ws://", "wss://"))
        ):
            raise AuthenticationError(
                "get_quote_token() must return a QuoteToken or a (token, url) pair with a"
                f" ws:// or wss:// URL, not a {type(token).__name__}"
            )
        return token

    async def _token_renewer(self, live: _Live, token: QuoteToken) -> None:
        while token.expires_at is not None:
            wait = token.expires_at - time.time() - self._token_refresh_margin
            await trio.sleep(max(0.0, wait))
            fresh = await self._fetch_token()
            if fresh.expires_at is not None and fresh.expires_at <= (token.expires_at or 0):
                log.warning("the session returned a token that expires no later than the old one")
                await trio.sleep(max(1.0, self._token_refresh_margin / 2))
            token = fresh
            if live.usable() and live.core.authorized:
                live.core.reauthenticate(token.token)
                live.wake()
        await trio.sleep_forever()

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


@asynccontextmanager
async def open_dxlink(
    target: str | QuoteTokenSource,
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
    rng: random.Random | None = None,
) -> AsyncIterator[DXLinkFeed]:
    """Connect to a DXLink server and keep the connection up for the duration of the block.

    ``target`` is either a ``ws://`` / ``wss://`` URL (with ``token``, if the server needs one)
    or a :class:`QuoteTokenSource` such as a tastytrade session, asked for a fresh token and URL
    before every connection.

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
    """
    if isinstance(target, str):
        if not target.startswith(("ws://", "wss://")):
            raise ValueError(f"DXLink URL must start with ws:// or wss://, got {target!r}")
        source: QuoteTokenSource = _FixedToken(target, token)
    elif isinstance(target, QuoteTokenSource):
        if token is not None:
            raise TypeError("token= is only for a URL target; a session supplies its own")
        source = target
    else:
        raise TypeError(f"target must be a URL or a QuoteTokenSource, got {target!r}")
    feed = DXLinkFeed(
        source,
        connector=connector or websocket_connector(),
        reconnect=reconnect or ReconnectPolicy(),
        keepalive_timeout=keepalive_timeout,
        keepalive_interval=keepalive_interval,
        handshake_timeout=handshake_timeout,
        aggregation_period=aggregation_period,
        subscription_budget=subscription_budget,
        token_refresh_margin=token_refresh_margin,
        rng=rng,
    )
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
