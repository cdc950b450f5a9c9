"""The buffer behind a subscription handle, one small class per :class:`Overflow` policy.

A :class:`~trio_dxlink.Subscription` allocates only the buffer its policy needs (see
:func:`make_buffer`) and talks to it through the :class:`Buffer` protocol: the producer pushes
whole batches (synchronously, never blocking), the consumer takes whole batches. Each buffer is
always bounded, counts what it dropped and conflated, and keeps the gap markers the handle gives
it where its policy says they belong:

* :class:`LosslessBuffer` keeps every batch, in order, up to ``max_buffer`` events; a batch that
  would exceed the bound is refused (``push`` returns ``False``) and the handle fails. Gap
  markers sit in the stream where they happened; consecutive ones are one marker.
* :class:`LatestBuffer` keeps the newest event per symbol (conflation).
* :class:`DropOldestBuffer` keeps the newest ``max_buffer`` events.

The last two have no stream position to put a gap in: a gap is raised before the next batch.

This module is pure: no trio, no clock. ``push`` and ``take`` run once per batch on the hot path,
so they do their work in as few bytecodes as the policy allows.
"""

from __future__ import annotations

import enum
import operator
from collections import deque
from typing import Generic, Protocol, TypeVar

from ._exceptions import DataGapError
from .events import Event

__all__ = [
    "Buffer",
    "DropOldestBuffer",
    "LatestBuffer",
    "LosslessBuffer",
    "Overflow",
    "make_buffer",
]

E = TypeVar("E", bound=Event)

_SYMBOL = operator.attrgetter("event_symbol")


class Overflow(enum.Enum):
    """What a subscription does when its consumer falls behind."""

    LOSSLESS = "lossless"
    """Keep everything up to ``max_buffer``; beyond that, fail this handle (SlowConsumerError)."""
    LATEST = "latest"
    """Keep only the newest event per symbol (conflation)."""
    DROP_OLDEST = "drop_oldest"
    """Keep the newest ``max_buffer`` events, dropping the oldest."""


class Buffer(Protocol[E]):
    """What a subscription handle needs of its buffer.

    Attributes:
        dropped: events discarded (by the policy, or refused by the handle; the handle adds
            the events it refuses once it is closed or failed).
        conflated: events replaced by a newer one for the same symbol.
    """

    dropped: int
    conflated: int

    def push(self, events: list[E], symbols: list[str] | None) -> bool:
        """Add a batch (``symbols``, when given, are the events' symbols in order).

        ``False`` means the batch was refused because the buffer is full (LOSSLESS only): the
        handle must fail. Never blocks, never raises.
        """
        ...

    def take(self) -> list[E]:
        """Everything to hand over next, oldest first, and forget it (``[]`` if nothing).

        Raises:
            DataGapError: a gap marker is next (it is taken: the next call goes on after it).
        """
        ...

    def pending(self) -> bool:
        """Whether :meth:`take` has something to hand over (events, or a gap to raise)."""
        ...

    def mark_gap(self, error: DataGapError) -> None:
        """Raise ``error`` from :meth:`take` where the policy puts gaps (see the module)."""
        ...

    def symbols_changed(self, count: int) -> None:
        """The handle now wants ``count`` symbols (a LATEST buffer is bounded by them)."""
        ...

    def __len__(self) -> int:
        """Events buffered now (gap markers are not events)."""
        ...


class LosslessBuffer(Generic[E]):
    """Every batch in order, with a running count; a batch beyond ``max_buffer`` is refused."""

    __slots__ = ("_batches", "_count", "conflated", "dropped", "max_buffer")

    def __init__(self, max_buffer: int) -> None:
        self.max_buffer = max_buffer
        self._batches: deque[list[E] | DataGapError] = deque()  # an error marks a gap
        self._count = 0
        self.dropped = 0
        self.conflated = 0  # never: nothing is replaced

    def push(self, events: list[E], symbols: list[str] | None) -> bool:
        n = len(events)
        if self._count + n > self.max_buffer:
            self.dropped += n
            return False
        self._batches.append(events)
        self._count += n
        return True

    def take(self) -> list[E]:
        if not self._batches:
            return []
        batch = self._batches.popleft()
        if isinstance(batch, DataGapError):
            raise batch
        self._count -= len(batch)
        return batch

    def pending(self) -> bool:
        return bool(self._batches)

    def mark_gap(self, error: DataGapError) -> None:
        # In stream order, after what came before; gaps with no event between them are one gap
        # (a server repeating bad data cannot grow the queue).
        batches = self._batches
        if not (batches and isinstance(batches[-1], DataGapError)):
            batches.append(error)

    def symbols_changed(self, count: int) -> None:
        pass

    def __len__(self) -> int:
        return self._count


class LatestBuffer(Generic[E]):
    """The newest event per symbol, in order of last update.

    Conflation is naturally bounded by the symbols subscribed; ``max_buffer`` only bounds what a
    wildcard (``"*"``) handle may collect. Beyond the bound, the symbol updated longest ago goes.
    """

    __slots__ = ("_gap", "_latest", "_limit", "conflated", "dropped", "max_buffer")

    def __init__(self, max_buffer: int) -> None:
        self.max_buffer = max_buffer
        self._limit = max_buffer
        self._latest: dict[str, E] = {}
        self._gap: DataGapError | None = None
        self.dropped = 0
        self.conflated = 0

    def push(self, events: list[E], symbols: list[str] | None) -> bool:
        latest = self._latest
        before = len(latest)
        n = len(events)
        keys = map(_SYMBOL, events) if symbols is None else symbols
        limit = self._limit
        if before + n <= limit:
            latest.update(zip(keys, events, strict=True))
        else:
            # The bound may bite: keep the dict in order of last update, so that what is
            # evicted is the symbol updated longest ago, never a newer event.
            for key, event in zip(keys, events, strict=True):
                latest.pop(key, None)
                latest[key] = event
        self.conflated += n - (len(latest) - before)
        while len(latest) > limit:
            del latest[next(iter(latest))]
            self.dropped += 1
        return True

    def take(self) -> list[E]:
        gap = self._gap
        if gap is not None:
            self._gap = None
            raise gap
        if not self._latest:
            return []
        batch = list(self._latest.values())
        self._latest.clear()
        return batch

    def pending(self) -> bool:
        return self._gap is not None or bool(self._latest)

    def mark_gap(self, error: DataGapError) -> None:
        if self._gap is None:
            self._gap = error

    def symbols_changed(self, count: int) -> None:
        self._limit = max(self.max_buffer, count)

    def __len__(self) -> int:
        return len(self._latest)


class DropOldestBuffer(Generic[E]):
    """A ring of the newest ``max_buffer`` events."""

    __slots__ = ("_gap", "_ring", "conflated", "dropped", "max_buffer")

    def __init__(self, max_buffer: int) -> None:
        self.max_buffer = max_buffer
        self._ring: deque[E] = deque(maxlen=max_buffer)
        self._gap: DataGapError | None = None
        self.dropped = 0
        self.conflated = 0  # never: nothing is replaced

    def push(self, events: list[E], symbols: list[str] | None) -> bool:
        ring = self._ring
        overflow = len(ring) + len(events) - self.max_buffer
        if overflow > 0:
            self.dropped += overflow
        ring.extend(events)
        return True

    def take(self) -> list[E]:
        gap = self._gap
        if gap is not None:
            self._gap = None
            raise gap
        if not self._ring:
            return []
        batch = list(self._ring)
        self._ring.clear()
        return batch

    def pending(self) -> bool:
        return self._gap is not None or bool(self._ring)

    def mark_gap(self, error: DataGapError) -> None:
        if self._gap is None:
            self._gap = error

    def symbols_changed(self, count: int) -> None:
        pass

    def __len__(self) -> int:
        return len(self._ring)


def make_buffer(overflow: Overflow, max_buffer: int) -> Buffer[E]:
    """The buffer for ``overflow``, bounded by ``max_buffer`` (at least 1)."""
    if max_buffer < 1:
        raise ValueError("max_buffer must be at least 1")
    if overflow is Overflow.LOSSLESS:
        return LosslessBuffer(max_buffer)
    if overflow is Overflow.LATEST:
        return LatestBuffer(max_buffer)
    if overflow is Overflow.DROP_OLDEST:
        return DropOldestBuffer(max_buffer)
    raise TypeError(f"overflow must be an Overflow policy, got {overflow!r}")
