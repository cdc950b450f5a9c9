""":class:`DXLinkFeed`: the feed a user holds, a thin trio driver.

One :class:`DXLinkFeed` lives inside one ``async with open_dxlink(...)`` block (``_open.py``),
and so does every task it runs, in a nursery of its own. The feed's decisions live in pure
modules; this one wires them to trio:

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
import logging
import random
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, TypeVar

import trio

from . import _connection as c
from ._book import O
from ._channel_key import ChannelKey
from ._desired import DesiredState
from ._dom import DepthOfMarket, DomHandles
from ._dom_channel import DEFAULT_DEPTH
from ._exceptions import ChannelError, ConnectionClosedError, DXLinkError, ServerError
from ._feed_state import FeedState, FeedStatistics, check_subscription
from ._history import HandleLane, History, TimeSeries, fetch_history
from ._lanes import HistoryLanes, LaneRequest
from ._messages import SubscriptionEntry
from ._order_book import LiveOrderBook
from ._reads import LatestReads
from ._reconnect import NO_RECONNECT, GiveUp, Reconnector, ReconnectPolicy
from ._router import Router
from ._runner import ConnectionSettings, Live, run_connection
from ._subscription import DEFAULT_MAX_BUFFER, Overflow, Subscription
from ._tokens import FixedToken, Token, TokenSource
from .events import Event, Order, TimeSeriesEvent

if TYPE_CHECKING:
    import datetime as dt

__all__ = [
    "NO_RECONNECT",
    "DXLinkFeed",
    "FeedState",
    "FeedStatistics",
    "ReconnectPolicy",
    "Token",
    "TokenSource",
]

log = logging.getLogger("trio_dxlink")

E = TypeVar("E", bound=Event)
TS = TypeVar("TS", bound=TimeSeriesEvent)

DEFAULT_MAX_HISTORY_REQUESTS = 20
"""Requests that need a snapshot allowed in flight at once (tastytrade refuses about 20+)."""


class DXLinkFeed(LatestReads):
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
        max_history_requests: int = DEFAULT_MAX_HISTORY_REQUESTS,
        router: Router | None = None,
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
        self._router = Router() if router is None else router  # a pool shares one
        self._lanes = HistoryLanes(max_history_requests)
        self._lane_requests: dict[Subscription[Any], dict[str, LaneRequest]] = {}
        self._doms = DomHandles()
        # counters
        self._refusals = 0
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
        from_time: dt.datetime | int | None = None,
        source: str | None = None,
        overflow: Overflow | None = None,
        max_buffer: int = DEFAULT_MAX_BUFFER,
        notify_gaps: bool = False,
        fields: Iterable[str] | None = None,
        aggregation_period: float | None = None,
    ) -> Subscription[E]:
        """A subscription handle for ``event_type`` events of ``symbols``; enter it to start.

        Args:
            event_type: the event class, e.g. :class:`~trio_dxlink.Quote`.
            symbols: dxFeed symbols (``"SPY"``, ``".SPY270115C600"``, ``"AAPL{=5m}"``, ``"*"``).
            from_time: for time-series events, request history from this time (an aware
                ``datetime`` or epoch **milliseconds**; a number that can only be seconds and a
                naive datetime are refused; one in the future asks for no history): a
                snapshot, then live updates, on a wire subscription of the handle's own. After
                a reconnect it resumes from the last event it got, so it sees what it missed
                rather than the whole history again. For a consistent view use
                :meth:`time_series`; for a one-off fetch :meth:`history`.
            source: for order events, the order source (``"NTV"``).
            overflow: what to do when the consumer falls behind; default ``LATEST`` for
                non-indexed events and ``LOSSLESS`` for indexed ones.
            max_buffer: the bound on buffered events (default 25,000). A LATEST handle keeps one
                event per symbol, so it is bounded by its symbols; max_buffer then only caps
                what a wildcard ("*") handle collects.
            notify_gaps: raise :class:`~trio_dxlink.DataGapError` from the handle, once, where
                a lost connection may have left a gap in its events (it can be read on after).
            fields: ask the server for these fields only (``["bid_price", "ask_price"]``, or as
                dxLink spells them, ``"bidPrice"``); the others keep their defaults (``nan``,
                ``0``, ``None``). The symbol, and what indexed events are routed by, are always
                kept. Default: every field.
            aggregation_period: seconds over which the server may conflate this handle's
                events (default: the feed's ``aggregation_period``).

        Handles with the same ``fields`` and ``aggregation_period`` share one FEED channel per
        event type; each distinct pair opens a channel of its own (again after a reconnect).

        Raises:
            SymbolError: a malformed candle symbol (the parser's message).
            ValueError: an option the event type does not take, an unknown field, a period
                that is not positive, ``fields``/``aggregation_period`` with ``from_time``.
        """
        start, key = check_subscription(event_type, from_time, source, fields, aggregation_period)
        if self._closed:
            raise ConnectionClosedError("the feed is closed")
        return Subscription(
            self,
            event_type,
            symbols,
            from_time=start,
            source=source,
            overflow=overflow,
            max_buffer=max_buffer,
            notify_gaps=notify_gaps,
            channel_key=key,
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

    async def history(
        self,
        event_type: type[TS],
        symbol: str,
        start: dt.datetime | int,
        end: dt.datetime | int | None = None,
    ) -> History[TS]:
        """The history of one time series from ``start`` (to ``end``, default now): a frozen
        :class:`~trio_dxlink.History` (``.events`` oldest first, ``.status``, ``.reaches_start``).

        Asked on a HISTORY channel with a wire subscription of its own (other handles are not
        disturbed), paced with every request that needs a snapshot, withdrawn once the
        snapshot is consistent. Bound the wait with :func:`trio.fail_after`. ``start`` and
        ``end`` are aware datetimes or epoch milliseconds (see :meth:`subscribe`).

        Raises:
            SymbolError: a malformed candle symbol.
            ValueError / TypeError: a bad time (seconds, naive, in the future, end < start).
            SubscriptionRefusedError: the server refused the request at a limit.
            ChannelError / ConnectionClosedError: the request could not be served.
        """
        if self._closed:
            raise ConnectionClosedError("the feed is closed")
        return await fetch_history(self, event_type, symbol, start, end)

    def time_series(
        self, event_type: type[TS], symbols: Iterable[str], start: dt.datetime | int
    ) -> TimeSeries[TS]:
        """A live consistent model of time series from ``start``; enter it with ``async with``.

        Iterate it for :class:`~trio_dxlink.Update` objects: each symbol's whole snapshot
        once it is complete, then change sets, never half a transaction; after a reconnect a
        fresh snapshot marked ``after_gap``. ``ts.events(symbol)`` is the current view.
        Each symbol has a wire subscription of its own on a HISTORY channel (paced like
        :meth:`history`). Plain :meth:`subscribe` keeps delivering raw events.
        """
        if self._closed:
            raise ConnectionClosedError("the feed is closed")
        return TimeSeries(self, event_type, symbols, start)

    def depth_of_market(
        self,
        symbol: str,
        *,
        sources: Iterable[str],
        depth: int = DEFAULT_DEPTH,
        aggregation_period: float | None = None,
    ) -> DepthOfMarket:
        """The server's depth-of-market snapshots (DXLink's DOM service) of ``symbol``, built
        from the order ``sources`` (``["NTV"]``, ...); enter the handle to open its channel.

        ``depth`` is the levels per side asked for (0: no limit), ``aggregation_period`` the
        seconds between snapshots (``None``: the server's). The channel is reopened after a
        reconnect; an ERROR or CHANNEL_CLOSED on it fails this handle only
        (:class:`ChannelError`). See :class:`DepthOfMarket`.
        """
        sources = [sources] if isinstance(sources, str) else list(sources)
        if not sources or not all(isinstance(s, str) and s for s in sources):
            raise ValueError(f"sources must be order-source names, got {sources!r}")
        if not isinstance(depth, int) or depth < 0:
            raise ValueError(f"depth must be a non-negative integer, got {depth!r}")
        if self._closed:
            raise ConnectionClosedError("the feed is closed")
        return DepthOfMarket(
            self, symbol, sources, depth=depth, aggregation_period=aggregation_period
        )

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
            subscriptions=len(self._desired) + len(self._lanes),
            history_in_flight=self._lanes.in_flight,
            history_waiting=self._lanes.waiting,
            refusals=self._refusals,
        )

    # --- the handles' side (_subscription.SubscriptionHost, which documents each call; not
    # for users, so without docstrings: the API reference lists documented members only) ---

    def attach(self, handle: Subscription[Any]) -> None:
        if self._closed:
            raise ConnectionClosedError("the feed is closed")
        self._handles[handle] = None
        if handle.from_time is not None:
            self._lane_requests[handle] = {}
        else:
            self._router.attach(handle)
        self.add_symbols(handle, handle.symbols)

    def detach(self, handle: Subscription[Any]) -> None:
        if self._handles.pop(handle, False) is not False:
            self.remove_symbols(handle, handle.symbols)
            self._lane_requests.pop(handle, None)
            self._router.detach(handle)

    def add_symbols(self, handle: Subscription[Any], symbols: Iterable[str]) -> None:
        if handle not in self._handles:
            return
        symbols = list(symbols)
        requests = self._lane_requests.get(handle)
        if requests is not None and handle.from_time is not None:  # on a lane of its own
            for symbol in symbols:
                request = LaneRequest(
                    HandleLane(handle),
                    handle.event_type.EVENT_TYPE,
                    symbol,
                    handle.from_time,
                    resume=True,
                )
                requests[symbol] = request
                self.lane_add(request)
            return
        self._router.add(handle, symbols)
        self._want(handle, symbols)

    def _want(self, handle: Subscription[Any], symbols: list[str]) -> None:
        """Hold the wire subscriptions of ``handle``'s ``symbols``, sending the new ones."""
        key = handle.channel_key
        added = self._desired.add(
            handle, key, symbols, from_time=handle.from_time, source=handle.source
        )
        live = self._live
        if added and live is not None and live.usable():
            live.subscribe(key, added)

    def remove_symbols(self, handle: Subscription[Any], symbols: Iterable[str]) -> None:
        symbols = list(symbols)
        requests = self._lane_requests.get(handle)
        if requests is not None:
            for symbol in symbols:
                if (request := requests.pop(symbol, None)) is not None:
                    self.lane_remove(request)
            return
        self._router.remove(handle, symbols)
        self._unwant(handle, symbols)

    def _unwant(self, handle: Subscription[Any], symbols: list[str]) -> list[SubscriptionEntry]:
        """Let go of ``handle``'s hold on ``symbols``; the removed wire subscriptions."""
        key = handle.channel_key
        removed = self._desired.remove(handle, key, symbols, source=handle.source)
        live = self._live
        if removed and live is not None and live.usable():
            live.unsubscribe(key, removed)
        return removed

    # --- history lanes (_history.LaneHost) ---

    def lane_add(self, request: LaneRequest) -> None:
        self._send_lanes(self._lanes.add(request))

    def lane_remove(self, request: LaneRequest) -> None:
        self._send_lanes(self._lanes.remove(request))

    def _send_lanes(self, actions: list[Any]) -> None:
        live = self._live
        if actions and live is not None and live.usable():
            live.send_lanes(actions)

    def attach_dom(self, handle: DepthOfMarket) -> None:
        if self._closed:
            raise ConnectionClosedError("the feed is closed")
        self._doms.attach(handle, self._live)

    def detach_dom(self, handle: DepthOfMarket) -> None:
        self._doms.detach(handle, self._live)

    # --- the connection runner's side (runner.Host) ---

    def replay_dom(self) -> list[DepthOfMarket]:
        return self._doms.replay()

    def replay(self) -> dict[ChannelKey, list[SubscriptionEntry]]:
        return self._desired.replay()

    def closing(self) -> bool:
        return self._closing

    def connected(self, live: Live | None) -> None:
        if self._live is not None:  # its counts become history
            self._malformed += self._live.core.statistics.malformed_messages
            self._lanes.connection_lost()
            for request in self._lanes.requests():
                request.owner.lane_reset(request)
        self._live = live
        if live is not None:
            self._send_lanes(self._lanes.connected())

    def authorized(self) -> None:
        if self._reason is not None or self._losses:
            self._reconnects += 1
        self._set_state(FeedState.CONNECTED)

    def frame(self, now: float) -> None:
        self._messages += 1
        self._last_message = now

    def events(self, batch: c.FeedEvents) -> None:
        live = self._live
        lane = None if live is None else live.lane_of.get(batch.channel)
        if lane is None:
            key = None if live is None else live.key_of.get(batch.channel)
            if key is None:  # a channel the feed did not open for a key (none today)
                key = ChannelKey(batch.event_type.EVENT_TYPE)
            self._router.dispatch(key, batch.events, batch.symbols)
            return
        self._router.events += len(batch.events)
        shares, actions = self._lanes.dispatch(lane, batch.event_type.EVENT_TYPE, batch.events)
        self._router.unrouted += len(batch.events) - sum(len(share) for _, share in shares)
        for request, share in shares:
            request.owner.lane_events(request, share)
        self._send_lanes(actions)

    def skipped(self, live: Live, skipped: c.DataSkipped) -> None:
        self._skipped += skipped.events
        key = None if skipped.channel is None else live.key_of.get(skipped.channel)
        if key is not None:
            handles = self._router.handles(key)
        elif skipped.event_type is not None:
            handles = self._router.handles_of_type(skipped.event_type)
        else:
            handles = []
        for handle in handles:
            handle._mark_skipped(skipped.events, skipped.reason)

    def lane_failed(self, lane: int, error: ChannelError) -> None:
        log.warning("%s; failing the history requests on it", error)
        for request in self._lanes.on_lane(lane):
            self.lane_remove(request)
            request.owner.lane_failed(request, error)

    def subscription_refused(self, live: Live, lane: int | None, error: ServerError) -> None:
        self._refusals += 1
        request, actions = self._lanes.refuse(lane)
        if request is None:
            log.warning("%s; no history request to fail for it", error)
            return
        log.warning("%s; failing the %s %r request", error, request.event_type, request.symbol)
        self._send_lanes(actions)
        request.owner.lane_failed(request, error)

    def channel_failed(self, key: ChannelKey, error: ChannelError) -> None:
        log.warning("%s; failing the %s subscriptions on it", error, key.event_type)
        for handle in self._router.handles(key):
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
                    for handle in self._gap_handles():
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

    def _gap_handles(self) -> Iterable[Subscription[Any]]:
        """The handles a lost connection may leave a gap in."""
        return self._handles

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
        for request in self._lanes.requests():
            self._lanes.remove(request)
            request.owner.lane_failed(request, error)
        self._doms.fail_all(error)
