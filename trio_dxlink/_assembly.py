"""Consistent views of indexed events: snapshots, transactions and removals (pure, no I/O).

Indexed events (Candle, TimeAndSale, Order, ...) are not independent values: each one upserts
or removes an entry, keyed by ``index``, of a collection that belongs to one (event type,
symbol, source). The server marks which events belong together with ``event_flags``
(protocol reference §6.4 and §6.7):

* a run of events flagged ``TX_PENDING`` is one transaction, ended by the first event without
  the flag, and must be applied as one;
* ``SNAPSHOT_BEGIN`` starts a snapshot that *replaces* the whole collection when it ends with
  ``SNAPSHOT_END`` or ``SNAPSHOT_SNIP`` (cut short by a data limit);
* ``REMOVE_EVENT`` deletes the entry with that ``index``; in a snapshot, such an event is a
  marker (the empty snapshot, the synthetic end of a history), never an entry.

The assemblers here apply those rules and publish only consistent results. Feed them the
events of their (type, symbol, source) in wire order, as many or as few per call as you have;
they return :class:`Update` objects, and the outcome never depends on how the events were
split into calls.

The model:

* ``assembler.events()`` is always a consistent view: the last completed snapshot plus every
  completed transaction since, never half of one. Its entries are the events as received
  (``event_flags`` included; an index that arrived as a decimal string is an ``int`` here).
  A time series is ordered oldest first (by ``index``, which orders by time, then sequence:
  §6.5); an indexed collection keeps the order in which entries first appeared. Building it
  costs O(n) after a change; change sets are the cheap way to follow a live view.
* Every :class:`Update` is either a whole new state (``snapshot=True``: ``events`` is the
  complete view, replacing everything before it) or one consistent change set
  (``snapshot=False``: ``events`` are the entries added or replaced and ``removed`` the entries
  that left, each index at most once, with its net effect over the transaction). Applying the
  updates in order to an empty dict keyed by ``index`` always reproduces ``events()``.
* ``after_gap`` on an update says events may be missing between it and the previous update:
  the connection was lost (:meth:`~TimeSeriesAssembler.connection_lost`) or held events were
  discarded at the cap (:class:`Overflow`).
* ``status`` (:class:`SnapshotStatus`) says whether the view rests on a snapshot the server
  completed since the start or the last gap, and how that snapshot ended.

Hostile input never raises: events of another type, symbol or source, malformed flags or
indices, an end without a beginning, a beginning inside a snapshot, are counted in
:class:`AssemblyStats` and logged once per assembler and kind. Transactions and snapshots are
held in memory only up to ``max_pending`` events; past that, the held events are dropped, the
rest of that run is skipped, and :meth:`feed` returns an :class:`Overflow`. The only exception
raised on purpose is :class:`~trio_dxlink.LocalProtocolError`, from the constructors, when
they are given an event type of the wrong kind.
"""

from __future__ import annotations

import enum
import logging
import re
from collections.abc import Iterable, Iterator
from typing import Any, Generic, TypeVar, cast

import attrs

from ._exceptions import LocalProtocolError
from .events import (
    AnalyticOrder,
    Event,
    EventFlag,
    IndexedEvent,
    Order,
    SpreadOrder,
    TimeSeriesEvent,
)

__all__ = [
    "DEFAULT_MAX_PENDING",
    "DEFAULT_SOURCE",
    "AssemblyStats",
    "IndexedAssembler",
    "Overflow",
    "SnapshotStatus",
    "TimeSeriesAssembler",
    "Update",
    "event_source",
]

log = logging.getLogger("trio_dxlink")

E = TypeVar("E", bound=IndexedEvent)
TS = TypeVar("TS", bound=TimeSeriesEvent)

DEFAULT_SOURCE = "DEFAULT"
"""The source of every time-series event and of indexed events without a ``source`` field."""

DEFAULT_MAX_PENDING = 500_000
"""How many events an assembler holds at most while a transaction or snapshot is open."""

_TX_PENDING = int(EventFlag.TX_PENDING)
_REMOVE_EVENT = int(EventFlag.REMOVE_EVENT)
_SNAPSHOT_BEGIN = int(EventFlag.SNAPSHOT_BEGIN)
_SNAPSHOT_END = int(EventFlag.SNAPSHOT_END)
_SNAPSHOT_SNIP = int(EventFlag.SNAPSHOT_SNIP)
_SNAPSHOT_ENDS = _SNAPSHOT_END | _SNAPSHOT_SNIP

# Order-like events whose size of 0 or NaN also means "this entry is gone" (§6.7, step 5).
_SIZED_ORDERS: tuple[type[IndexedEvent], ...] = (Order, SpreadOrder, AnalyticOrder)

_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1
_DECIMAL = re.compile(r"-?[0-9]{1,19}")


class SnapshotStatus(enum.Enum):
    """What the current view of an assembler rests on."""

    PENDING = "pending"
    """No snapshot has completed since the assembler was created or since the last gap; the
    view (if any) is older data or unconfirmed changes."""
    COMPLETE = "complete"
    """The last snapshot ended with ``SNAPSHOT_END``: the server sent all it had."""
    SNIPPED = "snipped"
    """The last snapshot ended with ``SNAPSHOT_SNIP``: a data limit cut the older part off."""
    EMPTY = "empty"
    """The last snapshot held no entries (for example one event flagged SNAPSHOT_BEGIN,
    SNAPSHOT_END and REMOVE_EVENT), however it ended."""


@attrs.frozen
class Update(Generic[E]):
    """One consistent step of an assembler's view (see the module docstring for the model).

    Attributes:
        symbol: the event symbol of the collection.
        source: its source (:data:`DEFAULT_SOURCE` for time series).
        snapshot: ``True`` if ``events`` is the whole new view, replacing everything before;
            ``False`` if this is a change set applied on top of the previous view.
        after_gap: events may be missing between the previous update and this one (the
            connection was lost, or held events were dropped at the cap).
        status: the assembler's :class:`SnapshotStatus` after this update.
        events: for a snapshot, the complete view in view order; for a change set, the entries
            added or replaced, in view order, each index once with its final value.
        removed: for a change set, the entries that left the view (their last value); always
            empty for a snapshot.
    """

    symbol: str
    source: str
    snapshot: bool
    after_gap: bool
    status: SnapshotStatus
    events: tuple[E, ...]
    removed: tuple[E, ...] = ()


@attrs.frozen
class Overflow:
    """A transaction or snapshot outgrew ``max_pending`` and was dropped.

    The assembler keeps its last consistent view, skips the rest of the run, sets its status
    to :attr:`SnapshotStatus.PENDING` and marks its next update ``after_gap``. Asking the
    server for a fresh snapshot (resubscribing) brings it back in step.

    Attributes:
        symbol: the event symbol of the collection.
        source: its source.
        dropped: how many held events were dropped at this point (the rest of the run is
            counted in :attr:`AssemblyStats.dropped` as it arrives).
        in_snapshot: the run was a snapshot (rather than a transaction of live updates).
    """

    symbol: str
    source: str
    dropped: int
    in_snapshot: bool


@attrs.define
class AssemblyStats:
    """Counters of one assembler (or the sum over the assemblers of a collection)."""

    events: int = 0
    """Events fed in, including skipped ones."""
    foreign: int = 0
    """Skipped: another event type, symbol or source."""
    malformed: int = 0
    """Skipped: ``event_flags`` not an integer, or ``index`` not a 64-bit integer (a decimal
    string is accepted and converted)."""
    stray_ends: int = 0
    """SNAPSHOT_END or SNAPSHOT_SNIP outside a snapshot (applied as an ordinary event)."""
    restarted_snapshots: int = 0
    """SNAPSHOT_BEGIN while a snapshot was already open (the open one is dropped)."""
    abandoned: int = 0
    """Held events dropped because a new snapshot began or the connection was lost."""
    overflows: int = 0
    """Runs dropped at the ``max_pending`` cap."""
    dropped: int = 0
    """Events dropped at the cap, including the skipped rest of each overflowed run."""
    snapshots: int = 0
    """Snapshots applied."""
    changes: int = 0
    """Change sets applied (published or not: a change set with no net effect is not)."""

    def add(self, other: AssemblyStats) -> None:
        """Add ``other``'s counters to these."""
        for field in attrs.fields(AssemblyStats):
            name = field.name
            setattr(self, name, getattr(self, name) + getattr(other, name))


def event_source(event: Event) -> str:
    """The source an indexed event belongs to: its ``source`` field when that is a non-empty
    string (Order, SpreadOrder, AnalyticOrder), :data:`DEFAULT_SOURCE` otherwise."""
    source = getattr(event, "source", None)
    if source.__class__ is str and source:
        return source
    return DEFAULT_SOURCE


def _wire_index(value: object) -> int | None:
    """``value`` as a 64-bit index, accepting a decimal string (§12); ``None`` if it is not."""
    if value.__class__ is int:
        number = value
    elif value.__class__ is str and _DECIMAL.fullmatch(value):
        number = int(value)
    else:
        return None
    return number if _INT64_MIN <= number <= _INT64_MAX else None


class _Assembler(Generic[E]):
    """The §6.7 state machine for one (event type, symbol, source); see the module docstring."""

    _ordered_by_index: bool = False

    def __init__(
        self,
        event_type: type[E],
        symbol: str,
        source: str,
        *,
        max_pending: int,
        sizeless_removes: bool,
    ) -> None:
        if max_pending < 1:
            raise LocalProtocolError(f"max_pending must be at least 1, got {max_pending!r}")
        self.event_type = event_type
        self.symbol = symbol
        self.source = source
        self.max_pending = max_pending
        self.stats = AssemblyStats()
        self._sizeless_removes = sizeless_removes
        self._status = SnapshotStatus.PENDING
        self._entries: dict[int, E] = {}
        self._view: tuple[E, ...] | None = ()
        self._pending: list[E] = []
        self._partial = False  # a snapshot has begun and not ended
        self._complete = False  # a snapshot has ended; it replaces the view when applied
        self._snipped = False  # ... and it ended with SNAPSHOT_SNIP
        self._skipping = False  # a run overflowed: drop its events until it ends
        self._gap = False  # the next update is after a gap
        self._warned: set[str] = set()

    # --- reading the view ---

    @property
    def status(self) -> SnapshotStatus:
        """What the current view rests on."""
        return self._status

    @property
    def snapshot_in_progress(self) -> bool:
        """A snapshot has begun and not yet been applied (the view is still the old one)."""
        return self._partial or self._complete

    def events(self) -> tuple[E, ...]:
        """The current consistent view, in view order."""
        view = self._view
        if view is None:
            if self._ordered_by_index:
                view = tuple(self._entries[i] for i in sorted(self._entries))
            else:
                view = tuple(self._entries.values())
            self._view = view
        return view

    def get(self, index: int) -> E | None:
        """The entry with this ``index`` in the current view, if there is one."""
        return self._entries.get(index)

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[E]:
        return iter(self.events())

    # --- inputs ---

    def connection_lost(self) -> None:
        """The events stopped (connection lost, or a resubscription is about to be sent).

        Whatever was held (a transaction or snapshot in flight) is dropped; the view stays as
        it was but its status becomes :attr:`SnapshotStatus.PENDING`, and the next update is
        marked ``after_gap``. The next snapshot replaces the view entirely.
        """
        if self._pending:
            self.stats.abandoned += len(self._pending)
            self._pending.clear()
        self._partial = self._complete = self._snipped = self._skipping = False
        self._status = SnapshotStatus.PENDING
        self._gap = True

    def feed(self, events: Iterable[Event]) -> list[Update[E] | Overflow]:
        """Process events in wire order; return what became consistent, in order."""
        out: list[Update[E] | Overflow] = []
        stats = self.stats
        for raw in events:
            stats.events += 1
            event = self._admit(raw)
            if event is None:
                continue
            flags = event.event_flags
            if flags & _SNAPSHOT_BEGIN:
                if self._partial:
                    stats.restarted_snapshots += 1
                    self._warn("restart", "a snapshot began inside another; dropping the first")
                stats.abandoned += len(self._pending)
                self._pending.clear()
                self._partial = True
                self._complete = self._snipped = self._skipping = False
            if flags & _SNAPSHOT_ENDS:
                if self._partial:
                    self._partial = False
                    self._complete = True
                    self._snipped = bool(flags & _SNAPSHOT_SNIP)
                else:
                    stats.stray_ends += 1
                    self._warn("stray", "a snapshot end without a beginning (flags %#x)", flags)
            hold = self._partial or bool(flags & _TX_PENDING)
            if self._skipping:
                stats.dropped += 1
                if not hold:
                    self._skipping = self._complete = False
                continue
            self._pending.append(event)
            if not hold:
                update = self._apply()
                if update is not None:
                    out.append(update)
            elif len(self._pending) > self.max_pending:
                out.append(self._overflow())
        return out

    # --- internals ---

    def _admit(self, raw: Event) -> E | None:
        """``raw`` if it belongs here and is well formed (index as an int), else ``None``."""
        if (
            raw.__class__ is not self.event_type
            or raw.event_symbol != self.symbol
            or event_source(raw) != self.source
        ):
            self.stats.foreign += 1
            self._warn("foreign", "an event of another collection was fed to %r", self)
            return None
        event = raw
        flags = event.event_flags
        index = _wire_index(event.index)
        if flags.__class__ is not int or index is None:
            self.stats.malformed += 1
            self._warn("malformed", "an event with malformed flags or index in %r", self)
            return None
        if index is not event.index:
            event = cast(E, attrs.evolve(cast(Any, event), index=index))
        return event

    def _removes(self, event: E) -> bool:
        if event.event_flags & _REMOVE_EVENT:
            return True
        if self._sizeless_removes:
            size = getattr(event, "size", None)
            return size == 0 or size != size  # zero or NaN
        return False

    def _apply(self) -> Update[E] | None:
        pending = self._pending
        self._pending = []
        if self._complete:
            return self._apply_snapshot(pending)
        return self._apply_changes(pending)

    def _apply_snapshot(self, pending: list[E]) -> Update[E]:
        entries: dict[int, E] = {}
        for event in pending:
            if self._removes(event):
                entries.pop(event.index, None)
            else:
                entries[event.index] = event
        self._entries = entries
        self._view = None
        if not entries:
            self._status = SnapshotStatus.EMPTY
        elif self._snipped:
            self._status = SnapshotStatus.SNIPPED
        else:
            self._status = SnapshotStatus.COMPLETE
        self._complete = self._snipped = False
        self.stats.snapshots += 1
        after_gap, self._gap = self._gap, False
        return Update(self.symbol, self.source, True, after_gap, self._status, self.events())

    def _apply_changes(self, pending: list[E]) -> Update[E] | None:
        entries = self._entries
        self.stats.changes += 1
        if len(pending) == 1:  # the common live update, without the bookkeeping below
            event = pending[0]
            if self._removes(event):
                old = entries.pop(event.index, None)
                return None if old is None else self._changes((), (old,))
            entries[event.index] = event
            return self._changes((event,), ())
        before: dict[int, E | None] = {}
        for event in pending:
            index = event.index
            if index not in before:
                before[index] = entries.get(index)
            if self._removes(event):
                entries.pop(index, None)
            else:
                entries[index] = event
        changed: list[E] = []
        removed: list[E] = []
        for index, old in before.items():
            new = entries.get(index)
            if new is None:
                if old is not None:
                    removed.append(old)
            elif new is not old:
                changed.append(new)
        if not changed and not removed:
            return None
        if self._ordered_by_index:
            changed.sort(key=_by_index)
            removed.sort(key=_by_index)
        return self._changes(tuple(changed), tuple(removed))

    def _changes(self, changed: tuple[E, ...], removed: tuple[E, ...]) -> Update[E]:
        """Publish a change set that has been applied to the entries."""
        self._view = None
        after_gap, self._gap = self._gap, False
        return Update(self.symbol, self.source, False, after_gap, self._status, changed, removed)

    def _overflow(self) -> Overflow:
        dropped = len(self._pending)
        self._pending.clear()
        in_snapshot = self._partial or self._complete
        self._skipping = True
        self._complete = self._snipped = False
        self._status = SnapshotStatus.PENDING
        self._gap = True
        self.stats.overflows += 1
        self.stats.dropped += dropped
        self._warn("overflow", "%r held more than %d events; dropped them", self, self.max_pending)
        return Overflow(self.symbol, self.source, dropped, in_snapshot)

    def _warn(self, kind: str, message: str, *args: object) -> None:
        """Log the first anomaly of each kind per assembler; the stats count them all."""
        if kind not in self._warned:
            self._warned.add(kind)
            log.warning(message + " (further ones are only counted)", *args)

    def __repr__(self) -> str:
        name = type(self).__name__
        return f"<{name} {self.event_type.__name__} {self.symbol!r} {self.source} {self._status}>"


def _by_index(event: IndexedEvent) -> int:
    return event.index


class TimeSeriesAssembler(_Assembler[TS]):
    """The consistent view of one time series: ``(event_type, symbol)``, source DEFAULT.

    For the time-series types of :mod:`trio_dxlink.events` (subclasses of
    :class:`~trio_dxlink.events.TimeSeriesEvent`: Candle, TimeAndSale, Greeks, TheoPrice,
    Underlying). Entries are keyed by ``index`` and the view is ordered oldest first (by
    ``index``: time, then sequence). ``symbol`` must be the symbol the server puts in
    ``eventSymbol``, which for candles is the normalised form (``SPX{=h}`` for ``SPX{=1h}``).

    Raises:
        LocalProtocolError: ``event_type`` is not a time-series type, or ``max_pending < 1``.
    """

    _ordered_by_index = True

    def __init__(
        self, event_type: type[TS], symbol: str, *, max_pending: int = DEFAULT_MAX_PENDING
    ) -> None:
        if not (isinstance(event_type, type) and issubclass(event_type, TimeSeriesEvent)):
            raise LocalProtocolError(f"{event_type!r} is not a time-series event type")
        super().__init__(
            event_type, symbol, DEFAULT_SOURCE, max_pending=max_pending, sizeless_removes=False
        )


class IndexedAssembler(_Assembler[E]):
    """The consistent view of one indexed collection: ``(event_type, symbol, source)``.

    For indexed events that are not time ordered (Order, SpreadOrder, AnalyticOrder per
    source; OptionSale and Series with source DEFAULT). Entries are keyed by ``index`` and the
    view keeps the order in which entries first appeared. For Order, SpreadOrder and
    AnalyticOrder an event whose ``size`` is 0 or NaN removes its entry, like REMOVE_EVENT.
    Events of other sources are skipped
    (:class:`~trio_dxlink._indexed_sources.IndexedSources` follows them all).

    Raises:
        LocalProtocolError: ``event_type`` is not an indexed type, or ``max_pending < 1``.
    """

    def __init__(
        self,
        event_type: type[E],
        symbol: str,
        source: str = DEFAULT_SOURCE,
        *,
        max_pending: int = DEFAULT_MAX_PENDING,
    ) -> None:
        if not (isinstance(event_type, type) and issubclass(event_type, IndexedEvent)):
            raise LocalProtocolError(f"{event_type!r} is not an indexed event type")
        super().__init__(
            event_type,
            symbol,
            source,
            max_pending=max_pending,
            sizeless_removes=issubclass(event_type, _SIZED_ORDERS),
        )
