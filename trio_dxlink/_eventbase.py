"""What every market event is made of: the base classes, event flags and index packing.

:mod:`trio_dxlink.events` re-exports all of it; import it from there.
"""

from __future__ import annotations

import datetime as _dt
import enum
from typing import ClassVar

__all__ = [
    "Event",
    "EventFlag",
    "IndexedEvent",
    "TimeSeriesEvent",
    "index_from_time",
    "sequence_from_index",
    "time_from_index",
]


_EPOCH = _dt.datetime(1970, 1, 1, tzinfo=_dt.timezone.utc)


class EventFlag(enum.IntFlag):
    """Bits of ``event_flags`` on indexed events (see the protocol reference, §6.4)."""

    TX_PENDING = 0x01
    REMOVE_EVENT = 0x02
    SNAPSHOT_BEGIN = 0x04
    SNAPSHOT_END = 0x08
    SNAPSHOT_SNIP = 0x10
    SNAPSHOT_MODE = 0x40
    REMOVE_SYMBOL = 0x80


def time_from_index(index: int) -> int:
    """The epoch-millisecond time packed into a time-series event's ``index``."""
    return (index >> 32) * 1000 + ((index >> 22) & 0x3FF)


def sequence_from_index(index: int) -> int:
    """The 22-bit sequence number packed into a time-series event's ``index``."""
    return index & 0x3FFFFF


def index_from_time(time_ms: int, sequence: int = 0) -> int:
    """Pack an epoch-millisecond time and a sequence into a time-series ``index``."""
    if not 0 <= sequence <= 0x3FFFFF:
        raise ValueError(f"sequence {sequence} does not fit in 22 bits")
    seconds, millis = divmod(time_ms, 1000)
    return (seconds << 32) | (millis << 22) | sequence


class Event:
    """Base class of every market event.

    The fields declared here (and on :class:`IndexedEvent` and :class:`TimeSeriesEvent`) are
    the ones every subclass must have; :func:`~trio_dxlink.events.event_type` checks that a
    declared type does.

    Class attributes:
        EVENT_TYPE: the dxLink event type name (``"Quote"``).
        WIRE_NAMES: dxLink field name for each attribute, in declaration order.
    """

    __slots__ = ()

    EVENT_TYPE: ClassVar[str]
    WIRE_NAMES: ClassVar[dict[str, str]]

    event_symbol: str
    event_time: int

    @classmethod
    def wire_fields(cls) -> tuple[str, ...]:
        """The dxLink field names to request for this type in FEED_SETUP, in order."""
        return tuple(cls.WIRE_NAMES.values())


class IndexedEvent(Event):
    """An event that lives in a collection keyed by ``index`` (orders, time series).

    ``event_flags`` tells how the event relates to snapshots and transactions.
    """

    __slots__ = ()

    event_flags: int
    index: int

    @property
    def flags(self) -> EventFlag:
        """``event_flags`` as an :class:`EventFlag`."""
        return EventFlag(self.event_flags & 0xFF)

    @property
    def tx_pending(self) -> bool:
        """A transaction spanning several events is still in progress."""
        return bool(self.event_flags & EventFlag.TX_PENDING)

    @property
    def remove_event(self) -> bool:
        """This event deletes the entry with the same ``index``."""
        return bool(self.event_flags & EventFlag.REMOVE_EVENT)

    @property
    def snapshot_begin(self) -> bool:
        """This event starts a new snapshot."""
        return bool(self.event_flags & EventFlag.SNAPSHOT_BEGIN)

    @property
    def snapshot_end(self) -> bool:
        """This event ends a snapshot (all data sent)."""
        return bool(self.event_flags & EventFlag.SNAPSHOT_END)

    @property
    def snapshot_snip(self) -> bool:
        """This event ends a snapshot that was cut short by a data limit."""
        return bool(self.event_flags & EventFlag.SNAPSHOT_SNIP)


class TimeSeriesEvent(IndexedEvent):
    """An indexed event whose ``index`` encodes its time (Candle, TimeAndSale, Greeks, ...)."""

    __slots__ = ()

    time: int
    sequence: int

    @property
    def time_dt(self) -> _dt.datetime:
        """``time`` (epoch milliseconds) as an aware UTC datetime (``time`` stays the int)."""
        return _EPOCH + _dt.timedelta(milliseconds=self.time)

    @property
    def index_time(self) -> int:
        """The epoch-millisecond time encoded in ``index``."""
        return time_from_index(self.index)

    @property
    def index_sequence(self) -> int:
        """The sequence number encoded in ``index``."""
        return sequence_from_index(self.index)
