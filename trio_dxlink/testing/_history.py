"""How the local DXLink server publishes time-series history (protocol reference §6.7, §12).

A subscription with ``fromTime`` to a time-series type gets a snapshot of the market's history,
built by :func:`snapshot`:

* newest first, in descending ``index``; the first event carries SNAPSHOT_BEGIN, the rest 0;
* the last one carries SNAPSHOT_END when the history reaches ``fromTime``, or SNAPSHOT_SNIP
  when ``ServerConfig.max_snapshot_events`` cut it short;
* when no event sits exactly at ``fromTime`` (and nothing was cut), a synthetic end marker
  follows: ``time = fromTime``, sequence 0, REMOVE_EVENT | SNAPSHOT_END and every other field
  NaN; an empty snapshot is that marker alone, with SNAPSHOT_BEGIN too (flags 14).

Live updates afterwards go out with the flags they were published with (0 for an update of the
current candle, which keeps its ``index``).

The switches real servers were seen to need (all off by default, see :class:`ServerConfig`):

* ``snapshot_transaction_size``: :func:`transaction_pieces` splits a snapshot into pieces of
  that many events, each sent in its own FEED_DATA, every event but a piece's last flagged
  TX_PENDING;
* ``normalize_candle_symbols``: candle events carry the normalised symbol (``SPX{=1h}`` is
  answered as ``SPX{=h}``, :func:`wire_symbol`), and candle subscriptions match by it;
* ``index_as_string``: ``index`` goes on the wire as a decimal string (see ``_encoding.py``);
* ``max_snapshots_in_flight``: :class:`SnapshotSlots` counts the snapshots a connection has
  waiting to be written; a request past the cap, or for a (type, symbol) whose snapshot is
  still waiting, is answered with ERROR :data:`SNAPSHOT_LIMIT_CODE` /
  :func:`snapshot_limit_message` on its channel and is not subscribed; the connection stays up;
* ``empty_snapshot_symbols``: those symbols always get the empty snapshot, as tastytrade's AUTO
  channels sometimes answer (§12).

:func:`as_transaction` flags a batch of live events as one TX_PENDING transaction
(:meth:`DXLinkServer.publish_transaction`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, TypeVar, cast

import attrs

from .._exceptions import SymbolError
from ..events import Candle, Event, EventFlag, IndexedEvent, TimeSeriesEvent, index_from_time
from ..symbols import normalize_candle_symbol
from ._config import ServerConfig
from ._market import SIMULATED_TYPES, Market
from ._server_core import ServerChannel

__all__ = [
    "SNAPSHOT_LIMIT_CODE",
    "HistoryPublisher",
    "SnapshotSlots",
    "as_transaction",
    "clamp_from_time",
    "end_marker",
    "normalized",
    "snapshot",
    "snapshot_limit_message",
    "transaction_pieces",
    "wants_normalized",
    "wire_symbol",
]

MAX_TIME_MS = (2**31 - 1) * 1000
"""The last time a time-series index can hold (32-bit seconds, §6.5)."""

SNAPSHOT_LIMIT_CODE = "INVALID_MESSAGE"
"""The ERROR code of a refusal for too many snapshots in flight (§12 reports only the text)."""

_E = TypeVar("_E", bound=Event)
_I = TypeVar("_I", bound=IndexedEvent)


def snapshot_limit_message(event_type: str) -> str:
    """The ERROR text of a refusal for too many snapshots in flight, as tastytrade words it."""
    return f"Subscription size for event type '{event_type}' is too big"


def clamp_from_time(from_time: int) -> int:
    """``fromTime`` brought into what an index can hold: any 64-bit value may arrive."""
    return min(max(from_time, 0), MAX_TIME_MS)


def with_flags(event: _I, flags: int) -> _I:
    """A copy of ``event`` with ``event_flags`` set to ``flags``."""
    return cast(_I, attrs.evolve(cast(Any, event), event_flags=int(flags)))


def end_marker(
    cls: type[TimeSeriesEvent], symbol: str, from_time: int, flags: int
) -> TimeSeriesEvent:
    """The synthetic event that ends a snapshot at ``from_time``: sequence 0, REMOVE_EVENT plus
    ``flags``, every other field left at its default (NaN for the doubles)."""
    marker: TimeSeriesEvent = cast(Any, cls)(
        event_symbol=symbol,
        time=from_time,
        index=index_from_time(from_time),
        event_flags=int(flags | EventFlag.REMOVE_EVENT),
    )
    return marker


def snapshot(
    cls: type[TimeSeriesEvent],
    symbol: str,
    from_time: int,
    history: Sequence[TimeSeriesEvent],
    limit: int,
) -> list[TimeSeriesEvent]:
    """The snapshot of ``history`` (events at or after ``from_time``, in any order) flagged as
    §6.7 says: newest first, BEGIN on the first, END or SNIP (past ``limit`` events) on the last,
    or the synthetic end marker after the last when nothing sits at ``from_time``."""
    newest_first = sorted(history, key=lambda event: event.index, reverse=True)
    snipped = len(newest_first) > limit
    kept = newest_first[:limit]
    out: list[TimeSeriesEvent] = [
        with_flags(event, EventFlag.SNAPSHOT_BEGIN if i == 0 else 0) for i, event in enumerate(kept)
    ]
    if snipped:
        out[-1] = with_flags(kept[-1], out[-1].event_flags | EventFlag.SNAPSHOT_SNIP)
    elif kept and kept[-1].time == from_time:
        out[-1] = with_flags(kept[-1], out[-1].event_flags | EventFlag.SNAPSHOT_END)
    else:
        flags = EventFlag.SNAPSHOT_END if out else EventFlag.SNAPSHOT_BEGIN | EventFlag.SNAPSHOT_END
        out.append(end_marker(cls, symbol, from_time, flags))
    return out


def transaction_pieces(events: Sequence[_I], size: int | None) -> list[list[_I]]:
    """``events`` in pieces of ``size`` (one piece with ``None``), each a transaction: every
    event but a piece's last gets TX_PENDING."""
    if size is None:
        return [list(events)] if events else []
    return [as_transaction(events[start : start + size]) for start in range(0, len(events), size)]


def as_transaction(events: Sequence[_I]) -> list[_I]:
    """``events`` as one transaction: TX_PENDING added to every event but the last (which keeps
    its flags without TX_PENDING, ending the transaction).

    Raises:
        TypeError: an event is not an indexed one (only those carry flags).
    """
    for event in events:
        if not isinstance(event, IndexedEvent):
            raise TypeError(f"a transaction holds indexed events, not {event!r}")
    out = [with_flags(event, event.event_flags | EventFlag.TX_PENDING) for event in events[:-1]]
    if events:
        last = events[-1]
        out.append(with_flags(last, last.event_flags & ~EventFlag.TX_PENDING))
    return out


def wire_symbol(symbol: str) -> str:
    """The normalised form of a candle symbol (``SPX{=1h}`` -> ``SPX{=h}``); a symbol that does
    not parse is left as it is (the server answers whatever a client asks for)."""
    if "{" not in symbol:
        return symbol
    try:
        return normalize_candle_symbol(symbol)
    except SymbolError:
        return symbol


def normalized(event: _E) -> _E:
    """``event`` with its candle symbol normalised (other events as they are)."""
    if not isinstance(event, Candle):
        return event
    symbol = wire_symbol(event.event_symbol)
    if symbol == event.event_symbol:
        return event
    return cast(_E, attrs.evolve(event, event_symbol=symbol))


def wants_normalized(channel: ServerChannel, event: Event) -> bool:
    """``channel.wants(event)``, with a candle event (its symbol normalised) also matching a
    subscription whose symbol normalises to it."""
    if channel.wants(event):
        return True
    if not isinstance(event, Candle):
        return False
    kind = event.EVENT_TYPE
    symbol = event.event_symbol
    return any(key[0] == kind and wire_symbol(key[1]) == symbol for key in channel.subscriptions)


class SnapshotSlots:
    """The snapshots one connection has waiting to be written, against a cap.

    A snapshot takes a slot when it is requested and frees it once its last frame has been
    written to the client (:meth:`written`), so snapshots a slow (or stalled) client has not
    taken yet count, and a batch of requests in one FEED_SUBSCRIPTION counts in full.

    Args:
        cap: the most snapshots waiting at once (``None``: no cap; nothing is refused).
    """

    def __init__(self, cap: int | None) -> None:
        self.cap = cap
        self._waiting: dict[tuple[Any, ...], float] = {}

    def __len__(self) -> int:
        return len(self._waiting)

    def take(self, key: tuple[Any, ...]) -> bool:
        """Take a slot for ``key``: false when the cap is reached or ``key`` already waits (a
        duplicate request, which real servers refuse the same way)."""
        if self.cap is None:
            return True
        if key in self._waiting or len(self._waiting) >= self.cap:
            return False
        self._waiting[key] = math.inf  # until its frames are queued (see :meth:`queued`)
        return True

    def queued(self, key: tuple[Any, ...], through_frame: int) -> None:
        """``key``'s snapshot is queued: it is complete once frame number ``through_frame``
        (counted from 1 on the connection) has been written."""
        if key in self._waiting:
            self._waiting[key] = through_frame

    def written(self, frames: int) -> None:
        """``frames`` frames have been written so far: free the slots of completed snapshots."""
        done = [key for key, mark in self._waiting.items() if mark <= frames]
        for key in done:
            del self._waiting[key]


class HistoryPublisher:
    """What one server's subscribers get as history, from its market and switches.

    Attributes:
        empty_snapshot_symbols: symbols whose snapshots are always empty (starts as
            ``ServerConfig.empty_snapshot_symbols``; a test may change it while serving).
    """

    def __init__(self, config: ServerConfig, market: Market) -> None:
        self.config = config
        self.market = market
        self.empty_snapshot_symbols: set[str] = set(config.empty_snapshot_symbols)

    def symbol(self, symbol: str) -> str:
        """The symbol events of ``symbol`` go out with (normalised when the switch says so)."""
        return wire_symbol(symbol) if self.config.normalize_candle_symbols else symbol

    def event(self, event: _E) -> _E:
        """A published event as the server records and sends it."""
        return normalized(event) if self.config.normalize_candle_symbols else event

    def snapshot(
        self, cls: type[TimeSeriesEvent], symbol: str, from_time: int
    ) -> list[list[TimeSeriesEvent]]:
        """The snapshot a subscription to (``cls``, ``symbol``) with ``from_time`` gets, in the
        pieces to send it in (one FEED_DATA run each)."""
        from_time = clamp_from_time(from_time)
        config = self.config
        symbol = self.symbol(symbol)
        if symbol in self.empty_snapshot_symbols:
            events = snapshot(cls, symbol, from_time, (), config.max_snapshot_events)
        else:
            events = snapshot(
                cls,
                symbol,
                from_time,
                self._history(cls, symbol, from_time),
                config.max_snapshot_events,
            )
        return transaction_pieces(events, config.snapshot_transaction_size)

    def _history(
        self, cls: type[TimeSeriesEvent], symbol: str, from_time: int
    ) -> list[TimeSeriesEvent]:
        market = self.market
        name = cls.EVENT_TYPE
        if self.config.simulate:
            if cls is Candle:
                limit = self.config.max_snapshot_events + 1
                market.history(symbol, from_time, market.now_ms(), limit=limit)
            elif name in SIMULATED_TYPES and not market.series(name, symbol, from_time):
                market.step(name, symbol)
        return market.series(name, symbol, from_time)
