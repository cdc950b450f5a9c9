"""Simulated order books for the local DXLink server, per (symbol, source), pure.

A :class:`SimulatedBook` holds the resting orders of one symbol from one order source, keyed by
``index`` (the source's id in the top 32 bits, §6.5, so indexes never collide across sources).
Upper-case sources (``NTV``, ``DEX``) are full order books, several orders a price level (scope
``ORDER``); lower-case ones (``ntv``) are aggregated, one order a level (scope ``AGGREGATE``),
as dxFeed names them (§7).

What it publishes is always consistent within its source:

* :meth:`SimulatedBook.snapshot`: every order, bids best first then asks best first, the first
  flagged SNAPSHOT_BEGIN and the last SNAPSHOT_END (SNAPSHOT_SNIP when cut at ``limit``); an empty
  book is one event flagged SNAPSHOT_BEGIN | SNAPSHOT_END | REMOVE_EVENT (§6.4);
* :meth:`SimulatedBook.step`: a few changes around the quote (orders added, resized, removed,
  and every order inside the new quote pulled), as one transaction: every event but the last
  flagged TX_PENDING, so no client ever sees a crossed book at the end of one;
* :meth:`SimulatedBook.replace`: a whole given book, as a new snapshot.

:func:`render` turns a book's orders into the event type a subscription asked for (``Order``,
``SpreadOrder`` with ``spread_symbol``, ``AnalyticOrder`` with no iceberg); :func:`merged_levels`
adds several sources' books up by price for the DOM service. The server's side of all this (which
books to step, who gets what) is ``_book_publisher.py``.
"""

from __future__ import annotations

import math
import random
import zlib
from collections.abc import Iterable, Sequence
from typing import Any, cast

import attrs

from ..events import AnalyticOrder, EventFlag, IndexedEvent, Order, SpreadOrder
from ._instrument import cents

__all__ = [
    "ORDER_TYPES",
    "SimulatedBook",
    "merged_levels",
    "quote_bounds",
    "render",
    "source_index",
]

ORDER_TYPES: dict[str, type[IndexedEvent]] = {
    "Order": Order,
    "SpreadOrder": SpreadOrder,
    "AnalyticOrder": AnalyticOrder,
}
"""The order-book event types the server keeps books for, by dxLink name."""

TICK = 0.01
"""The price step of simulated books."""

Level = tuple[float, float]


def source_index(source: str) -> int:
    """The top 32 bits of an order index for ``source`` (§6.5): a name of 1-4 ASCII characters
    packed 8 bits each, any other name a hash below 2**31 (so the index stays a signed long)."""
    raw = source.encode("ascii", "replace")
    packed = int.from_bytes(raw, "big") if 1 <= len(raw) <= 4 else zlib.crc32(raw) & 0x7FFFFFFF
    return packed << 32


def quote_bounds(mid: float) -> tuple[float, float]:
    """The best bid and ask a book keeps around ``mid`` (the market's quote spread)."""
    half = max(TICK, cents(mid * 0.0001))
    bid = max(TICK, cents(mid - half))
    return bid, cents(max(mid + half, bid + TICK))


def _removed(order: Order) -> bool:
    return order.remove_event or not order.size > 0  # size 0 or NaN removes too (§6.7)


def _flagged(order: Order, flags: int) -> Order:
    return attrs.evolve(order, event_flags=int(flags))


def render(cls: type[IndexedEvent], orders: Sequence[Order]) -> list[IndexedEvent]:
    """``orders`` as ``cls`` events (``Order`` events are returned as they are)."""
    if cls is Order:
        return list(orders)
    out: list[IndexedEvent] = []
    for order in orders:
        fields = attrs.asdict(cast(Any, order), recurse=False)
        if cls is SpreadOrder:
            del fields["market_maker"]
            fields["spread_symbol"] = order.event_symbol
        out.append(cast(Any, cls)(**fields))
    return out


def merged_levels(
    books: Iterable[SimulatedBook], depth: int | None
) -> tuple[list[Level], list[Level]]:
    """The price levels of several books added up by price: (bids best first, asks best
    first), at most ``depth`` a side (``None``: all)."""
    bids: dict[float, float] = {}
    asks: dict[float, float] = {}
    for book in books:
        for order in book.orders.values():
            side = bids if order.order_side == "BUY" else asks
            side[order.price] = side.get(order.price, 0.0) + order.size
    return (
        sorted(bids.items(), reverse=True)[:depth],
        sorted(asks.items())[:depth],
    )


class SimulatedBook:
    """The resting orders of one (symbol, source) (see the module docstring).

    Args:
        symbol: the symbol.
        source: the order source.
        rng: the book's own random numbers (seeded by the caller for repeatable books).
        levels: about how many price levels a side the simulation keeps.
        lot: the size step of simulated orders.
    """

    def __init__(
        self, symbol: str, source: str, rng: random.Random, *, levels: int = 10, lot: int = 100
    ) -> None:
        self.symbol = symbol
        self.source = source
        self.aggregated = source.islower()
        self.rng = rng
        self.levels = levels
        self.lot = lot
        self.orders: dict[int, Order] = {}
        self._base = source_index(source)
        self._next_order = 1
        self._sequence = 0

    def __repr__(self) -> str:
        return f"<SimulatedBook {self.symbol} {self.source} {len(self.orders)} orders>"

    # --- views ---

    def side(self, buy: bool) -> list[Order]:
        """One side's orders, best price first (then oldest first)."""
        side = "BUY" if buy else "SELL"
        orders = [o for o in self.orders.values() if o.order_side == side]
        return sorted(orders, key=lambda o: (-o.price if buy else o.price, o.index))

    def crossed(self) -> bool:
        """Whether the best bid is at or above the best ask."""
        bids, asks = self.side(True), self.side(False)
        return bool(bids and asks and bids[0].price >= asks[0].price)

    def snapshot(self, limit: int | None = None) -> list[Order]:
        """The whole book flagged as a snapshot (cut at ``limit`` orders with SNAPSHOT_SNIP)."""
        orders = self.side(True) + self.side(False)
        if not orders:
            empty = Order(event_symbol=self.symbol, source=self.source, index=self._base)
            flags = EventFlag.SNAPSHOT_BEGIN | EventFlag.SNAPSHOT_END | EventFlag.REMOVE_EVENT
            return [_flagged(empty, flags)]
        snip = limit is not None and len(orders) > limit
        orders = orders[:limit]
        out = [_flagged(o, EventFlag.SNAPSHOT_BEGIN if i == 0 else 0) for i, o in enumerate(orders)]
        end = EventFlag.SNAPSHOT_SNIP if snip else EventFlag.SNAPSHOT_END
        out[-1] = _flagged(out[-1], out[-1].event_flags | end)
        return out

    # --- changes ---

    def apply(self, events: Iterable[IndexedEvent]) -> None:
        """Record published order events of this book (a SNAPSHOT_BEGIN clears it first)."""
        for event in events:
            if event.snapshot_begin:
                self.orders.clear()
            order = _as_order(event)
            if _removed(order):
                self.orders.pop(order.index, None)
            else:
                self.orders[order.index] = _flagged(order, 0)

    def replace(self, bids: Sequence[Level], asks: Sequence[Level], now: int) -> list[Order]:
        """Make the book exactly ``bids`` and ``asks`` ((price, size), in any order); the new
        book as a snapshot.

        Raises:
            ValueError: a price or size is not positive, or the book would be crossed.
        """
        for price, size in (*bids, *asks):
            if not (price > 0 and size > 0 and math.isfinite(price) and math.isfinite(size)):
                raise ValueError(f"a level needs a positive price and size, got {(price, size)}")
        if bids and asks and max(p for p, _ in bids) >= min(p for p, _ in asks):
            raise ValueError("the book would be crossed (a bid at or above an ask)")
        self.orders.clear()
        for buy, levels in ((True, bids), (False, asks)):
            for price, size in levels:
                order = self._new(buy, price, size, now)
                self.orders[order.index] = order
        return self.snapshot()

    def step(self, mid: float, now: int) -> list[Order]:
        """A few changes around ``mid`` as one transaction (see the module docstring)."""
        best_bid, best_ask = quote_bounds(mid)
        changes: list[Order] = []
        for order in list(self.orders.values()):
            inside = order.price > best_bid if order.order_side == "BUY" else order.price < best_ask
            if inside:  # the quote moved through it: pulled (or filled)
                changes.append(self._remove(order, now))
        rng = self.rng
        for _ in range(rng.randint(1, 3)):
            buy = rng.random() < 0.5
            side = self.side(buy)
            roll = rng.random()
            if len(side) < self.levels or (roll < 0.4 and len(side) < 3 * self.levels):
                level = min(int(rng.expovariate(0.3)), 3 * self.levels)
                price = cents(best_bid - level * TICK if buy else best_ask + level * TICK)
                changes.append(self._add(buy, price, now))
            elif roll < 0.75:
                order = rng.choice(side)
                size = float(rng.randint(1, 20) * self.lot)
                changes.append(self._put(attrs.evolve(order, size=size, action="MODIFY"), now))
            else:
                changes.append(self._remove(rng.choice(side), now))
        if len(changes) > 1:
            changes[:-1] = [_flagged(o, o.event_flags | EventFlag.TX_PENDING) for o in changes[:-1]]
        return changes

    # --- internals ---

    def _stamp(self, order: Order, now: int) -> Order:
        self._sequence += 1
        return attrs.evolve(order, time=now, action_time=now, sequence=self._sequence & 0x3FFFFF)

    def _put(self, order: Order, now: int) -> Order:
        order = self._stamp(order, now)
        self.orders[order.index] = order
        return order

    def _remove(self, order: Order, now: int) -> Order:
        del self.orders[order.index]
        gone = attrs.evolve(order, size=0.0, action="DELETE", event_flags=EventFlag.REMOVE_EVENT)
        return self._stamp(gone, now)

    def _add(self, buy: bool, price: float, now: int) -> Order:
        size = float(self.rng.randint(1, 20) * self.lot)
        if self.aggregated:  # one order a level: an add at a level is a bigger level
            for order in self.side(buy):
                if order.price == price:
                    return self._put(attrs.evolve(order, size=order.size + size), now)
        return self._put(self._new(buy, price, size, now), now)

    def _new(self, buy: bool, price: float, size: float, now: int) -> Order:
        number = self._next_order
        self._next_order += 1
        return Order(
            event_symbol=self.symbol,
            index=self._base | number,
            time=now,
            source=self.source,
            action="NEW",
            action_time=now,
            order_id=0 if self.aggregated else number,
            price=price,
            size=size,
            count=0 if self.aggregated else 1,
            exchange_code="Q",
            order_side="BUY" if buy else "SELL",
            scope="AGGREGATE" if self.aggregated else "ORDER",
        )


def _as_order(event: IndexedEvent) -> Order:
    """Any order-book event as an ``Order`` with its common fields."""
    if isinstance(event, Order):
        return event
    names = {f.name for f in attrs.fields(Order)}
    values = attrs.asdict(cast(Any, event), recurse=False)
    return Order(**{k: v for k, v in values.items() if k in names})
