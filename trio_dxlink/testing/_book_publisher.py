"""What the local DXLink server's subscribers get from its order books: :class:`BookPublisher`.

The server keeps a :class:`~trio_dxlink.testing._books.SimulatedBook` per (symbol, source) that
anyone asked for, and serves three things from the same books:

* a subscription to ``Order``, ``SpreadOrder`` or ``AnalyticOrder`` naming a ``source`` gets that
  book as a snapshot (:meth:`BookPublisher.snapshot`), then every change to it; a subscription
  without a source gets no snapshot, and the changes of every source's book of its symbol
  (with ``simulate=True`` that includes the books of :data:`SIMULATED_SOURCES`, which such a
  subscription keeps moving, so ``stream Order SPY`` shows orders without ``--source``);
* a DOM channel gets a DOM_SNAPSHOT of its sources' books added up by price once its DOM_SETUP
  arrives, and again after every change to one of those books (:meth:`BookPublisher.send_dom`);
* with ``ServerConfig(simulate=True)``, a new book starts with about :attr:`BookPublisher.levels`
  levels a side around the market's quote, and every ``update_interval`` each book someone
  follows changes a little, as one transaction (:meth:`BookPublisher.simulate`). Without
  simulation a book holds only what a test published, and a subscription to a book nobody has
  published to gets no snapshot.

Switches for tests (attributes, changeable while serving):

* :attr:`BookPublisher.max_snapshot_orders`: cut every book snapshot at that many orders, the
  last one flagged SNAPSHOT_SNIP instead of SNAPSHOT_END;
* :attr:`BookPublisher.transaction_per_message`: send simulated transactions (and published
  books) that many events to a FEED_DATA frame, so one transaction spans several frames.

:meth:`BookPublisher.publish_book` (``DXLinkServer.publish_book``) makes a book exactly what a test
says and sends it as a new snapshot; order events published with ``DXLinkServer.publish`` or
``publish_transaction`` are recorded in the books too (:meth:`BookPublisher.record`).
"""

from __future__ import annotations

import contextlib
import random
import zlib
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING

from ..events import Event, IndexedEvent, Order
from ._books import ORDER_TYPES, Level, SimulatedBook, merged_levels, render
from ._config import ServerConfig
from ._market import Market, parse_option_symbol

if TYPE_CHECKING:
    from ._dom_service import DomServerChannel
    from ._server_connection import ServerConnection

__all__ = ["SIMULATED_SOURCES", "BookPublisher"]

BookKey = tuple[str, str]

SIMULATED_SOURCES: tuple[str, ...] = ("NTV", "ntv")
"""The books a sourceless order subscription follows on a simulating server: one full order
book (``NTV``, several orders a level) and one aggregated (``ntv``, one order a level)."""


class BookPublisher:
    """The order books of one server and who gets what from them (module docstring).

    Args:
        config: the server's configuration (``simulate`` is read).
        market: the simulated market (its mid prices place simulated books).
        route: sends events to every channel subscribed to them.
        connections: the server's live connections, when called.

    Attributes:
        levels: about how many levels a side simulated books keep.
        max_snapshot_orders: cut book snapshots at this many orders with SNAPSHOT_SNIP.
        transaction_per_message: events per FEED_DATA frame for simulated transactions and
            published books (``None``: one frame each).
    """

    def __init__(
        self,
        config: ServerConfig,
        market: Market,
        route: Callable[[Sequence[Event]], None],
        connections: Callable[[], list[ServerConnection]],
    ) -> None:
        self.config = config
        self.market = market
        self._route = route
        self._connections = connections
        self.books: dict[BookKey, SimulatedBook] = {}
        self.levels = 10
        self.max_snapshot_orders: int | None = None
        self.transaction_per_message: int | None = None

    def book(self, symbol: str, source: str) -> SimulatedBook:
        """The book of (symbol, source), made on first use (filled around the market's quote
        when simulating)."""
        book = self.books.get((symbol, source))
        if book is None:
            seed = zlib.crc32(f"{self.market.seed}:book:{symbol}:{source}".encode())
            lot = 1 if parse_option_symbol(symbol) or symbol.startswith("/") else 100
            book = SimulatedBook(symbol, source, random.Random(seed), levels=self.levels, lot=lot)
            self.books[(symbol, source)] = book
            if self.config.simulate:
                now = self.market.now_ms()
                for _ in range(100 * self.levels):
                    if len(book.orders) >= 2 * self.levels:
                        break
                    book.step(self.market.mid(symbol), now)
        return book

    # --- what subscribers get ---

    def snapshot(self, cls: type[IndexedEvent], symbol: str, source: str) -> list[IndexedEvent]:
        """The snapshot a new ``cls`` subscription to (symbol, source) gets: none for a book
        nobody has published to when the server does not simulate (a scripted test publishes
        its own snapshots, and an unasked-for empty one would race with them)."""
        if not self.config.simulate and (symbol, source) not in self.books:
            return []
        return render(cls, self.book(symbol, source).snapshot(self.max_snapshot_orders))

    def send_dom(self, conn: ServerConnection, channel: DomServerChannel) -> None:
        """Send one DOM channel its book now."""
        books = [self.book(channel.symbol, source) for source in channel.sources]
        bids, asks = merged_levels(books, None)
        conn.protocol.send_dom_snapshot(channel, self.market.now_ms(), bids, asks)
        conn._flush()

    # --- changes ---

    def publish_book(
        self,
        symbol: str,
        source: str,
        bids: Sequence[Level],
        asks: Sequence[Level],
        *,
        per_message: int | None = None,
    ) -> None:
        """Make (symbol, source)'s book exactly ``bids`` and ``asks`` and send it as a snapshot
        (``per_message`` events a frame; default :attr:`transaction_per_message`)."""
        book = self.book(symbol, source)
        snapshot = book.replace(bids, asks, self.market.now_ms())
        if bids and asks:
            # The market's quote follows the book, so simulation carries on around it (an
            # option or candle symbol is priced from elsewhere, and refuses).
            with contextlib.suppress(ValueError):
                self.market.set_mid(symbol, (max(p for p, _ in bids) + min(p for p, _ in asks)) / 2)
        self._send(book, snapshot, per_message)

    def record(self, events: Iterable[Event]) -> None:
        """Published order-book events (with a source) change the books they belong to."""
        touched: dict[BookKey, list[IndexedEvent]] = {}
        for event in events:
            source = getattr(event, "source", None)
            if event.EVENT_TYPE in ORDER_TYPES and isinstance(source, str) and source:
                touched.setdefault((event.event_symbol, source), []).append(event)  # type: ignore[arg-type]
        for (symbol, source), batch in touched.items():
            self.book(symbol, source).apply(batch)
        self._refresh_dom({symbol for symbol, _ in touched})

    def simulate(self) -> None:
        """One simulated change, as a transaction, to every book someone follows."""
        now = self.market.now_ms()
        for symbol, source in sorted(self._followed()):
            book = self.book(symbol, source)
            self._send(book, book.step(self.market.mid(symbol), now), None)

    # --- internals ---

    def _send(self, book: SimulatedBook, orders: list[Order], per_message: int | None) -> None:
        size = per_message or self.transaction_per_message or max(len(orders), 1)
        for name in sorted(self._types_of(book.symbol)):
            events = render(ORDER_TYPES[name], orders)
            for start in range(0, len(events), size):
                self._route(events[start : start + size])
        self._refresh_dom({book.symbol})

    def _refresh_dom(self, symbols: set[str]) -> None:
        for conn in self._connections():
            for channel in list(conn.protocol.dom_channels.values()):
                if channel.set_up and channel.symbol in symbols:
                    self.send_dom(conn, channel)

    def _types_of(self, symbol: str) -> set[str]:
        return {
            entry.type
            for conn in self._connections()
            for channel in conn.channels.values()
            for entry in channel.subscriptions.values()
            if entry.type in ORDER_TYPES and entry.symbol in (symbol, "*")
        }

    def _followed(self) -> set[BookKey]:
        keys: set[BookKey] = set()
        for conn in self._connections():
            for channel in conn.channels.values():
                for entry in channel.subscriptions.values():
                    if entry.type not in ORDER_TYPES or entry.symbol == "*":
                        continue
                    sources = (entry.source,) if entry.source else SIMULATED_SOURCES
                    keys.update((entry.symbol, source) for source in sources)
            for dom in conn.protocol.dom_channels.values():
                keys.update((dom.symbol, source) for source in dom.sources)
        return keys
