"""Order books from Order, SpreadOrder or AnalyticOrder events (pure, no trio, no clock).

An :class:`OrderBook` follows the orders of one symbol from one or more sources. Each source is
its own indexed collection (protocol reference §6.3 and §6.7), kept consistent by an
:class:`~trio_dxlink._assembly.IndexedAssembler`: a snapshot replaces the source's orders whole,
a transaction (events flagged ``TX_PENDING``) is applied whole, and ``REMOVE_EVENT`` or a size of
0 or NaN removes an order. The book only ever applies what the assemblers publish, so after
every :meth:`OrderBook.feed` it holds no half transaction and no half snapshot: a book whose
input never crosses (within one source) never shows a crossed book of that source.

Views (:class:`BookView`) are built on demand, to a depth: the price levels of each side
(:class:`PriceLevel`: ``price``, ``size``, ``count``; bids best (highest) first, asks best
(lowest) first, across all sources) and the orders on those levels. A level's ``size`` is the
exact (:func:`math.fsum`) sum of its orders' sizes, and its ``count`` the number of orders on it,
where an order that stands for several (an aggregated source such as ``ntv``) counts as its
``count`` field says. So a book fed event by event and a book rebuilt from scratch from the same
events show equal views.

A lost connection is an input (:meth:`OrderBook.connection_lost`): the book keeps its orders,
marks the sources :attr:`~trio_dxlink.SnapshotStatus.PENDING`, and once every source that had a
snapshot before has applied a new one, counts a rebuild and flags the next view ``rebuilt``.

Orders without a side (``order_side`` neither BUY nor SELL), with a price that is not finite or
with a negative size stay out of the levels; they are counted (``unplaced``) and logged once.
"""

from __future__ import annotations

import heapq
import logging
import math
import re
import types
from collections.abc import Iterable, Mapping
from typing import Generic, TypeVar

import attrs

from ._assembly import (
    DEFAULT_MAX_PENDING,
    AssemblyStats,
    IndexedAssembler,
    Overflow,
    SnapshotStatus,
    Update,
    event_source,
)
from ._exceptions import SymbolError
from ._indexed_sources import IndexedSources
from .events import AnalyticOrder, Event, Order, SpreadOrder

__all__ = [
    "ORDER_TYPES",
    "SPECIAL_SOURCES",
    "BookStatistics",
    "BookView",
    "OrderBook",
    "PriceLevel",
    "check_book_args",
    "check_sources",
]

log = logging.getLogger("trio_dxlink")

O = TypeVar("O", Order, SpreadOrder, AnalyticOrder)  # noqa: E741 - O for "order"

ORDER_TYPES: tuple[type[Event], ...] = (Order, SpreadOrder, AnalyticOrder)
"""The event types an order book is built from."""

SPECIAL_SOURCES = frozenset(
    {
        "DEFAULT",
        "COMPOSITE_BID",
        "COMPOSITE_ASK",
        "REGIONAL_BID",
        "REGIONAL_ASK",
        "AGGREGATE_BID",
        "AGGREGATE_ASK",
    }
)
"""Order sources with reserved names (§6.5, §7); every other source is 1-4 letters or digits."""

_NAMED_SOURCE = re.compile(r"[A-Za-z0-9]{1,4}")

_BID, _ASK = 0, 1
_SIDES = {"BUY": _BID, "SELL": _ASK}


# --- arguments --------------------------------------------------------------------------------


def check_sources(sources: Iterable[str]) -> tuple[str, ...]:
    """``sources`` as a tuple without duplicates, each checked against §7's syntax.

    A source is one of :data:`SPECIAL_SOURCES` or a name of 1-4 ASCII letters or digits (upper
    case for full order books like ``NTV``, lower case for aggregated price levels like ``ntv``).

    Raises:
        TypeError: ``sources`` is a single string, or holds something that is not a string.
        SymbolError: no sources, or a malformed one.
    """
    if isinstance(sources, str):
        raise TypeError(f"sources must be an iterable of source names, not one string {sources!r}")
    out: dict[str, None] = {}
    for source in sources:
        if not isinstance(source, str):
            raise TypeError(f"an order source must be a string, got {source!r}")
        if source not in SPECIAL_SOURCES and not _NAMED_SOURCE.fullmatch(source):
            raise SymbolError(
                f"malformed order source {source!r}: a source is 1-4 ASCII letters or digits"
                f" (NTV, ntv, GLBX, BI20) or one of {', '.join(sorted(SPECIAL_SOURCES))}"
            )
        out[source] = None
    if not out:
        raise SymbolError("an order book needs at least one source")
    return tuple(out)


def check_book_args(
    event_type: object, symbol: object, sources: Iterable[str], depth: int | None
) -> tuple[str, ...]:
    """Check what an order book is asked for; return the checked sources.

    Raises:
        TypeError: ``event_type`` is not Order, SpreadOrder or AnalyticOrder; ``symbol`` is
            not a string; ``depth`` is not an integer; see :func:`check_sources`.
        SymbolError: ``symbol`` is empty or the wildcard ``*``; see :func:`check_sources`.
        ValueError: ``depth`` is below 1.
    """
    if event_type not in ORDER_TYPES:
        raise TypeError(f"an order book is built from Order, SpreadOrder or AnalyticOrder events,"
                        f" not {event_type!r}")  # fmt: skip
    if not isinstance(symbol, str):
        raise TypeError(f"symbol must be a string, got {symbol!r}")
    if not symbol or symbol == "*":
        raise SymbolError(f"an order book needs one symbol, got {symbol!r}")
    if depth is not None:
        if isinstance(depth, bool) or not isinstance(depth, int):
            raise TypeError(f"depth must be an integer or None, got {depth!r}")
        if depth < 1:
            raise ValueError(f"depth must be at least 1, got {depth}")
    return check_sources(sources)


# --- views ------------------------------------------------------------------------------------


@attrs.frozen
class PriceLevel:
    """One price level of one side of a book.

    Attributes:
        price: the price.
        size: the total size of the orders at this price (all sources).
        count: how many orders are at this price (an aggregated order counts as its
            ``count`` field says, at least 1).
    """

    price: float
    size: float
    count: int


@attrs.frozen
class BookView(Generic[O]):
    """A consistent picture of an order book at one moment; immutable, safe to share.

    Two views compare equal when they show the same book (the bookkeeping fields ``version``,
    ``rebuilds`` and ``rebuilt`` are left out of the comparison).

    Attributes:
        symbol: the book's symbol.
        bids: buy levels, best (highest price) first, at most ``depth`` of them.
        asks: sell levels, best (lowest price) first, at most ``depth`` of them.
        bid_orders: the orders on the levels of ``bids``, best price first, then by time.
        ask_orders: the orders on the levels of ``asks``, likewise.
        sources: each source's :class:`~trio_dxlink.SnapshotStatus` (``PENDING`` until its
            first snapshot, and again from a lost connection until the next one).
        depth: the most levels per side the view shows (``None``: all).
        version: how many consistent steps the book had taken when the view was made.
        rebuilds: how many times the book was rebuilt from fresh snapshots after a lost
            connection.
        rebuilt: this is the first view made after such a rebuild.
    """

    symbol: str
    bids: tuple[PriceLevel, ...]
    asks: tuple[PriceLevel, ...]
    bid_orders: tuple[O, ...]
    ask_orders: tuple[O, ...]
    sources: Mapping[str, SnapshotStatus]
    depth: int | None
    version: int = attrs.field(eq=False)
    rebuilds: int = attrs.field(eq=False, default=0)
    rebuilt: bool = attrs.field(eq=False, default=False)

    @property
    def orders(self) -> tuple[O, ...]:
        """The orders on the shown levels: ``bid_orders``, then ``ask_orders``."""
        return self.bid_orders + self.ask_orders

    @property
    def best_bid(self) -> PriceLevel | None:
        """The highest bid level, if any."""
        return self.bids[0] if self.bids else None

    @property
    def best_ask(self) -> PriceLevel | None:
        """The lowest ask level, if any."""
        return self.asks[0] if self.asks else None

    @property
    def crossed(self) -> bool:
        """The best bid is at or above the best ask (possible across sources, never within one
        source whose own input is not crossed)."""
        return bool(self.bids and self.asks and self.bids[0].price >= self.asks[0].price)

    @property
    def complete(self) -> bool:
        """Every source's orders rest on a snapshot received since the start or the last gap."""
        return all(status is not SnapshotStatus.PENDING for status in self.sources.values())


@attrs.frozen
class BookStatistics:
    """Counters of an :class:`OrderBook`.

    Attributes:
        version: consistent steps taken (each :meth:`OrderBook.feed` that changed the book, and
            each lost connection).
        orders: orders on the book now (placed on a level).
        bid_levels / ask_levels: price levels on each side now.
        unplaced: orders kept off the levels (no side, a price that is not finite, or a
            negative size), counted each time one arrives.
        gaps: lost connections the book was told of.
        rebuilds: rebuilds from fresh snapshots after them.
        assembly: the counters of the sources' assemblers (events, snapshots, transactions,
            skipped and malformed events, overflows; events of unwanted sources count as
            ``foreign``).
    """

    version: int
    orders: int
    bid_levels: int
    ask_levels: int
    unplaced: int
    gaps: int
    rebuilds: int
    assembly: AssemblyStats


def _queue_key(order: Order | SpreadOrder | AnalyticOrder) -> tuple[int, int, int, str, int]:
    return (order.time, order.time_nano_part, order.sequence, event_source(order), order.index)


# --- the book ---------------------------------------------------------------------------------


class OrderBook(Generic[O]):
    """The book of one symbol from one or more order sources (see the module docstring).

    Args:
        event_type: :class:`~trio_dxlink.Order`, :class:`~trio_dxlink.SpreadOrder` or
            :class:`~trio_dxlink.AnalyticOrder`.
        symbol: the symbol, as the server spells it in ``eventSymbol``.
        sources: the sources to follow (events of others are skipped and counted as
            ``foreign``); ``None``: every source that appears (at most ``max_sources``).
        max_pending: how many events each source may hold while a transaction or snapshot is
            open (see :class:`~trio_dxlink._assembly.Overflow`).

    Raises:
        TypeError, SymbolError, ValueError: as :func:`check_book_args`.
    """

    def __init__(
        self,
        event_type: type[O],
        symbol: str,
        sources: Iterable[str] | None = None,
        *,
        max_pending: int = DEFAULT_MAX_PENDING,
        max_sources: int = 64,
    ) -> None:
        checked = check_book_args(event_type, symbol, ["DEFAULT"] if sources is None else sources,
                                  None)  # fmt: skip
        wanted = () if sources is None else checked
        self.event_type: type[O] = event_type
        self.symbol = symbol
        self._wanted: frozenset[str] | None = None if sources is None else frozenset(checked)
        self._assembly: IndexedSources[O] = IndexedSources(
            event_type, symbol, max_sources=max_sources, max_pending=max_pending
        )
        self._known: dict[str, None] = dict.fromkeys(wanted)
        self._placed: dict[str, dict[int, O]] = {}
        self._levels: tuple[dict[float, dict[tuple[str, int], O]], ...] = ({}, {})
        self._unwanted = AssemblyStats()
        self._unplaced = 0
        self._warned_unplaced = False
        self.version = 0
        """How many consistent steps the book has taken (it grows on every change)."""
        # reconnects: each source's count of lost connections, the sources whose new snapshot
        # is awaited, and whether a rebuild is still to be declared
        self._epochs: dict[str, int] = dict.fromkeys(self._known, 0)
        self._awaiting: set[str] = set()
        self._gaps = 0
        self._rebuilding = False
        self._rebuilds = 0
        self._rebuilt_unseen = False
        self._cache: BookView[O] | None = None

    def __repr__(self) -> str:
        return f"<OrderBook {self.event_type.__name__} {self.symbol!r} v{self.version}>"

    # --- inputs ---

    def feed(self, events: Iterable[Event]) -> bool:
        """Apply events of this book in wire order; ``True`` if the book changed.

        Events of other types or symbols, and of sources the book does not follow, are skipped
        and counted. Transactions and snapshots split across calls are held until complete.
        """
        wanted = self._wanted
        if wanted is not None:
            kept = []
            for event in events:
                if event_source(event) in wanted:
                    kept.append(event)
                else:
                    self._unwanted.events += 1
                    self._unwanted.foreign += 1
            events = kept
        changed = False
        for update in self._assembly.feed(events):
            changed = True
            if isinstance(update, Overflow):
                continue  # the source's status is PENDING now; its orders stay as they were
            self._apply(update)
        if changed:
            self.version += 1
            self._check_rebuilt()
        return changed

    def connection_lost(self, source: str | None = None) -> None:
        """The events of ``source`` (``None``: of every source) stopped: the connection was
        lost. Anything held is dropped, the source's orders stay until its next snapshot
        replaces them, and its status is ``PENDING`` until then."""
        names = list(self._epochs) if source is None else [source]
        top = max(self._epochs.values(), default=0)
        for name in names:
            self._known.setdefault(name, None)
            self._epochs[name] = self._epochs.get(name, 0) + 1
            assembler = self._assembler(name)
            if assembler is not None:
                if assembler.status is not SnapshotStatus.PENDING:
                    self._awaiting.add(name)
                assembler.connection_lost()
        if source is None or self._epochs[source] > top:  # the first word of a new loss
            self._gaps += 1
            self._rebuilding = True
        self.version += 1

    # --- reading ---

    @property
    def gaps(self) -> int:
        """How many lost connections the book has been told of."""
        return self._gaps

    def sources(self) -> dict[str, SnapshotStatus]:
        """Each source's status (the followed sources, or the ones seen so far)."""
        out = {}
        for name in self._known:
            assembler = self._assembler(name)
            out[name] = SnapshotStatus.PENDING if assembler is None else assembler.status
        return out

    def view(self, depth: int | None = None) -> BookView[O]:
        """The book now, to ``depth`` levels per side (``None``: all); built once per version."""
        cached = self._cache
        if cached is not None and cached.version == self.version and cached.depth == depth:
            return cached
        bids, bid_orders = _side(self._levels[_BID], depth, best_high=True)
        asks, ask_orders = _side(self._levels[_ASK], depth, best_high=False)
        rebuilt, self._rebuilt_unseen = self._rebuilt_unseen, False
        view = BookView(
            self.symbol,
            bids,
            asks,
            bid_orders,
            ask_orders,
            types.MappingProxyType(self.sources()),
            depth,
            self.version,
            self._rebuilds,
            rebuilt,
        )
        self._cache = view
        return view

    def statistics(self) -> BookStatistics:
        """This book's counters."""
        assembly = self._assembly.stats
        assembly.add(self._unwanted)
        return BookStatistics(
            version=self.version,
            orders=sum(len(orders) for orders in self._placed.values()),
            bid_levels=len(self._levels[_BID]),
            ask_levels=len(self._levels[_ASK]),
            unplaced=self._unplaced,
            gaps=self._gaps,
            rebuilds=self._rebuilds,
            assembly=assembly,
        )

    # --- internals ---

    def _assembler(self, source: str) -> IndexedAssembler[O] | None:
        try:
            return self._assembly[source]
        except KeyError:
            return None

    def _apply(self, update: Update[O]) -> None:
        source = update.source
        if source not in self._known:
            self._known[source] = None
            self._epochs[source] = max(self._epochs.values(), default=0)
        placed = self._placed.setdefault(source, {})
        if update.snapshot:
            for old in placed.values():
                self._unplace(source, old)
            placed.clear()
            self._awaiting.discard(source)
        else:
            for gone in update.removed:
                self._take(source, placed, gone.index)
        for order in update.events:
            self._take(source, placed, order.index)
            side = _SIDES.get(order.order_side or "")
            price = order.price
            if side is None or not math.isfinite(price) or not order.size >= 0:
                self._skip_unplaced(order)
                continue
            placed[order.index] = order
            level = self._levels[side].get(price)
            if level is None:
                self._levels[side][price] = {(source, order.index): order}
            else:
                level[(source, order.index)] = order

    def _take(self, source: str, placed: dict[int, O], index: int) -> None:
        """Take the order with this index off the book, if it is on it."""
        order = placed.get(index)
        if order is not None:
            del placed[index]
            self._unplace(source, order)

    def _unplace(self, source: str, order: O) -> None:
        levels = self._levels[_SIDES[order.order_side or ""]]
        level = levels[order.price]
        del level[(source, order.index)]
        if not level:
            del levels[order.price]

    def _skip_unplaced(self, order: O) -> None:
        self._unplaced += 1
        if not self._warned_unplaced:
            self._warned_unplaced = True
            log.warning(
                "%r: an order without a side, a finite price or a valid size (%r); kept off the"
                " levels (further ones are only counted)",
                self,
                order,
            )

    def _check_rebuilt(self) -> None:
        if not self._rebuilding or self._awaiting:
            return
        top = max(self._epochs.values(), default=0)
        if all(epoch == top for epoch in self._epochs.values()):
            self._rebuilding = False
            self._rebuilds += 1
            self._rebuilt_unseen = True


def _side(
    levels: dict[float, dict[tuple[str, int], O]], depth: int | None, *, best_high: bool
) -> tuple[tuple[PriceLevel, ...], tuple[O, ...]]:
    if depth is None:
        prices = sorted(levels, reverse=best_high)
    elif best_high:
        prices = heapq.nlargest(depth, levels)
    else:
        prices = heapq.nsmallest(depth, levels)
    out: list[PriceLevel] = []
    orders: list[O] = []
    for price in prices:
        level = list(levels[price].values())
        count = sum(order.count if order.count > 0 else 1 for order in level)
        out.append(PriceLevel(price, math.fsum(order.size for order in level), count))
        level.sort(key=_queue_key)
        orders.extend(level)
    return tuple(out), tuple(orders)
