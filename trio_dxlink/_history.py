"""One-shot history and live time-series models, built on the assemblers and history lanes.

* :meth:`DXLinkFeed.history <trio_dxlink.DXLinkFeed.history>` (:func:`fetch_history`) asks
  for one (type, symbol) from ``start`` on a history lane, waits for the snapshot to be
  consistent, removes the subscription and returns a frozen :class:`History`.
* :meth:`DXLinkFeed.time_series <trio_dxlink.DXLinkFeed.time_series>` (:class:`TimeSeries`)
  keeps one :class:`~trio_dxlink._assembly.TimeSeriesAssembler` per symbol and yields its
  :class:`~trio_dxlink._assembly.Update` objects: each symbol's snapshot once it is complete,
  then change sets; after a reconnect a fresh snapshot with ``after_gap=True``.

Each request has a wire subscription of its own (``_lanes.py``), so neither disturbs another
handle on the same symbol, and both are paced with every other request that needs a snapshot.
"""

from __future__ import annotations

import datetime as dt
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

import attrs
import trio

from ._arguments import check_symbols_for, epoch_ms, now_ms
from ._assembly import SnapshotStatus, TimeSeriesAssembler, Update
from ._exceptions import SlowConsumerError, SubscriptionClosedError
from ._lanes import LaneRequest
from ._subscription import Subscription
from .events import Event, EventFlag, TimeSeriesEvent

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = ["HandleLane", "History", "LaneHost", "TimeSeries", "fetch_history", "history_start"]

TS = TypeVar("TS", bound=TimeSeriesEvent)

_BEGIN = int(EventFlag.SNAPSHOT_BEGIN)
_ENDS = int(EventFlag.SNAPSHOT_END | EventFlag.SNAPSHOT_SNIP)

DEFAULT_MAX_UPDATES = 10_000
"""Updates a :class:`TimeSeries` holds for a consumer that has not read them yet."""


class LaneHost(Protocol):
    """What the models need of the feed: placing and withdrawing lane requests."""

    def lane_add(self, request: LaneRequest) -> None: ...

    def lane_remove(self, request: LaneRequest) -> None: ...


def check_time_series_type(event_type: object) -> None:
    """``event_type`` must be a time-series event class (Candle, TimeAndSale, Greeks, ...)."""
    if not (isinstance(event_type, type) and issubclass(event_type, TimeSeriesEvent)):
        raise TypeError(
            f"history needs a time-series event type (Candle, TimeAndSale, Greeks, TheoPrice,"
            f" Underlying), got {event_type!r}"
        )


def history_start(value: dt.datetime | int, what: str) -> int:
    """A start time as epoch ms (see ``_arguments``); one in the future becomes now, which
    asks for no history, only what comes next."""
    return min(epoch_ms(value, what), now_ms())


@attrs.frozen
class History(Generic[TS]):
    """The result of :meth:`DXLinkFeed.history <trio_dxlink.DXLinkFeed.history>`.

    Attributes:
        event_type: the event class asked for.
        symbol: the symbol as asked (events carry the server's spelling, which for candles
            is the normalised one).
        start: the start asked for, epoch ms.
        end: the end asked for, epoch ms, or ``None`` (up to now).
        status: how the server's snapshot ended: :attr:`~SnapshotStatus.COMPLETE` (all it
            had from ``start``), :attr:`~SnapshotStatus.SNIPPED` (a server limit cut the
            older part off) or :attr:`~SnapshotStatus.EMPTY` (nothing at all).
        events: the events with ``start <= time <= end``, oldest first, without the
            snapshot's end markers; each once, with its latest value.
        reaches_start: whether the data covers everything back to ``start``: the snapshot was
            not snipped and its oldest event (or end marker) is at or before ``start``. When
            ``False``, there may be older data the server did not send.
    """

    event_type: type[TS]
    symbol: str
    start: int
    end: int | None
    status: SnapshotStatus
    events: tuple[TS, ...]
    reaches_start: bool

    @property
    def first_time(self) -> int | None:
        """The time of the oldest event (epoch ms), ``None`` if there is none."""
        return self.events[0].time if self.events else None

    def __len__(self) -> int:
        return len(self.events)

    def __iter__(self) -> Iterator[TS]:
        return iter(self.events)

    def rows(self, *, datetimes: bool = False) -> list[dict[str, Any]]:
        """The events as plain dicts (field name → value), oldest first: what
        ``pandas.DataFrame(result.rows())`` or ``polars.DataFrame(result.rows())`` takes.
        With ``datetimes=True`` the ``time`` column holds aware UTC datetimes."""
        names = [f.name for f in attrs.fields(self.event_type)]  # type: ignore[arg-type]
        out = [{name: getattr(event, name) for name in names} for event in self.events]
        if datetimes:
            for row, event in zip(out, self.events, strict=True):
                row["time"] = event.time_dt
        return out


class HandleLane:
    """A subscription handle as the owner of one lane request (raw events, as they come)."""

    __slots__ = ("handle",)

    def __init__(self, handle: Subscription[Any]) -> None:
        self.handle = handle

    def lane_events(self, request: LaneRequest, events: list[Event]) -> None:
        self.handle._push(events)

    def lane_failed(self, request: LaneRequest, error: BaseException) -> None:
        self.handle._fail(error)

    def lane_reset(self, request: LaneRequest) -> None:
        pass  # the feed marks the gap on every handle


class _Series(Generic[TS]):
    """One requested (type, symbol): its assembler, made with the symbol the server echoes,
    and the oldest time (end markers included) of the last snapshot."""

    def __init__(self, event_type: type[TS]) -> None:
        self.event_type = event_type
        self.assembler: TimeSeriesAssembler[TS] | None = None
        self._oldest: int | None = None  # in the snapshot being received
        self._ended_oldest: int | None = None  # ... when it ended
        self.snapshot_oldest: int | None = None  # of the snapshot last applied

    def feed(self, events: Sequence[Event]) -> list[Update[TS]]:
        if self.assembler is None:
            self.assembler = TimeSeriesAssembler(self.event_type, events[0].event_symbol)
        for event in events:
            flags = getattr(event, "event_flags", 0)
            time = getattr(event, "time", None)
            if flags & _BEGIN:
                self._oldest = None
            if time.__class__ is int and (self._oldest is None or time < self._oldest):
                self._oldest = time
            if flags & _ENDS:
                self._ended_oldest = self._oldest
        updates = [u for u in self.assembler.feed(events) if isinstance(u, Update)]
        if any(u.snapshot for u in updates):
            self.snapshot_oldest = self._ended_oldest
        return updates

    def connection_lost(self) -> None:
        if self.assembler is not None:
            self.assembler.connection_lost()
        self._oldest = None


class _HistoryOwner(Generic[TS]):
    """The lane owner of one :func:`fetch_history` call."""

    def __init__(self, event_type: type[TS]) -> None:
        self.series = _Series(event_type)
        self.snapshot: Update[TS] | None = None
        self.error: BaseException | None = None
        self.done = trio.Event()

    def lane_events(self, request: LaneRequest, events: list[Event]) -> None:
        for update in self.series.feed(events):
            if update.snapshot and self.snapshot is None:
                self.snapshot = update
                self.done.set()

    def lane_failed(self, request: LaneRequest, error: BaseException) -> None:
        if self.error is None and self.snapshot is None:
            self.error = error
        self.done.set()

    def lane_reset(self, request: LaneRequest) -> None:
        self.series.connection_lost()


async def fetch_history(
    host: LaneHost,
    event_type: type[TS],
    symbol: str,
    start: dt.datetime | int,
    end: dt.datetime | int | None = None,
) -> History[TS]:
    """See :meth:`DXLinkFeed.history <trio_dxlink.DXLinkFeed.history>`."""
    check_time_series_type(event_type)
    if not isinstance(symbol, str) or not symbol:
        raise ValueError(f"symbol must be a non-empty string, got {symbol!r}")
    if symbol == "*":
        raise ValueError("history is for one symbol, not the wildcard '*'")
    check_symbols_for(event_type, [symbol])
    start_ms = epoch_ms(start, "start")
    if start_ms > now_ms():
        raise ValueError(f"start is in the future ({start!r}): there is no history there yet")
    end_ms = None if end is None else epoch_ms(end, "end")
    if end_ms is not None and end_ms < start_ms:
        raise ValueError(f"end ({end!r}) is before start ({start!r})")
    owner: _HistoryOwner[TS] = _HistoryOwner(event_type)
    request = LaneRequest(owner, event_type.EVENT_TYPE, symbol, start_ms)
    host.lane_add(request)
    try:
        await owner.done.wait()
    finally:
        host.lane_remove(request)
    if owner.error is not None:
        raise owner.error
    snapshot = owner.snapshot
    assert snapshot is not None
    events = tuple(
        e for e in snapshot.events if e.time >= start_ms and (end_ms is None or e.time <= end_ms)
    )
    oldest = owner.series.snapshot_oldest
    return History(
        event_type=event_type,
        symbol=symbol,
        start=start_ms,
        end=end_ms,
        status=snapshot.status,
        events=events,
        reaches_start=snapshot.status is not SnapshotStatus.SNIPPED
        and oldest is not None
        and oldest <= start_ms,
    )


class _SeriesOwner(Generic[TS]):
    """The lane owner of one symbol of a :class:`TimeSeries`."""

    def __init__(self, model: TimeSeries[TS], symbol: str) -> None:
        self.model = model
        self.symbol = symbol
        self.series = _Series(model.event_type)
        self.synced = False  # a snapshot was applied since the start or the last gap

    def lane_events(self, request: LaneRequest, events: list[Event]) -> None:
        for update in self.series.feed(events):
            if update.snapshot:
                self.synced = True
            if self.synced:
                self.model._publish(update)

    def lane_failed(self, request: LaneRequest, error: BaseException) -> None:
        self.model._fail(error)

    def lane_reset(self, request: LaneRequest) -> None:
        self.series.connection_lost()
        self.synced = False


class TimeSeries(Generic[TS]):
    """A live, always consistent model of time series; make it with
    :meth:`DXLinkFeed.time_series <trio_dxlink.DXLinkFeed.time_series>`.

    Iterating yields :class:`~trio_dxlink.Update` objects, never half of a transaction: for
    each symbol first its whole snapshot (``update.snapshot`` true, ``update.events`` the
    view, oldest first), then change sets (``update.events`` added or replaced entries,
    ``update.removed`` entries gone). After a reconnect each symbol starts again with a fresh
    snapshot marked ``update.after_gap``; replace what you had with it. ``update.symbol`` is
    the server's spelling (normalised for candles).
    """

    def __init__(
        self,
        host: LaneHost,
        event_type: type[TS],
        symbols: Iterable[str],
        start: dt.datetime | int,
        *,
        max_updates: int = DEFAULT_MAX_UPDATES,
    ) -> None:
        check_time_series_type(event_type)
        if isinstance(symbols, str):
            raise TypeError("symbols must be an iterable of strings, not one string")
        self.symbols = tuple(dict.fromkeys(symbols))
        if not self.symbols or not all(isinstance(s, str) and s and s != "*" for s in self.symbols):
            raise ValueError(f"symbols must be non-empty strings (no wildcard), got {symbols!r}")
        check_symbols_for(event_type, self.symbols)
        self.event_type = event_type
        self.start = history_start(start, "start")
        self.max_updates = max_updates
        self._host = host
        self._owners = {s: _SeriesOwner(self, s) for s in self.symbols}
        self._requests = [
            LaneRequest(owner, event_type.EVENT_TYPE, s, self.start)
            for s, owner in self._owners.items()
        ]
        self._updates: deque[Update[TS]] = deque()
        self._lot = trio.lowlevel.ParkingLot()
        self._error: BaseException | None = None
        self._entered = self._closed = False

    async def __aenter__(self) -> Self:
        if self._entered:
            raise SubscriptionClosedError("a time series can be entered once")
        self._entered = True
        for request in self._requests:
            self._host.lane_add(request)
        await trio.lowlevel.checkpoint()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Withdraw every subscription; iteration ends. Idempotent."""
        if not self._closed:
            self._closed = True
            for request in self._requests:
                self._host.lane_remove(request)
            self._lot.unpark_all()

    def events(self, symbol: str) -> tuple[TS, ...]:
        """The current consistent view of ``symbol`` (as given), oldest first; empty until
        its first snapshot arrived."""
        assembler = self._owners[symbol].series.assembler
        return () if assembler is None else assembler.events()

    def status(self, symbol: str) -> SnapshotStatus:
        """What ``symbol``'s view rests on (``PENDING`` until a snapshot, and after a gap)."""
        owner = self._owners[symbol]
        assembler = owner.series.assembler
        return SnapshotStatus.PENDING if assembler is None else assembler.status

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Update[TS]:
        try:
            return await self.receive()
        except SubscriptionClosedError:
            if self._closed:
                raise StopAsyncIteration from None
            raise

    async def receive(self) -> Update[TS]:
        """The next update (waits for one).

        Raises:
            SubscriptionClosedError: the model was closed.
            SubscriptionRefusedError / ChannelError / ConnectionClosedError /
            SlowConsumerError: it can no longer be served (after what it held was read).
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        while not self._updates:
            if self._error is not None:
                raise self._error.with_traceback(None)
            if self._closed:
                raise SubscriptionClosedError("the time series is closed")
            await self._lot.park()
        update = self._updates.popleft()
        await trio.lowlevel.cancel_shielded_checkpoint()
        return update

    def _publish(self, update: Update[TS]) -> None:
        if self._closed or self._error is not None:
            return
        if len(self._updates) >= self.max_updates:
            self._fail(SlowConsumerError(f"time series fell behind: {self.max_updates} updates"))
            return
        self._updates.append(update)
        self._lot.unpark_all()

    def _fail(self, error: BaseException) -> None:
        if self._error is None:
            self._error = error
            for request in self._requests:
                self._host.lane_remove(request)
        self._lot.unpark_all()
