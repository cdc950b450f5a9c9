"""Subscription handles: each one a bounded buffer with its own overflow policy.

A :class:`Subscription` is what ``feed.subscribe(Quote, ["SPY"])`` returns. Entering it (``async
with``) attaches it to the feed; leaving it detaches it, and the feed removes the wire
subscription when no other handle needs it.

Delivery is batched. The connection's reader decodes a whole FEED_DATA message and hands each
handle its share in one synchronous call (:meth:`Subscription._push`), which never blocks and never
waits for the consumer. The consumer takes whole batches off the buffer and iterates them locally,
so ``async for event in rx`` costs no scheduler round-trip per event: it is a full checkpoint
once per batch and a cancellation point (``trio.lowlevel.checkpoint_if_cancelled``) every 256
events within one, which keeps a cancelled consumer responsive without paying ~0.6 µs per event.

Why not a plain trio memory channel? A memory channel either blocks its sender (here: the socket
reader, which would stall every other subscription and the keepalive) or needs an unbounded
buffer, and it cannot conflate. Each handle's buffer is therefore its own, always bounded, and its
:class:`Overflow` policy says what happens when the consumer falls behind:

* ``LOSSLESS`` keeps every event up to ``max_buffer``; one more and this handle fails with
  :class:`~trio_dxlink.SlowConsumerError` (after the consumer has drained what was buffered);
  nothing else is affected.
* ``LATEST`` keeps only the newest event per symbol (conflation): a slow consumer sees current
  values and nothing stale. The default for quote-like (non-indexed) events.
* ``DROP_OLDEST`` keeps the newest ``max_buffer`` events.

Each policy is a small buffer class of its own (``_buffers.py``); a handle allocates only the
one its policy needs. Every handle counts what it received, delivered, dropped and conflated
(:meth:`statistics`).

A handle talks to what serves it (the feed, or one day a pool of connections) only through the
:class:`SubscriptionHost` protocol: attach, detach, add and remove symbols.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from types import TracebackType
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

import attrs
import trio

from ._accel import speedups
from ._arguments import check_symbols_for
from ._buffers import Buffer, Overflow, make_buffer
from ._channel_key import ChannelKey
from ._exceptions import (
    DataGapError,
    MalformedDataError,
    SlowConsumerError,
    SubscriptionClosedError,
)
from .events import Event, IndexedEvent

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = ["Overflow", "Subscription", "SubscriptionHost", "SubscriptionStatistics"]

E = TypeVar("E", bound=Event)

DEFAULT_MAX_BUFFER = 25_000

_CANCEL_CHECK_MASK = 255
"""Within a batch, iteration is a cancellation point every 256 events (it costs ~0.6 µs)."""


class _PyCursor:
    """The consumer's position in the batch being iterated, and ``async for``'s iterator.

    ``__anext__`` hands out the next event of ``ready`` directly, and calls ``slow`` (the
    subscription's ``_next_slow``) every 256th event and when the batch is used up. The event is
    taken when the awaitable is awaited, so an ``__anext__()`` that is never awaited takes
    nothing. ``trio_dxlink._speedups.Cursor`` is the same thing in C, with no coroutine per
    event.
    """

    __slots__ = ("_slow", "pos", "ready")

    def __init__(self, slow: Callable[[], Awaitable[Any]]) -> None:
        self.ready: list[Any] = []
        self.pos = 0
        self._slow = slow

    def __aiter__(self) -> _PyCursor:
        return self

    async def __anext__(self) -> Any:
        pos = self.pos
        ready = self.ready
        if pos < len(ready) and pos & _CANCEL_CHECK_MASK != _CANCEL_CHECK_MASK:
            self.pos = pos + 1
            return ready[pos]
        return await self._slow()


if speedups is not None:
    assert speedups.CANCEL_CHECK_MASK == _CANCEL_CHECK_MASK
    _Cursor: Any = speedups.Cursor
else:
    _Cursor = _PyCursor


class SubscriptionHost(Protocol):
    """What a subscription handle needs of whatever serves it.

    :class:`~trio_dxlink.DXLinkFeed` is one; a pool of connections can be another. Every call is
    synchronous and never blocks: the host changes what it wants and sends it in the background.
    """

    def attach(self, handle: Subscription[Any]) -> None:
        """Start serving ``handle`` with the symbols it has now.

        Raises:
            ConnectionClosedError: the host is closed.
        """

    def detach(self, handle: Subscription[Any]) -> None:
        """Stop serving ``handle`` (when it is closed or has failed). Idempotent."""

    def add_symbols(self, handle: Subscription[Any], symbols: list[str]) -> None:
        """``handle`` (attached) now wants these symbols too (new to it)."""

    def remove_symbols(self, handle: Subscription[Any], symbols: list[str]) -> None:
        """``handle`` no longer wants these symbols (it had them)."""


@attrs.frozen
class SubscriptionStatistics:
    """Counters of one subscription handle.

    Attributes:
        received: events routed to this handle.
        delivered: events handed to the consumer.
        buffered: events waiting in the buffer now.
        dropped: events discarded (DROP_OLDEST overflow, or refused once a LOSSLESS buffer
            overflowed).
        conflated: events replaced by a newer one for the same symbol (LATEST).
        gaps: times the connection was lost while this handle was attached, so data may be
            missing between two events.
        skipped: events of this handle's type that the server sent malformed, so they were
            skipped (counted when the server's data said which type it was).
    """

    received: int
    delivered: int
    buffered: int
    dropped: int
    conflated: int
    gaps: int
    skipped: int = 0


class Subscription(trio.abc.ReceiveChannel[E], Generic[E]):
    """A scoped subscription to one event type for a set of symbols.

    Create it with :meth:`DXLinkFeed.subscribe`; use it as ``async with feed.subscribe(...) as
    rx``, then ``async for event in rx``. Symbols can be added and removed while iterating.
    """

    def __init__(
        self,
        host: SubscriptionHost,
        event_type: type[E],
        symbols: Iterable[str],
        *,
        from_time: int | None,
        source: str | None,
        overflow: Overflow | None,
        max_buffer: int,
        notify_gaps: bool = False,
        channel_key: ChannelKey | None = None,
    ) -> None:
        if overflow is None:
            overflow = (
                Overflow.LOSSLESS if issubclass(event_type, IndexedEvent) else Overflow.LATEST
            )
        self._buffer: Buffer[E] = make_buffer(overflow, max_buffer)
        self._host = host
        self.event_type = event_type
        self.from_time = from_time
        self._source = source
        self._channel_key = channel_key or ChannelKey(event_type.EVENT_TYPE)
        self._overflow = overflow
        self._max_buffer = max_buffer
        self.notify_gaps = notify_gaps
        self._symbols: dict[str, None] = dict.fromkeys(_check_symbols(symbols, event_type))
        self._buffer.symbols_changed(len(self._symbols))
        self._attached = False
        self._closed = False
        self._error: BaseException | None = None
        self._lot = trio.lowlevel.ParkingLot()
        # consumer side: the batch being iterated (see _PyCursor)
        self._cursor = _Cursor(self._next_slow)
        # counters (dropped and conflated are the buffer's)
        self._received = 0
        self._delivered = 0
        self._gaps = 0
        self._skipped = 0

    def __repr__(self) -> str:
        state = "closed" if self._closed else ("open" if self._attached else "new")
        return (
            f"<Subscription {self.event_type.__name__} {len(self._symbols)} symbols"
            f" {self._overflow.value} {state}>"
        )

    @property
    def overflow(self) -> Overflow:
        """What this handle does when its consumer falls behind."""
        return self._overflow

    @property
    def max_buffer(self) -> int:
        """The bound on buffered events."""
        return self._max_buffer

    @property
    def source(self) -> str | None:
        """The order source this handle filters on (order-book events), if any."""
        return self._source

    @property
    def fields(self) -> tuple[str, ...] | None:
        """The dxLink field names this handle asked the server for (``None``: every field)."""
        return self._channel_key.fields

    @property
    def aggregation_period(self) -> float | None:
        """The aggregation period (seconds) this handle asked for (``None``: the feed's)."""
        return self._channel_key.aggregation_period

    @property
    def channel_key(self) -> ChannelKey:
        """The FEED channel this handle's events travel on (internal)."""
        return self._channel_key

    # --- scope ---

    async def __aenter__(self) -> Self:
        """Attach to the feed (subscribe). Entering an open handle again (as code written for
        trio channels does, ``async with channel:``) just returns it; leaving any of the
        blocks closes it, as it closes a trio channel."""
        if self._closed:
            raise SubscriptionClosedError("a closed subscription cannot be entered again")
        if not self._attached:
            self._host.attach(self)
            self._attached = True
        await trio.lowlevel.checkpoint()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    async def aclose(self) -> None:
        """Close the handle (as :meth:`close`), as a trio channel closes. Idempotent."""
        self.close()
        await trio.lowlevel.checkpoint()

    def close(self) -> None:
        """Detach from the feed (unsubscribing what no other handle needs). Idempotent."""
        if self._attached:
            self._attached = False
            self._host.detach(self)
        if not self._closed:
            self._closed = True
            self._lot.unpark_all()

    # --- symbols ---

    @property
    def symbols(self) -> frozenset[str]:
        """The symbols this handle is subscribed to."""
        return frozenset(self._symbols)

    def add(self, symbols: Iterable[str]) -> None:
        """Subscribe this handle to more symbols (takes effect at once; sent in the background)."""
        self._require_open()
        new = [s for s in _check_symbols(symbols, self.event_type) if s not in self._symbols]
        self._symbols.update(dict.fromkeys(new))
        if new:
            self._buffer.symbols_changed(len(self._symbols))
            self._host.add_symbols(self, new)

    def remove(self, symbols: Iterable[str]) -> None:
        """Stop receiving these symbols on this handle (events already buffered stay)."""
        self._require_open()
        gone = [s for s in _check_symbols(symbols) if s in self._symbols]
        for s in gone:
            del self._symbols[s]
        if gone:
            self._buffer.symbols_changed(len(self._symbols))
            self._host.remove_symbols(self, gone)

    # --- consuming ---

    def __aiter__(self) -> AsyncIterator[E]:  # type: ignore[override]
        # Iteration state lives in the cursor, so `async for` never goes through a coroutine
        # of ours per event when the C speedups are built. (trio's channels return self; the
        # cursor iterates exactly what self would.)
        return self._cursor  # type: ignore[no-any-return]

    async def __anext__(self) -> E:
        """The next event, as ``async for`` gets it (ends when the handle is closed)."""
        return await self._cursor.__anext__()  # type: ignore[no-any-return]

    async def _next_slow(self) -> E:
        # The cursor's slow path: a cancellation point every 256 events, or the next batch.
        cursor = self._cursor
        pos = cursor.pos
        ready = cursor.ready
        if pos < len(ready):
            await trio.lowlevel.checkpoint_if_cancelled()
            cursor.pos = pos + 1  # only once the check passed: a cancelled reader loses nothing
            return ready[pos]  # type: ignore[no-any-return]
        try:
            await self._refill()
        except SubscriptionClosedError:
            if self._closed:
                raise StopAsyncIteration from None
            raise
        pos = cursor.pos
        cursor.pos = pos + 1
        return cursor.ready[pos]  # type: ignore[no-any-return]

    async def receive(self) -> E:
        """The next event (waits for one).

        Raises:
            SubscriptionClosedError: the handle was closed.
            SlowConsumerError: a LOSSLESS buffer overflowed (after what it held was delivered).
            ChannelError / ConnectionClosedError: the feed can no longer serve this handle.
        """
        cursor = self._cursor
        pos = cursor.pos
        if pos < len(cursor.ready):
            await trio.lowlevel.checkpoint_if_cancelled()
            cursor.pos = pos + 1
            return cursor.ready[pos]  # type: ignore[no-any-return]
        await self._refill()
        pos = cursor.pos
        cursor.pos = pos + 1
        return cursor.ready[pos]  # type: ignore[no-any-return]

    def receive_nowait(self) -> E:
        """The next event if one is buffered, as a trio memory channel's ``receive_nowait``.

        Raises:
            trio.WouldBlock: no event is buffered now.
            SubscriptionClosedError, SlowConsumerError, DataGapError, ...: as :meth:`receive`.
        """
        cursor = self._cursor
        pos = cursor.pos
        if pos >= len(cursor.ready):
            if not self._fill():  # may raise DataGapError
                self._raise_if_done()
                raise trio.WouldBlock
            pos = 0
        cursor.pos = pos + 1
        return cursor.ready[pos]  # type: ignore[no-any-return]

    async def receive_batch(self) -> list[E]:
        """Every event available now, in arrival order (waits until there is at least one)."""
        cursor = self._cursor
        if cursor.pos < len(cursor.ready):
            await trio.lowlevel.checkpoint_if_cancelled()
            batch: list[E] = cursor.ready[cursor.pos :]
            cursor.ready, cursor.pos = [], 0
            await trio.lowlevel.cancel_shielded_checkpoint()
            return batch
        await self._refill()
        batch = cursor.ready[cursor.pos :] if cursor.pos else cursor.ready
        cursor.ready, cursor.pos = [], 0
        return batch

    def batches(self) -> AsyncIterator[list[E]]:
        """Iterate over batches of events (``async for batch in rx.batches()``) until closed."""
        return _Batches(self)

    def statistics(self) -> SubscriptionStatistics:
        """This handle's counters."""
        buffer = self._buffer
        return SubscriptionStatistics(
            received=self._received,
            delivered=self._delivered,
            buffered=len(buffer) + len(self._cursor.ready) - self._cursor.pos,
            dropped=buffer.dropped,
            conflated=buffer.conflated,
            gaps=self._gaps,
            skipped=self._skipped,
        )

    # --- internals: producer side (called by the feed, synchronously) ---

    def _push(self, events: list[E], symbols: list[str] | None = None) -> None:
        # `symbols`, when given, are the events' symbols in order (saves reading them again).
        if self._error is not None or self._closed:
            self._buffer.dropped += len(events)
            return
        self._received += len(events)
        if not self._buffer.push(events, symbols):
            self._fail(
                SlowConsumerError(
                    f"{self.event_type.__name__} subscription fell behind: its buffer of"
                    f" {self._max_buffer} events was full"
                )
            )
            return
        self._lot.unpark_all()

    def _fail(self, error: BaseException) -> None:
        """Fail this handle: the consumer gets ``error`` once the buffer is drained."""
        if self._error is None:
            self._error = error
            self._host.detach(self)
        self._lot.unpark_all()

    def _mark_gap(self) -> None:
        self._gaps += 1
        self._notify_gap(DataGapError(f"{self.event_type.__name__} events may be missing here"))

    def _mark_skipped(self, events: int, reason: str) -> None:
        """The server sent data of this handle's type that could not be decoded."""
        self._skipped += events
        name = self.event_type.__name__
        what = f"{events} {name} event{'' if events == 1 else 's'}" if events else f"{name} data"
        self._notify_gap(MalformedDataError(f"skipped {what} the server sent malformed: {reason}"))

    def _notify_gap(self, error: DataGapError) -> None:
        if self.notify_gaps and self._error is None and not self._closed:
            self._buffer.mark_gap(error)
            self._lot.unpark_all()

    def _fill(self) -> bool:
        """Move the next batch from the buffer into the cursor; ``False`` if there is none.

        Raises:
            DataGapError: a gap is next (it is taken; the next call goes on after it).
        """
        buffer = self._buffer
        while buffer.pending():
            batch = buffer.take()
            if batch:
                self._delivered += len(batch)
                cursor = self._cursor
                cursor.ready, cursor.pos = batch, 0
                return True
        return False

    def _raise_if_done(self) -> None:
        """With nothing left to read: raise the handle's error, or that it is closed."""
        if self._error is not None:
            # the same error for every later call, each with a traceback of its own
            raise self._error.with_traceback(None)
        if self._closed:
            raise SubscriptionClosedError(f"{self.event_type.__name__} subscription is closed")

    async def _refill(self) -> None:
        """Wait until the cursor has an unread event (call it only when it has none).

        One checkpoint: cancellation is checked first, then there is exactly one schedule point
        (a shielded one, or the wait for data), and only after it is a batch taken and stored
        in the cursor, with no schedule point between that and the caller's read. So a
        cancelled reader loses nothing, and two tasks reading one handle each get different
        events: whoever resumes second finds the cursor already refilled and reads on from it.
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        cursor = self._cursor
        if self._buffer.pending():
            await trio.lowlevel.cancel_shielded_checkpoint()
        while cursor.pos >= len(cursor.ready):
            if not self._fill():  # may raise DataGapError
                self._raise_if_done()
                await self._lot.park()

    def _require_open(self) -> None:
        if self._closed or not self._attached:
            raise SubscriptionClosedError("the subscription is not open")


class _Batches(Generic[E]):
    """The iterator behind :meth:`Subscription.batches` (a class, not an async generator)."""

    def __init__(self, subscription: Subscription[E]) -> None:
        self._subscription = subscription

    def __aiter__(self) -> _Batches[E]:
        return self

    async def __anext__(self) -> list[E]:
        try:
            return await self._subscription.receive_batch()
        except SubscriptionClosedError:
            if self._subscription._closed:
                raise StopAsyncIteration from None
            raise


def _check_symbols(symbols: Iterable[str], event_type: type[Event] | None = None) -> list[str]:
    if isinstance(symbols, str):
        raise TypeError("symbols must be an iterable of strings, not one string")
    out = list(symbols)
    for s in out:
        if not isinstance(s, str) or not s:
            raise ValueError(f"symbol must be a non-empty string, got {s!r}")
    if event_type is not None:
        check_symbols_for(event_type, out)  # candle symbols: the parser's SymbolError
    return out
