"""A pool of DXLink connections with the feed's API: :func:`open_dxlink_pool`, :class:`DXLinkPool`.

A real server drops a connection that asks for too much (users report it near 22,000 symbols),
and an options chain with Quote and Greeks is more than that. A pool spreads the wire
subscriptions over several connections, each a **shard**: one connection runner (with its own
reconnect loop) and its share of the desired state. It is not a second client: a shard *is* a
:class:`~trio_dxlink.DXLinkFeed` whose router is the pool's, so every connection hands its
events to one :class:`~trio_dxlink._router.Router`, and handles, ``latest`` and ``get_event``
work as on a feed.

Placement rules (one home: :meth:`DXLinkPool._place`):

* one wire subscription, (event type, symbol, source), is always on one connection, whoever
  holds it;
* new ones go, in symbol order, on the first connection with room (fewer than
  ``max_subscriptions_per_connection``); when none has room a connection is opened, up to
  ``max_connections``; past that the call raises :class:`~trio_dxlink.PoolFullError` and
  changes nothing;
* nothing moves unless :meth:`DXLinkPool.rebalance` is called.

A dropped connection reconnects and replays its own share only; a handle whose symbols span
several connections gets a gap mark (``notify_gaps``) from the one that dropped, and keeps
receiving from the others meanwhile.
"""

from __future__ import annotations

import random
import ssl
from collections import defaultdict
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, TypeVar, cast

import attrs
import trio

from . import _connection as c
from ._arguments import token_source_for
from ._channel_key import ChannelKey
from ._client import DEFAULT_MAX_HISTORY_REQUESTS, DXLinkFeed
from ._desired import WireKey
from ._exceptions import ConnectionClosedError, PoolFullError
from ._feed_state import FeedState, FeedStatistics, check_subscription
from ._history import History, TimeSeries
from ._messages import SubscriptionEntry
from ._open import connection_settings, run_block
from ._reads import LatestReads
from ._reconnect import ReconnectPolicy
from ._router import Router
from ._runner import ConnectionSettings
from ._subscription import DEFAULT_MAX_BUFFER, Overflow, Subscription
from ._tokens import LegacyTokenSource, TokenSource
from ._transport import Connector
from .events import Event, TimeSeriesEvent

if TYPE_CHECKING:
    import datetime as dt

__all__ = [
    "DEFAULT_MAX_CONNECTIONS",
    "DEFAULT_MAX_SUBSCRIPTIONS_PER_CONNECTION",
    "DXLinkPool",
    "PoolStatistics",
    "open_dxlink_pool",
]

E = TypeVar("E", bound=Event)
TS = TypeVar("TS", bound=TimeSeriesEvent)

DEFAULT_MAX_SUBSCRIPTIONS_PER_CONNECTION = 10_000
"""Well below the ~22,000 symbols at which users see single connections dropped."""

DEFAULT_MAX_CONNECTIONS = 8


@attrs.frozen
class PoolStatistics:
    """A snapshot of a pool's counters.

    Attributes:
        state: the pool's state (see :attr:`DXLinkPool.state`).
        connections: each connection's own :class:`~trio_dxlink.FeedStatistics`, in the order
            they were opened; their ``events_received`` count what that connection delivered.
        subscriptions: wire subscriptions over all connections.
        events_received: events dispatched in total.
        events_unrouted: events for symbols no handle wanted.
    """

    state: FeedState
    connections: tuple[FeedStatistics, ...]
    subscriptions: int
    events_received: int
    events_unrouted: int


class _Shard(DXLinkFeed):
    """One connection of a pool: a feed that routes into the pool's router and holds only the
    wire subscriptions the pool placed on it."""

    def __init__(
        self,
        pool: DXLinkPool,
        index: int,
        source: TokenSource,
        settings: ConnectionSettings,
        policy: ReconnectPolicy,
        *,
        rng: random.Random | None,
        max_history_requests: int,
    ) -> None:
        self._pool = pool
        self.index = index
        self._received = 0
        super().__init__(
            source,
            settings,
            policy,
            rng=rng,
            max_history_requests=max_history_requests,
            router=pool._router,
        )

    def __repr__(self) -> str:
        return f"<pool connection {self.index} {self._state.value} {self.load} subscriptions>"

    @property
    def load(self) -> int:
        """Wire subscriptions held on this connection (history requests included)."""
        return len(self._desired) + len(self._lanes)

    def events(self, batch: c.FeedEvents) -> None:
        self._received += len(batch.events)
        super().events(batch)

    def statistics(self) -> FeedStatistics:
        """This connection's counters (``events_received``: what it delivered)."""
        return attrs.evolve(super().statistics(), events_received=self._received)

    def _gap_handles(self) -> Iterable[Subscription[Any]]:
        held = cast("set[Subscription[Any]]", self._desired.holders())
        return [*self._handles, *(h for h in held if h not in self._handles)]

    def _set_state(self, state: FeedState) -> None:
        super()._set_state(state)
        self._pool._state_may_have_changed()

    def _send(self, entries: dict[ChannelKey, list[SubscriptionEntry]], *, add: bool) -> None:
        live = self._live
        if live is None or not live.usable():
            return
        for key, group in entries.items():
            if group:
                (live.subscribe if add else live.unsubscribe)(key, group)


class DXLinkPool(LatestReads):
    """Several DXLink connections behind one feed's API; create it with
    :func:`open_dxlink_pool`.

    :meth:`subscribe`, :meth:`get_event`, :meth:`latest`, :meth:`history` and
    :meth:`time_series` work as on :class:`~trio_dxlink.DXLinkFeed`; :meth:`statistics` has each
    connection's counters. Handles with ``from_time``, and history requests, ride on the first
    connection.
    """

    def __init__(
        self,
        source: TokenSource,
        settings: ConnectionSettings,
        policy: ReconnectPolicy,
        *,
        max_subscriptions_per_connection: int = DEFAULT_MAX_SUBSCRIPTIONS_PER_CONNECTION,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        rng: random.Random | None = None,
        max_history_requests: int = DEFAULT_MAX_HISTORY_REQUESTS,
    ) -> None:
        for name, value in (
            ("max_subscriptions_per_connection", max_subscriptions_per_connection),
            ("max_connections", max_connections),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        self._source = source
        self._settings = settings
        self._policy = policy
        self._rng = rng
        self._max_history_requests = max_history_requests
        self._cap = max_subscriptions_per_connection
        self._max_connections = max_connections
        self._router = Router()
        self._shards: list[_Shard] = []
        self._shard_of: dict[WireKey, _Shard] = {}
        self._handles: dict[Subscription[Any], None] = {}
        self._nursery: trio.Nursery | None = None
        self._closed = False
        self._changed = trio.Event()
        self._first = self._new_shard()

    def __repr__(self) -> str:
        return f"<DXLinkPool {self.state.value} {len(self._shards)} connections>"

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
        """A subscription handle, as :meth:`DXLinkFeed.subscribe <trio_dxlink.DXLinkFeed.
        subscribe>` (the same arguments, checked by the same rules); its symbols may be spread
        over several connections.

        ``fields`` (a projection: the server is asked for these fields only) and
        ``aggregation_period`` (seconds) put the handle on a FEED channel of its own for each
        distinct pair, on every connection that holds some of its symbols. A wire subscription
        is (channel, symbol, source), so the same symbol asked with other fields or another
        period is a wire subscription of its own, placed and counted separately.

        Raises:
            SymbolError: a malformed candle symbol.
            ValueError: an option the event type does not take, an unknown field, a period
                that is not positive, ``fields``/``aggregation_period`` with ``from_time``.
            PoolFullError: (when the handle is entered, or given more symbols) every connection
                is full and ``max_connections`` are open; nothing was subscribed.
        """
        start, key = check_subscription(event_type, from_time, source, fields, aggregation_period)
        if self._closed:
            raise ConnectionClosedError("the feed is closed")
        if start is not None:  # history lanes live on the first connection
            return self._first.subscribe(
                event_type,
                symbols,
                from_time=start,
                overflow=overflow,
                max_buffer=max_buffer,
                notify_gaps=notify_gaps,
            )
        return Subscription(
            self,
            event_type,
            symbols,
            from_time=None,
            source=source,
            overflow=overflow,
            max_buffer=max_buffer,
            notify_gaps=notify_gaps,
            channel_key=key,
        )

    async def history(
        self,
        event_type: type[TS],
        symbol: str,
        start: dt.datetime | int,
        end: dt.datetime | int | None = None,
    ) -> History[TS]:
        """:meth:`DXLinkFeed.history <trio_dxlink.DXLinkFeed.history>`, on the first
        connection."""
        return await self._first.history(event_type, symbol, start, end)

    def time_series(
        self, event_type: type[TS], symbols: Iterable[str], start: dt.datetime | int
    ) -> TimeSeries[TS]:
        """:meth:`DXLinkFeed.time_series <trio_dxlink.DXLinkFeed.time_series>`, on the first
        connection."""
        return self._first.time_series(event_type, symbols, start)

    @property
    def connections(self) -> int:
        """Connections opened so far (each reconnects on its own)."""
        return len(self._shards)

    @property
    def state(self) -> FeedState:
        """``CLOSED`` once closed; else ``RECONNECTING`` while any connection is, else
        ``CONNECTING`` while any is, else ``CONNECTED``."""
        if self._closed:
            return FeedState.CLOSED
        states = {shard.state for shard in self._shards}
        for state in (FeedState.RECONNECTING, FeedState.CONNECTING):
            if state in states:
                return state
        return FeedState.CONNECTED

    async def wait_state(self, *states: FeedState) -> FeedState:
        """Wait until the pool is in one of ``states`` (returns at once if it already is)."""
        while self.state not in states:
            await self._changed.wait()
        await trio.lowlevel.checkpoint()
        return self.state

    def statistics(self) -> PoolStatistics:
        """A snapshot of the pool's counters, and each connection's."""
        return PoolStatistics(
            state=self.state,
            connections=tuple(shard.statistics() for shard in self._shards),
            subscriptions=sum(shard.load for shard in self._shards),
            events_received=self._router.events,
            events_unrouted=self._router.unrouted,
        )

    def rebalance(self) -> int:
        """Even out the connections' loads (after many unsubscriptions, say) by moving wire
        subscriptions from the fullest to the emptiest; returns how many moved. Moved symbols
        are unsubscribed on one connection and subscribed on another, so their handles may
        miss an update in between (the server sends the current value on subscribing)."""
        loads = {shard: len(shard._desired) for shard in self._shards}
        target = -(-sum(loads.values()) // len(loads))  # ceil
        moved = 0
        for shard in self._shards:
            excess = loads[shard] - target
            if excess <= 0:
                continue
            removed: dict[ChannelKey, list[SubscriptionEntry]] = defaultdict(list)
            added: dict[_Shard, dict[ChannelKey, list[SubscriptionEntry]]] = defaultdict(
                lambda: defaultdict(list)
            )
            for key in shard._desired.keys()[-excess:]:
                dest = min(loads, key=loads.__getitem__)
                entry = dest._desired.put(key, shard._desired.take(key))
                channel, symbol, source = key
                removed[channel].append(SubscriptionEntry(channel.event_type, symbol, None, source))
                added[dest][channel].append(entry)
                self._shard_of[key] = dest
                loads[dest] += 1
                loads[shard] -= 1
                moved += 1
            shard._send(removed, add=False)
            for dest, entries in added.items():
                dest._send(entries, add=True)
        return moved

    # --- the handles' side (_subscription.SubscriptionHost) ---

    def attach(self, handle: Subscription[Any]) -> None:
        if self._closed:
            raise ConnectionClosedError("the feed is closed")
        self._handles[handle] = None
        self._router.attach(handle)
        try:
            self.add_symbols(handle, list(handle.symbols))
        except PoolFullError:
            del self._handles[handle]
            self._router.detach(handle)
            raise

    def detach(self, handle: Subscription[Any]) -> None:
        if self._handles.pop(handle, False) is not False:
            self.remove_symbols(handle, list(handle.symbols))
            self._router.detach(handle)

    def add_symbols(self, handle: Subscription[Any], symbols: Iterable[str]) -> None:
        if handle not in self._handles:
            return
        symbols = list(symbols)
        placed = self._place(handle.channel_key, symbols, handle.source)
        self._router.add(handle, symbols)
        for shard, share in placed.items():
            shard._want(handle, share)

    def remove_symbols(self, handle: Subscription[Any], symbols: Iterable[str]) -> None:
        symbols = list(symbols)
        self._router.remove(handle, symbols)
        name, source = handle.channel_key, handle.source
        groups: dict[_Shard, list[str]] = defaultdict(list)
        for symbol in symbols:
            shard = self._shard_of.get((name, symbol, source))
            if shard is not None:
                groups[shard].append(symbol)
        for shard, share in groups.items():
            for entry in shard._unwant(handle, share):
                del self._shard_of[(name, entry.symbol, entry.source)]

    # --- placement ---

    def _place(
        self, event_type: ChannelKey, symbols: list[str], source: str | None
    ) -> dict[_Shard, list[str]]:
        """Which connection each symbol's wire subscription is on, placing the new ones
        (opening connections as needed); raises :class:`PoolFullError` before changing
        anything if they do not fit."""
        groups: dict[_Shard, list[str]] = defaultdict(list)
        new: list[str] = []
        for symbol in dict.fromkeys(symbols):
            shard = self._shard_of.get((event_type, symbol, source))
            if shard is None:
                new.append(symbol)
            else:
                groups[shard].append(symbol)
        if not new:
            return groups
        new.sort()  # in symbol order, so a connection holds a range and placement is repeatable
        rooms = [(shard, self._cap - shard.load) for shard in self._shards]
        free = sum(max(0, room) for _, room in rooms)
        free += (self._max_connections - len(self._shards)) * self._cap
        if len(new) > free:
            raise PoolFullError(
                f"{len(new)} new subscriptions do not fit: {free} free on"
                f" {self._max_connections} connections of {self._cap}"
            )
        pending = iter(new)
        for shard, room in rooms:
            self._assign(event_type, source, shard, pending, room, groups)
        for symbol in pending:
            shard = self._open_shard()
            groups[shard].append(symbol)
            self._shard_of[(event_type, symbol, source)] = shard
            self._assign(event_type, source, shard, pending, self._cap - 1, groups)
        return groups

    def _assign(
        self,
        event_type: ChannelKey,
        source: str | None,
        shard: _Shard,
        pending: Iterable[str],
        room: int,
        groups: dict[_Shard, list[str]],
    ) -> None:
        if room <= 0:
            return
        for symbol in pending:
            groups[shard].append(symbol)
            self._shard_of[(event_type, symbol, source)] = shard
            room -= 1
            if room == 0:
                return

    # --- connections ---

    def _new_shard(self) -> _Shard:
        shard = _Shard(
            self,
            len(self._shards),
            self._source,
            self._settings,
            self._policy,
            rng=self._rng,
            max_history_requests=self._max_history_requests,
        )
        self._shards.append(shard)
        return shard

    def _open_shard(self) -> _Shard:
        assert self._nursery is not None, "the pool is not running"
        shard = self._new_shard()
        self._nursery.start_soon(shard._run)
        self._state_may_have_changed()
        return shard

    def _state_may_have_changed(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def _start(self, nursery: trio.Nursery) -> None:
        self._nursery = nursery
        await nursery.start(self._first._run)

    async def _shutdown(self) -> None:
        async with trio.open_nursery() as nursery:
            for shard in self._shards:
                nursery.start_soon(shard._shutdown)

    def _close(self) -> None:
        if self._closed:
            return
        self._closed = True
        error = ConnectionClosedError("the feed is closed")
        for handle in list(self._handles):
            handle._fail(error)
        for shard in self._shards:
            shard._close()
        self._state_may_have_changed()


@asynccontextmanager
async def open_dxlink_pool(
    target: str | TokenSource | LegacyTokenSource,
    token: str | None = None,
    *,
    max_subscriptions_per_connection: int = DEFAULT_MAX_SUBSCRIPTIONS_PER_CONNECTION,
    max_connections: int = DEFAULT_MAX_CONNECTIONS,
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
) -> AsyncIterator[DXLinkPool]:
    """A pool of up to ``max_connections`` DXLink connections, each holding at most
    ``max_subscriptions_per_connection`` wire subscriptions, behind the feed's API.

    ``target``, ``token`` and the other arguments are :func:`~trio_dxlink.open_dxlink`'s, and
    apply to every connection. The block is entered once the first connection is authorized;
    more are opened when subscriptions need them (and are never closed before the block ends).
    Each reconnects on its own by ``reconnect``; when one gives up, the block raises its
    :class:`~trio_dxlink.GaveUpError`.
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
    pool = DXLinkPool(
        source,
        settings,
        reconnect or ReconnectPolicy(),
        max_subscriptions_per_connection=max_subscriptions_per_connection,
        max_connections=max_connections,
        rng=rng,
        max_history_requests=max_history_requests,
    )
    async with run_block(pool._start, pool._shutdown, pool._close):
        yield pool
