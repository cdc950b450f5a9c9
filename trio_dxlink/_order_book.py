"""``feed.order_book(...)``: a live, consistent order book over a feed (the trio side).

A :class:`LiveOrderBook` holds one wire subscription per source (``Order`` of the symbol with
that ``source``) and applies what arrives to an :class:`~trio_dxlink._book.OrderBook`
synchronously, as the connection's reader hands it over: there is no buffer to overflow and no
task of its own. Readers get :class:`~trio_dxlink._book.BookView` objects, built only when
asked for, so a slow reader always gets the newest book (conflation), never a backlog.

A lost connection is told to the book the moment the feed notices it (at the same place in
each source's stream as a subscription's gap); the book keeps its orders, marks its sources
``PENDING``, and is rebuilt from the snapshots the server sends after the feed resubscribes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from types import TracebackType
from typing import TYPE_CHECKING, Any, Generic

import attrs
import trio

from ._book import BookStatistics, BookView, O, OrderBook, check_book_args
from ._exceptions import DataGapError, MalformedDataError, SubscriptionClosedError
from ._subscription import Overflow, Subscription, SubscriptionHost

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = ["LiveOrderBook", "OrderBookStatistics"]


@attrs.frozen
class OrderBookStatistics:
    """Counters of a live order book.

    Attributes:
        events: order events handed to the book (all sources).
        views_delivered: views handed to readers by iteration or :meth:`LiveOrderBook.next_view`.
        conflated: consistent steps no reader saw as a view of its own because a newer one
            came first.
        skipped: order events the server sent malformed, so they were skipped.
        book: the book's own counters (orders, levels, gaps, rebuilds, assembly).
    """

    events: int
    views_delivered: int
    conflated: int
    skipped: int
    book: BookStatistics


class _SourceSink(Subscription[Any]):
    """One source's wire subscription; its events go straight into the book."""

    def __init__(self, host: SubscriptionHost, book: LiveOrderBook[Any], source: str) -> None:
        super().__init__(
            host,
            book.event_type,
            [book.symbol],
            from_time=None,
            source=source,
            overflow=Overflow.LATEST,  # never used: nothing is buffered
            max_buffer=1,
        )
        self._book = book

    def _push(self, events: list[Any], symbols: list[str] | None = None) -> None:
        self._book._apply(events)

    def _mark_gap(self) -> None:
        self._book._connection_lost(self._source)

    def _mark_skipped(self, events: int, reason: str) -> None:
        self._book._skipped(events, reason)

    def _fail(self, error: BaseException) -> None:
        super()._fail(error)
        self._book._fail(error)


class LiveOrderBook(Generic[O]):
    """A consistent order book of one symbol, live; create it with
    :meth:`DXLinkFeed.order_book <trio_dxlink.DXLinkFeed.order_book>` and enter it::

        async with feed.order_book("AAPL", sources=["NTV"], depth=10) as book:
            async for view in book:
                print(view.bids[:1], view.asks[:1])

    Iterating yields a :class:`~trio_dxlink.BookView` whenever the book has changed since the
    last view handed out (conflating: a slow reader gets the newest book, not a backlog);
    :attr:`view` is the book now, without waiting. After a lost connection the sources are
    ``PENDING`` until the server's new snapshots rebuild the book; the first view after that
    has ``rebuilt`` set, and with ``notify_gaps=True`` the next read raises
    :class:`~trio_dxlink.DataGapError` once per lost connection (read on after catching it).

    Leaving the ``async with`` block unsubscribes and ends iteration. A channel error, or the
    feed closing, fails the book: reads raise that error.
    """

    def __init__(
        self,
        host: SubscriptionHost,
        event_type: type[O],
        symbol: str,
        *,
        sources: Iterable[str],
        depth: int | None = 10,
        notify_gaps: bool = False,
    ) -> None:
        checked = check_book_args(event_type, symbol, sources, depth)
        self.event_type: type[O] = event_type
        self.symbol = symbol
        self.sources = checked
        """The sources the book follows (checked, without duplicates)."""
        self.depth = depth
        """The most price levels per side a view shows (``None``: all)."""
        self.notify_gaps = notify_gaps
        self._host = host
        self._book: OrderBook[O] = OrderBook(event_type, symbol, checked)
        self._sinks = [_SourceSink(host, self, source) for source in checked]
        self._lot = trio.lowlevel.ParkingLot()
        self._entered = False
        self._closed = False
        self._error: BaseException | None = None
        self._notices: list[DataGapError] = []  # for notify_gaps readers, oldest first
        self._delivered_version = 0
        self._events = 0
        self._views = 0
        self._skipped_events = 0

    def __repr__(self) -> str:
        state = "closed" if self._closed else ("open" if self._entered else "new")
        names = ",".join(self.sources)
        return f"<LiveOrderBook {self.event_type.__name__} {self.symbol!r} {names} {state}>"

    # --- scope ---

    async def __aenter__(self) -> Self:
        """Subscribe every source (the book fills as the snapshots arrive)."""
        if self._entered or self._closed:
            raise SubscriptionClosedError("an order book can be entered only once")
        self._entered = True
        try:
            for sink in self._sinks:
                await sink.__aenter__()
        except BaseException:
            self.close()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Unsubscribe and end iteration (readers see the end). Idempotent."""
        for sink in self._sinks:
            sink.close()
        if not self._closed:
            self._closed = True
            self._lot.unpark_all()

    # --- reading ---

    @property
    def view(self) -> BookView[O]:
        """The book now, to :attr:`depth` levels (never waits; built once per change)."""
        return self._book.view(self.depth)

    def current(self) -> BookView[O]:
        """The book now (the same as :attr:`view`)."""
        return self._book.view(self.depth)

    def __aiter__(self) -> AsyncIterator[BookView[O]]:
        return self

    async def __anext__(self) -> BookView[O]:
        """The next view, as ``async for`` gets it (iteration ends when the book is closed)."""
        try:
            return await self.next_view()
        except SubscriptionClosedError:
            if self._closed and self._error is None:
                raise StopAsyncIteration from None
            raise

    async def next_view(self) -> BookView[O]:
        """Wait until the book has changed since the last view handed out; return it.

        Raises:
            DataGapError: (``notify_gaps=True``) the connection was lost since the last read;
                raised once per loss, before the views that follow it.
            MalformedDataError: (``notify_gaps=True``) the server sent order events that could
                not be decoded, so they were skipped.
            SubscriptionClosedError: the book was closed.
            ChannelError / ConnectionClosedError: the feed can no longer serve the book.
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        if self._ready():
            await trio.lowlevel.cancel_shielded_checkpoint()
        while not self._ready():
            await self._lot.park()
        if self._notices:
            raise self._notices.pop(0)
        if self._book.version > self._delivered_version:
            view = self._book.view(self.depth)
            self._delivered_version = view.version
            self._views += 1
            return view
        if self._error is not None:
            raise self._error.with_traceback(None)
        raise SubscriptionClosedError(f"the order book of {self.symbol!r} is closed")

    def statistics(self) -> OrderBookStatistics:
        """This book's counters."""
        book = self._book.statistics()
        return OrderBookStatistics(
            events=self._events,
            views_delivered=self._views,
            conflated=max(0, self._delivered_version - self._views),
            skipped=self._skipped_events,
            book=book,
        )

    # --- the sinks' side (called synchronously by the feed's reader) ---

    def _ready(self) -> bool:
        return bool(
            self._notices
            or self._book.version > self._delivered_version
            or self._error is not None
            or self._closed
        )

    def _apply(self, events: list[Any]) -> None:
        if self._closed or self._error is not None:
            return
        self._events += len(events)
        if self._book.feed(events):
            self._lot.unpark_all()

    def _connection_lost(self, source: str | None) -> None:
        if self._closed or self._error is not None or source is None:
            return
        gaps = self._book.gaps
        self._book.connection_lost(source)
        if self.notify_gaps and self._book.gaps > gaps:
            self._notices.append(
                DataGapError(
                    f"the connection was lost: the order book of {self.symbol!r} is rebuilt"
                    " from the next snapshots"
                )
            )
        self._lot.unpark_all()

    def _skipped(self, events: int, reason: str) -> None:
        self._skipped_events += events
        if self.notify_gaps and not self._closed and self._error is None:
            what = f"{events} order events" if events else "order data"
            self._notices.append(
                MalformedDataError(f"skipped {what} the server sent malformed: {reason}")
            )
            self._lot.unpark_all()

    def _fail(self, error: BaseException) -> None:
        if self._error is None and not self._closed:
            self._error = error
            for sink in self._sinks:
                sink.close()
        self._lot.unpark_all()
