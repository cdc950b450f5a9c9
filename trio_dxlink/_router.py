"""Routing decoded events to subscription handles: a pure module (no trio, no clock).

A :class:`Router` knows, per channel (:class:`~trio_dxlink._channel_key.ChannelKey`: an event
type with a subscription's field list and period), which handles want which symbols, and hands each
handle its share of a decoded batch in one synchronous call. It also keeps the latest event of
every routed symbol (what :meth:`~trio_dxlink.DXLinkFeed.get_event` answers from). It knows
nothing about connections, so one router can serve several connection runners.

Symbols are matched as the server spells them. A candle symbol has several spellings
(``AAPL{=5m,price=last}`` and ``AAPL{=5m}`` are one symbol), so a candle handle is routed under
the spelling it asked for and the normalised one. ``"*"`` routes every symbol of the type; a
handle with a ``source`` only gets events of that order source.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

from ._accel import speedups
from ._channel_key import ChannelKey
from .events import Candle, Event
from .symbols import normalize_candle_symbol

__all__ = ["Receiver", "Router"]


class Receiver(Protocol):
    """What the router needs of a subscription handle."""

    @property
    def event_type(self) -> type[Event]: ...

    @property
    def source(self) -> str | None: ...

    @property
    def channel_key(self) -> ChannelKey: ...

    @property
    def symbols(self) -> frozenset[str]: ...

    def _push(self, events: list[Any], symbols: list[str] | None = None) -> None: ...

    def _mark_skipped(self, events: int, reason: str) -> None: ...

    def _fail(self, error: BaseException) -> None: ...


# A route is what one symbol maps to in a channel's table: a list whose item 0 is the latest
# event routed for the symbol (None before the first) and whose other items are the handles it
# goes to, so that one lookup per event both finds the handles and records the latest event.
Route = list[Any]


def _py_route(
    table: dict[str, Route], symbols: list[str], events: list[Event]
) -> list[Event] | None:
    """Record each routed event as its route's latest; ``None`` if every symbol is routed,
    else the routed events. (``trio_dxlink._speedups.route`` does the same in one C pass.)"""
    routes = list(map(table.get, symbols))
    if None not in routes:  # the common case: every symbol is routed
        for route, event in zip(routes, events, strict=True):
            route[0] = event  # type: ignore[index]
        return None
    kept: list[Event] = []
    for route, event in zip(routes, events, strict=True):
        if route is not None:
            route[0] = event
            kept.append(event)
    return kept


_RouteFn = Callable[[dict[str, Route], list[str], list[Event]], list[Event] | None]
_route: _RouteFn = _py_route if speedups is None else speedups.route


def _py_fan_out(
    table: dict[str, Route], symbols: list[str], events: list[Event]
) -> tuple[dict[Any, list[Event]], int]:
    """Each handle's share of a batch (in order), and how many events no handle wanted; records
    each routed event as its route's latest. (``trio_dxlink._speedups.fan_out`` in C.)"""
    shares: dict[Any, list[Event]] = {}
    unrouted = 0
    for symbol, event in zip(symbols, events, strict=True):
        route = table.get(symbol)
        if route is None:
            unrouted += 1
            continue
        route[0] = event
        for i in range(1, len(route)):
            handle = route[i]
            share = shares.get(handle)
            if share is None:
                shares[handle] = [event]
            else:
                share.append(event)
    return shares, unrouted


_FanOutFn = Callable[[dict[str, Route], list[str], list[Event]], tuple[dict[Any, list[Event]], int]]
_fan_out: _FanOutFn = _py_fan_out if speedups is None else speedups.fan_out


def aliases(event_type: type[Event], symbol: str) -> list[str]:
    """The spellings under which events for ``symbol`` arrive (a candle symbol has two)."""
    if issubclass(event_type, Candle):
        try:
            normal = normalize_candle_symbol(symbol)
        except ValueError:
            return [symbol]
        return [symbol] if normal == symbol else [symbol, normal]
    return [symbol]


class Router:
    """Per channel: symbol → its route (the latest event and the handles it goes to)."""

    def __init__(self) -> None:
        self._routes: dict[ChannelKey, dict[str, Route]] = {}
        self._handles_of: dict[ChannelKey, dict[Receiver, None]] = {}
        self.unrouted = 0
        """Events for symbols no handle wanted (counted, not delivered)."""
        self.events = 0
        """Events dispatched in total."""

    # --- membership ---

    def attach(self, handle: Receiver) -> None:
        self._handles_of.setdefault(handle.channel_key, {})[handle] = None

    def detach(self, handle: Receiver) -> None:
        self._handles_of.get(handle.channel_key, {}).pop(handle, None)

    def handles(self, key: ChannelKey) -> Sequence[Receiver]:
        """The attached handles of one channel."""
        return list(self._handles_of.get(key, ()))

    def handles_of_type(self, event_type: str) -> Sequence[Receiver]:
        """The attached handles of one event type, whatever their channel."""
        return [
            handle
            for key, handles in self._handles_of.items()
            if key.event_type == event_type
            for handle in handles
        ]

    def add(self, handle: Receiver, symbols: Iterable[str]) -> None:
        """Route ``symbols`` (of the handle's channel) to ``handle``."""
        table = self._routes.setdefault(handle.channel_key, {})
        for symbol in symbols:
            for alias in aliases(handle.event_type, symbol):
                route = table.get(alias)
                if route is None:
                    table[alias] = [None, handle]
                elif handle not in route[1:]:
                    route.append(handle)

    def remove(self, handle: Receiver, symbols: Iterable[str]) -> None:
        """Stop routing ``symbols`` to ``handle``; ``handle.symbols`` are the ones it keeps."""
        key = handle.channel_key
        table = self._routes.get(key, {})
        symbols = list(symbols)
        # Two spellings of one candle symbol share a route: keep the handle on the routes that
        # a symbol it still has maps to.
        kept: set[str] = set()
        if issubclass(handle.event_type, Candle):
            for symbol in handle.symbols - set(symbols):
                kept.update(aliases(handle.event_type, symbol))
        for symbol in symbols:
            for alias in aliases(handle.event_type, symbol):
                if alias in kept:
                    continue
                route = table.get(alias)
                if route is not None and handle in route[1:]:
                    del route[route.index(handle, 1)]
                    if len(route) == 1:  # no handle left: the route and its latest event go
                        del table[alias]

    def latest(self, event_type: str, symbol: str) -> Event | None:
        """The last event routed for ``symbol``, while some handle wants it: from the type's
        ordinary channel (every field) if it has one, else from the first of the type's other
        channels (projections, other periods) that has one, in the order they were opened."""
        route = self._routes.get(ChannelKey(event_type), {}).get(symbol)
        if route is not None and route[0] is not None:
            return route[0]  # type: ignore[no-any-return]
        for key, table in self._routes.items():
            if key.event_type == event_type:
                route = table.get(symbol)
                if route is not None and route[0] is not None:
                    return route[0]  # type: ignore[no-any-return]
        return None

    # --- dispatch ---

    def dispatch(self, key: ChannelKey, events: list[Event], symbols: list[str]) -> None:
        """Hand each handle of channel ``key`` its share of one decoded batch (synchronous;
        never blocks).

        ``symbols`` are the events' symbols, in order.
        """
        self.events += len(events)
        table = self._routes.get(key)
        if not table:
            self.unrouted += len(events)
            return
        handles = self._handles_of[key]
        if "*" not in table and all(h.source is None for h in handles):
            if len(handles) == 1:
                # The common case, one handle for the type: no per-event routing at all.
                (handle,) = handles
                kept = _route(table, symbols, events)
                if kept is None:
                    handle._push(events, symbols)
                else:
                    self.unrouted += len(events) - len(kept)
                    if kept:
                        handle._push(kept)
            else:
                shares, unrouted = _fan_out(table, symbols, events)
                self.unrouted += unrouted
                for handle, share in shares.items():
                    handle._push(share)
            return
        self._route_each(table, events)

    def _route_each(self, table: dict[str, Route], events: list[Event]) -> None:
        # The general case: wildcard handles, or handles filtering by order source.
        wild = table.get("*")
        wild_handles = [] if wild is None else wild[1:]  # wildcard handles see every symbol
        per_handle: dict[Receiver, list[Event]] = {}
        unrouted = 0
        for event in events:
            route = table.get(event.event_symbol)
            if route is None:
                if wild is None:
                    unrouted += 1
                    continue
                route, handles = wild, wild_handles  # "*" has no latest event of its own
            else:
                route[0] = event
                handles = route[1:]
            for handle in handles:
                if handle.source is not None and getattr(event, "source", None) != handle.source:
                    continue
                bucket = per_handle.get(handle)
                if bucket is None:
                    per_handle[handle] = [event]
                else:
                    bucket.append(event)
            if wild is not None and route is not wild:
                for handle in wild_handles:
                    if handle not in handles:
                        per_handle.setdefault(handle, []).append(event)
        self.unrouted += unrouted
        for handle, bucket in per_handle.items():
            handle._push(bucket)
