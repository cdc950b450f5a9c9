"""The pure assemblers of indexed events (trio_dxlink._assembly): every §6.7 rule synchronously,
then properties: splitting the stream never matters, published views never hold half a
transaction, hostile input never raises and the updates always rebuild the view."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trio_dxlink._assembly import (
    AssemblyStats,
    IndexedAssembler,
    Overflow,
    SnapshotStatus,
    TimeSeriesAssembler,
    Update,
    event_source,
)
from trio_dxlink._exceptions import LocalProtocolError
from trio_dxlink._indexed_sources import IndexedSources
from trio_dxlink.events import (
    Candle,
    Event,
    EventFlag,
    Greeks,
    IndexedEvent,
    OptionSale,
    Order,
    Quote,
    Series,
    TimeAndSale,
    index_from_time,
)

TX = int(EventFlag.TX_PENDING)
REMOVE = int(EventFlag.REMOVE_EVENT)
BEGIN = int(EventFlag.SNAPSHOT_BEGIN)
END = int(EventFlag.SNAPSHOT_END)
SNIP = int(EventFlag.SNAPSHOT_SNIP)
MODE = int(EventFlag.SNAPSHOT_MODE)
REMOVE_SYMBOL = int(EventFlag.REMOVE_SYMBOL)

SYMBOL = "AAPL{=5m}"
T0 = 1_700_000_000_000  # epoch ms


def ix(n: int) -> int:
    """The index of the n-th five-minute candle after T0."""
    return index_from_time(T0 + n * 300_000)


def candle(n: int, flags: int = 0, close: float = 1.0, **kw: Any) -> Candle:
    return Candle(SYMBOL, event_flags=flags, index=ix(n), time=T0 + n * 300_000, close=close, **kw)


def marker(n: int, flags: int) -> Candle:
    """The synthetic end-of-history marker: REMOVE_EVENT at fromTime, fields NaN."""
    return Candle(SYMBOL, event_flags=flags | REMOVE, index=ix(n), time=T0 + n * 300_000)


def order(index: int, flags: int = 0, size: float = 1.0, source: str = "NTV", **kw: Any) -> Order:
    return Order("AAPL", event_flags=flags, index=index, size=size, source=source, **kw)


def history(newest: int, oldest: int, end: int = END) -> list[Candle]:
    """A snapshot the way servers publish it: newest first, BEGIN on the first, END last."""
    ns = list(range(newest, oldest - 1, -1))
    events = [candle(n, close=float(n)) for n in ns]
    events[0] = candle(ns[0], BEGIN, close=float(ns[0]))
    last = events[-1]
    events[-1] = candle(ns[-1], last.event_flags | end, close=float(ns[-1]))
    return events


def closes(events: Sequence[Candle]) -> list[float]:
    return [e.close for e in events]


def updates_only(outcomes: Sequence[Update[Any] | Overflow]) -> list[Update[Any]]:
    assert all(isinstance(o, Update) for o in outcomes)
    return [o for o in outcomes if isinstance(o, Update)]


def state(a: TimeSeriesAssembler[Any]) -> tuple[SnapshotStatus, bool]:
    """Status and whether a snapshot is in progress (read in a call, so mypy does not keep a
    narrowed property across ``feed``)."""
    return a.status, a.snapshot_in_progress


# --- snapshots ---


def test_snapshot_is_published_once_complete_oldest_first() -> None:
    a = TimeSeriesAssembler(Candle, SYMBOL)
    events = history(5, 1)
    assert a.feed(events[:-1]) == []
    assert state(a) == (SnapshotStatus.PENDING, True)
    assert a.events() == ()
    (update,) = updates_only(a.feed(events[-1:]))
    assert update.snapshot
    assert not update.after_gap
    assert update.status is SnapshotStatus.COMPLETE
    assert closes(update.events) == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert update.removed == ()
    assert a.events() == update.events
    assert state(a) == (SnapshotStatus.COMPLETE, False)
    assert len(a) == 5
    assert a.get(ix(3)) == candle(3, close=3.0)
    assert a.stats.snapshots == 1


def test_snipped_snapshot() -> None:
    a = TimeSeriesAssembler(Candle, SYMBOL)
    (update,) = updates_only(a.feed(history(3, 1, end=SNIP)))
    assert update.status is SnapshotStatus.SNIPPED
    assert closes(a.events()) == [1.0, 2.0, 3.0]


def test_end_and_snip_together_count_as_snipped() -> None:
    a = TimeSeriesAssembler(Candle, SYMBOL)
    a.feed(history(3, 1, end=END | SNIP))
    assert a.status is SnapshotStatus.SNIPPED


def test_one_event_snapshot() -> None:
    a = TimeSeriesAssembler(Candle, SYMBOL)
    (update,) = updates_only(a.feed([candle(1, BEGIN | END, close=7.0)]))
    assert update.status is SnapshotStatus.COMPLETE
    assert closes(update.events) == [7.0]


def test_empty_snapshot_empties_the_view() -> None:
    a = TimeSeriesAssembler(Candle, SYMBOL)
    a.feed(history(3, 1))
    (update,) = updates_only(a.feed([marker(0, BEGIN | END)]))
    assert update.snapshot
    assert update.status is SnapshotStatus.EMPTY
    assert update.events == ()
    assert a.events() == ()
    assert a.status is SnapshotStatus.EMPTY


def test_synthetic_end_marker_is_not_an_entry() -> None:
    a = TimeSeriesAssembler(Candle, SYMBOL)
    events = [candle(3, BEGIN, close=3.0), candle(2, close=2.0), marker(0, END)]
    (update,) = updates_only(a.feed(events))
    assert closes(update.events) == [2.0, 3.0]
    assert a.get(ix(0)) is None
    assert update.status is SnapshotStatus.COMPLETE


def test_second_snapshot_replaces_without_mixing() -> None:
    a = TimeSeriesAssembler(Candle, SYMBOL)
    a.feed(history(5, 1))
    events = [candle(9, BEGIN, close=90.0), candle(8, END, close=80.0)]
    assert a.feed(events[:1]) == []
    assert a.snapshot_in_progress
    assert a.status is SnapshotStatus.COMPLETE  # the view is still the first snapshot
    assert closes(a.events()) == [1.0, 2.0, 3.0, 4.0, 5.0]
    (update,) = updates_only(a.feed(events[1:]))
    assert update.snapshot
    assert not update.after_gap
    assert closes(a.events()) == [80.0, 90.0]


def test_snapshot_end_inside_a_transaction_waits_for_the_transaction() -> None:
    a = TimeSeriesAssembler(Candle, SYMBOL)
    events = [candle(3, BEGIN, close=3.0), candle(2, END | TX, close=2.0)]
    assert a.feed(events) == []
    assert a.feed([candle(4, TX, close=4.0)]) == []
    (update,) = updates_only(a.feed([candle(2, 0, close=20.0)]))
    assert update.snapshot
    assert closes(update.events) == [20.0, 3.0, 4.0]


def test_begin_inside_a_snapshot_restarts_it() -> None:
    a = TimeSeriesAssembler(Candle, SYMBOL)
    a.feed([candle(5, BEGIN, close=5.0), candle(4, close=4.0)])
    (update,) = updates_only(a.feed([candle(3, BEGIN, close=3.0), candle(2, END, close=2.0)]))
    assert closes(update.events) == [2.0, 3.0]
    assert a.stats.restarted_snapshots == 1
    assert a.stats.abandoned == 2


def test_snapshot_mode_and_remove_symbol_bits_are_ignored() -> None:
    a = TimeSeriesAssembler(Candle, SYMBOL)
    events = [candle(2, BEGIN | MODE, close=2.0), candle(1, END | REMOVE_SYMBOL, close=1.0)]
    (update,) = updates_only(a.feed(events))
    assert closes(update.events) == [1.0, 2.0]
    (live,) = updates_only(a.feed([candle(3, MODE | REMOVE_SYMBOL, close=3.0)]))
    assert closes(live.events) == [3.0]


# --- live changes and transactions ---


def test_live_update_reusing_an_index_replaces_the_entry() -> None:
    a = TimeSeriesAssembler(Candle, SYMBOL)
    a.feed(history(3, 1))
    (update,) = updates_only(a.feed([candle(3, close=33.0)]))
    assert not update.snapshot
    assert update.status is SnapshotStatus.COMPLETE
    assert closes(update.events) == [33.0]
    assert update.removed == ()
    assert closes(a.events()) == [1.0, 2.0, 33.0]


def test_remove_event_removes_by_index_and_reports_the_old_entry() -> None:
    a = TimeSeriesAssembler(Candle, SYMBOL)
    a.feed(history(3, 1))
    (update,) = updates_only(a.feed([marker(2, 0)]))
    assert update.events == ()
    assert closes(update.removed) == [2.0]
    assert closes(a.events()) == [1.0, 3.0]
    assert a.feed([marker(2, 0)]) == []  # nothing left to remove: nothing to publish


def test_transaction_is_applied_as_one() -> None:
    a = TimeSeriesAssembler(Candle, SYMBOL)
    a.feed(history(3, 1))
    assert a.feed([candle(4, TX, close=4.0), marker(1, TX)]) == []
    assert closes(a.events()) == [1.0, 2.0, 3.0]  # nothing of it shows yet
    (update,) = updates_only(a.feed([candle(3, close=30.0)]))
    assert closes(update.events) == [30.0, 4.0]
    assert closes(update.removed) == [1.0]
    assert closes(a.events()) == [2.0, 30.0, 4.0]


def test_change_set_holds_the_net_effect_per_index() -> None:
    a = TimeSeriesAssembler(Candle, SYMBOL)
    a.feed(history(3, 1))
    events = [candle(7, TX, close=7.0), marker(7, TX), marker(2, TX), candle(2, 0, close=22.0)]
    (update,) = updates_only(a.feed(events))
    assert closes(update.events) == [22.0]  # 7 came and went; 2 was replaced
    assert update.removed == ()
    assert a.feed([candle(8, TX), marker(8, 0)]) == []  # no net effect: nothing published
    assert a.stats.changes == 2


def test_changes_before_any_snapshot_are_published_as_pending() -> None:
    a = TimeSeriesAssembler(Candle, SYMBOL)
    (update,) = updates_only(a.feed([candle(1, close=1.0)]))
    assert not update.snapshot
    assert update.status is SnapshotStatus.PENDING
    assert closes(a.events()) == [1.0]


def test_time_series_view_is_ordered_by_time_then_sequence() -> None:
    a = TimeSeriesAssembler(TimeAndSale, "AAPL")
    t = T0 + 5
    indices = [index_from_time(t, 2), index_from_time(t - 1, 9), index_from_time(t, 0)]
    events = [TimeAndSale("AAPL", index=i, time=t, price=float(n)) for n, i in enumerate(indices)]
    events[0] = TimeAndSale("AAPL", event_flags=BEGIN, index=indices[0], price=0.0)
    events[-1] = TimeAndSale("AAPL", event_flags=END, index=indices[-1], price=2.0)
    (update,) = updates_only(a.feed(events))
    assert [e.price for e in update.events] == [1.0, 2.0, 0.0]
    assert [(e.index_time, e.index_sequence) for e in update.events] == [
        (t - 1, 9),
        (t, 0),
        (t, 2),
    ]


# --- reconnects ---


def test_reconnect_in_the_middle_of_a_snapshot() -> None:
    a = TimeSeriesAssembler(Candle, SYMBOL)
    a.feed(history(5, 1))
    a.feed([candle(7, BEGIN, close=70.0), candle(6, close=60.0)])
    a.connection_lost()
    assert a.status is SnapshotStatus.PENDING
    assert not a.snapshot_in_progress
    assert closes(a.events()) == [1.0, 2.0, 3.0, 4.0, 5.0]  # the last consistent view stays
    assert a.stats.abandoned == 2
    # The rest of the interrupted snapshot never comes; a new one does.
    (update,) = updates_only(a.feed(history(9, 8)))
    assert update.snapshot
    assert update.after_gap
    assert update.status is SnapshotStatus.COMPLETE
    assert closes(a.events()) == [8.0, 9.0]  # replaced, not mixed with 1..7
    (live,) = updates_only(a.feed([candle(9, close=99.0)]))
    assert not live.after_gap


def test_reconnect_in_the_middle_of_a_transaction() -> None:
    a = TimeSeriesAssembler(Candle, SYMBOL)
    a.feed(history(2, 1))
    a.feed([candle(3, TX, close=3.0)])
    a.connection_lost()
    (update,) = updates_only(a.feed([candle(4, close=4.0)]))
    assert update.after_gap
    assert update.status is SnapshotStatus.PENDING
    assert closes(a.events()) == [1.0, 2.0, 4.0]  # the half transaction never shows


def test_empty_snapshot_after_a_reconnect() -> None:
    a = TimeSeriesAssembler(Candle, SYMBOL)
    a.feed(history(2, 1))
    a.connection_lost()
    (update,) = updates_only(a.feed([marker(0, BEGIN | END)]))
    assert update.after_gap
    assert update.status is SnapshotStatus.EMPTY
    assert a.events() == ()


# --- hostile input ---


def test_end_without_begin_is_counted_and_applied_as_a_change(
    caplog: pytest.LogCaptureFixture,
) -> None:
    a = TimeSeriesAssembler(Candle, SYMBOL)
    with caplog.at_level(logging.WARNING, logger="trio_dxlink"):
        outcomes = updates_only(a.feed([candle(1, END, close=1.0), candle(2, SNIP)]))
    assert [(u.snapshot, len(u.events)) for u in outcomes] == [(False, 1), (False, 1)]
    assert a.status is SnapshotStatus.PENDING
    assert a.stats.stray_ends == 2
    assert len(a) == 2
    assert len([r for r in caplog.records if "without a beginning" in r.message]) == 1


def test_events_of_other_collections_are_skipped() -> None:
    a = TimeSeriesAssembler(Candle, SYMBOL)
    foreign: list[Event] = [
        Candle("AAPL{=1m}", event_flags=BEGIN | END, index=ix(1)),
        Greeks(SYMBOL, event_flags=BEGIN | END, index=ix(1)),
        Quote(SYMBOL),
    ]
    assert a.feed(foreign) == []
    assert a.stats.foreign == 3
    assert a.stats.events == 3
    assert a.status is SnapshotStatus.PENDING


def test_index_as_a_decimal_string_is_accepted() -> None:
    a = TimeSeriesAssembler(Candle, SYMBOL)
    event = Candle(SYMBOL, event_flags=BEGIN | END, index=str(ix(4)), close=4.0)  # type: ignore[arg-type]
    (update,) = updates_only(a.feed([event]))
    (stored,) = update.events
    assert stored.index == ix(4)
    assert type(stored.index) is int
    assert a.get(ix(4)) == stored
    (live,) = updates_only(a.feed([candle(4, close=44.0)]))  # the same entry, by int index
    assert len(a) == 1
    assert live.events[0].close == 44.0


@pytest.mark.parametrize(
    "index", ["abc", "1e5", " 12", "+12", "1_000", "", str(2**63), 2**63, -(2**63) - 1, 1.0, True]
)
def test_malformed_index_is_counted_and_skipped(index: Any) -> None:
    a = TimeSeriesAssembler(Candle, SYMBOL)
    assert a.feed([Candle(SYMBOL, event_flags=BEGIN | END, index=index)]) == []
    assert a.stats.malformed == 1
    assert a.status is SnapshotStatus.PENDING


@pytest.mark.parametrize("flags", ["4", 4.0, None])
def test_malformed_flags_are_counted_and_skipped(flags: Any) -> None:
    a = TimeSeriesAssembler(Candle, SYMBOL)
    assert a.feed([Candle(SYMBOL, event_flags=flags, index=ix(1))]) == []
    assert a.stats.malformed == 1


def test_nonsense_flags_do_not_raise() -> None:
    a = TimeSeriesAssembler(Candle, SYMBOL)
    a.feed([candle(1, -1), candle(2, 2**80 | BEGIN), candle(3, 0xFFFF_FFFF)])
    a.feed([candle(4)])
    assert a.stats.events == 4
    assert all(e.event_flags & REMOVE == 0 for e in a.events())


def test_overflowing_snapshot_is_dropped_and_counted() -> None:
    a = TimeSeriesAssembler(Candle, SYMBOL, max_pending=3)
    a.feed(history(2, 1))
    outcomes = a.feed(history(20, 11))
    assert outcomes == [Overflow(SYMBOL, "DEFAULT", dropped=4, in_snapshot=True)]
    assert a.stats.overflows == 1
    assert a.stats.dropped == 10
    assert a.status is SnapshotStatus.PENDING
    assert closes(a.events()) == [1.0, 2.0]  # the last consistent view stays
    (update,) = updates_only(a.feed(history(32, 31)))
    assert update.after_gap
    assert closes(a.events()) == [31.0, 32.0]


def test_overflowing_transaction_skips_to_its_end() -> None:
    a = TimeSeriesAssembler(Candle, SYMBOL, max_pending=2)
    a.feed(history(2, 1))
    outcomes = a.feed([candle(n, TX) for n in range(3, 9)] + [candle(9)])
    assert outcomes == [Overflow(SYMBOL, "DEFAULT", dropped=3, in_snapshot=False)]
    assert len(a) == 2
    (update,) = updates_only(a.feed([candle(10, close=10.0)]))
    assert update.after_gap
    assert update.status is SnapshotStatus.PENDING
    assert closes(a.events()) == [1.0, 2.0, 10.0]


def test_a_run_at_the_cap_is_still_applied() -> None:
    a = TimeSeriesAssembler(Candle, SYMBOL, max_pending=3)
    (update,) = updates_only(a.feed(history(4, 1)))  # 3 held, the 4th ends the run
    assert len(update.events) == 4


def test_constructors_refuse_the_wrong_kind_of_type() -> None:
    with pytest.raises(LocalProtocolError):
        TimeSeriesAssembler(Quote, "AAPL")  # type: ignore[type-var]
    with pytest.raises(LocalProtocolError):
        TimeSeriesAssembler(Order, "AAPL")  # type: ignore[type-var]
    with pytest.raises(LocalProtocolError):
        IndexedAssembler(Quote, "AAPL")  # type: ignore[type-var]
    with pytest.raises(LocalProtocolError):
        TimeSeriesAssembler(Candle, "AAPL", max_pending=0)
    with pytest.raises(LocalProtocolError):
        IndexedSources(Order, "AAPL", max_sources=0)


# --- indexed (multi-source) events ---


def test_indexed_view_keeps_first_appearance_order() -> None:
    a = IndexedAssembler(Order, "AAPL", "NTV")
    events = [order(30, BEGIN, price=3.0), order(10, price=1.0), order(20, END, price=2.0)]
    (update,) = updates_only(a.feed(events))
    assert [e.index for e in update.events] == [30, 10, 20]
    a.feed([order(10, price=1.5)])
    assert [e.price for e in a.events()] == [3.0, 1.5, 2.0]


@pytest.mark.parametrize("size", [0.0, math.nan])
def test_order_without_size_is_a_removal(size: float) -> None:
    a = IndexedAssembler(Order, "AAPL", "NTV")
    (snap,) = updates_only(a.feed([order(1, BEGIN), order(2, size=size), order(3, END)]))
    assert [e.index for e in snap.events] == [1, 3]
    (update,) = updates_only(a.feed([order(1, size=size)]))
    assert [e.index for e in update.removed] == [1]
    assert [e.index for e in a.events()] == [3]


def test_option_sale_and_series_use_the_default_source() -> None:
    for cls in (OptionSale, Series):
        a: IndexedAssembler[IndexedEvent] = IndexedAssembler(cls, "X")
        assert a.source == "DEFAULT"
        (update,) = updates_only(a.feed([cls("X", event_flags=BEGIN | END, index=5)]))
        assert event_source(update.events[0]) == "DEFAULT"
        assert update.status is SnapshotStatus.COMPLETE


def test_indexed_assembler_skips_other_sources() -> None:
    a = IndexedAssembler(Order, "AAPL", "NTV")
    assert a.feed([order(1, BEGIN | END, source="DEX")]) == []
    assert a.stats.foreign == 1


def test_sources_keep_their_own_snapshots() -> None:
    book = IndexedSources(Order, "AAPL")
    events = [
        order(1, BEGIN, source="NTV"),
        order(101, BEGIN | END, source="DEX"),
        order(2, END, source="NTV"),
        order(101, REMOVE, source="DEX"),
    ]
    outcomes = updates_only(book.feed(events))
    assert [(u.source, u.snapshot, len(u.events), len(u.removed)) for u in outcomes] == [
        ("DEX", True, 1, 0),
        ("NTV", True, 2, 0),
        ("DEX", False, 0, 1),
    ]
    assert book.sources() == ("NTV", "DEX")
    assert [e.index for e in book["NTV"].events()] == [1, 2]
    assert book["DEX"].events() == ()
    book.connection_lost()
    assert book["NTV"].status is SnapshotStatus.PENDING
    (update,) = updates_only(book.feed([order(5, BEGIN | END, source="NTV")]))
    assert update.after_gap
    assert book["DEX"].status is SnapshotStatus.PENDING


def test_sources_are_bounded_and_foreign_events_counted() -> None:
    book = IndexedSources(Order, "AAPL", max_sources=2)
    book.feed([order(n, source=f"S{n}") for n in range(5)])
    book.feed([Order("MSFT", index=1, size=1.0), Candle("AAPL")])
    assert book.sources() == ("S0", "S1")
    stats = book.stats
    assert stats.events == 7
    assert stats.foreign == 5
    assert stats.changes == 2


def test_stats_add() -> None:
    total = AssemblyStats(events=1, dropped=2)
    total.add(AssemblyStats(events=3, overflows=1))
    assert total == AssemblyStats(events=4, dropped=2, overflows=1)


# --- properties ---

LOST = "connection lost"  # a stream item that stands for connection_lost()

Item = Any  # an Event, or LOST

_FLAG_BITS = st.sampled_from([0, TX, REMOVE, BEGIN, END, SNIP, MODE, REMOVE_SYMBOL, 0x20])
_HOSTILE_FLAGS = st.one_of(
    st.lists(_FLAG_BITS, max_size=4).map(lambda bits: sum(set(bits))),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from(["8", 4.0, None]),
)
_HOSTILE_INDEX = st.one_of(
    st.integers(0, 5).map(ix),
    st.integers(0, 5).map(lambda n: str(ix(n))),
    st.sampled_from(["x", "", 2**64, -1, 1.5, None]),
)
_HOSTILE_EVENT = st.builds(
    lambda flags, index, symbol, close: Candle(symbol, event_flags=flags, index=index, close=close),
    _HOSTILE_FLAGS,
    _HOSTILE_INDEX,
    st.sampled_from([SYMBOL, SYMBOL, SYMBOL, "OTHER"]),
    st.floats(0, 100),
)
HOSTILE_STREAMS = st.lists(st.one_of(_HOSTILE_EVENT, st.just(LOST)), max_size=30)


def run(
    assembler: TimeSeriesAssembler[Candle], items: Sequence[Item], cuts: set[int]
) -> tuple[list[Update[Candle] | Overflow], tuple[Candle, ...], SnapshotStatus, AssemblyStats]:
    """Feed ``items``, with one ``feed`` call per stretch between ``cuts`` and LOST items."""
    outcomes: list[Update[Candle] | Overflow] = []
    chunk: list[Event] = []
    for position, item in enumerate(items):
        if position in cuts:
            outcomes += assembler.feed(chunk)
            chunk = []
        if item is LOST:
            outcomes += assembler.feed(chunk)
            chunk = []
            assembler.connection_lost()
        else:
            chunk.append(item)
    outcomes += assembler.feed(chunk)
    return outcomes, assembler.events(), assembler.status, assembler.stats


@settings(max_examples=150, deadline=None)
@given(HOSTILE_STREAMS)
def test_splitting_the_stream_never_changes_the_outcome(items: list[Item]) -> None:
    whole = run(TimeSeriesAssembler(Candle, SYMBOL, max_pending=4), items, set())
    each = run(TimeSeriesAssembler(Candle, SYMBOL, max_pending=4), items, set(range(len(items))))
    assert each == whole
    for cut in range(1, len(items)):
        assert run(TimeSeriesAssembler(Candle, SYMBOL, max_pending=4), items, {cut}) == whole


def rebuild(view: dict[int, Any], update: Update[Any]) -> None:
    """Apply an update the way a consumer would, to a dict keyed by index."""
    if update.snapshot:
        view.clear()
    for gone in update.removed:
        del view[gone.index]  # a change set only removes what is there
    for event in update.events:
        view[event.index] = event


@settings(max_examples=150, deadline=None)
@given(HOSTILE_STREAMS, st.sets(st.integers(0, 30)))
def test_hostile_input_never_raises_and_updates_rebuild_the_view(
    items: list[Item], cuts: set[int]
) -> None:
    a = TimeSeriesAssembler(Candle, SYMBOL, max_pending=4)
    view: dict[int, Candle] = {}
    chunks: list[list[Item]] = [[]]
    for position, item in enumerate(items):
        if position in cuts:
            chunks.append([])
        chunks[-1].append(item)
    for chunk in chunks:
        for item in chunk:
            if item is LOST:
                a.connection_lost()
                continue
            for outcome in a.feed([item]):
                if isinstance(outcome, Update):
                    assert outcome.status is a.status
                    rebuild(view, outcome)
        events = a.events()
        assert view == {e.index: e for e in events}
        assert [e.index for e in events] == sorted(e.index for e in events)
        assert all(type(e.index) is int and e.event_symbol == SYMBOL for e in events)
        assert all(not e.event_flags & REMOVE for e in events)
    assert a.stats.events == sum(item is not LOST for item in items)


Make = Any  # (key, flags, tag) -> event


def make_candle(key: int, flags: int, tag: int) -> Candle:
    return candle(key, flags, close=float(tag))


def make_order(key: int, flags: int, tag: int) -> Order:
    return order(key, flags, price=float(tag))


def tag_of(event: Any) -> float:
    return float(event.close if isinstance(event, Candle) else event.price)


@st.composite
def tagged_streams(draw: st.DrawFn) -> list[tuple[int, int] | str]:
    """Blocks of (key, flags) pairs, every block tagged by its number; each transaction and
    each snapshot touches every key, so a consistent view always holds a single tag."""
    keys = range(1, draw(st.integers(1, 4)) + 1)
    items: list[tuple[int, int] | str] = []
    for _ in range(draw(st.integers(1, 8))):
        kind = draw(st.sampled_from(["end", "snip", "marker", "empty", "tx", "reconnect"]))
        if kind == "empty":
            items.append((0, BEGIN | END | REMOVE))
            continue
        if kind == "tx" or (kind == "reconnect" and draw(st.booleans())):
            removes = draw(st.lists(st.booleans(), min_size=len(keys), max_size=len(keys)))
            block = [(k, TX | (REMOVE if r else 0)) for k, r in zip(keys, removes, strict=True)]
            block[-1] = (block[-1][0], block[-1][1] & ~TX)
        else:
            extra_tx = draw(st.lists(st.booleans(), min_size=len(keys), max_size=len(keys)))
            block = [(k, TX if t else 0) for k, t in zip(reversed(keys), extra_tx, strict=True)]
            block[0] = (block[0][0], block[0][1] | BEGIN)
            if kind == "marker":
                block.append((0, END | REMOVE))
            else:
                block[-1] = (block[-1][0], block[-1][1] | (SNIP if kind == "snip" else END))
        if kind == "reconnect":  # the block is cut short by a lost connection
            block = block[: draw(st.integers(0, len(block) - 1))]
            items.extend(block)
            items.append(LOST)
        else:
            items.extend(block)
        items.append("next tag")
    return items


@pytest.mark.parametrize(
    ("make", "factory"),
    [
        (make_candle, lambda: TimeSeriesAssembler(Candle, SYMBOL)),
        (make_order, lambda: IndexedAssembler(Order, "AAPL", "NTV")),
    ],
)
@settings(max_examples=150, deadline=None)
@given(items=tagged_streams(), cuts=st.sets(st.integers(0, 60)))
def test_no_published_view_holds_half_a_transaction(
    make: Make, factory: Any, items: list[tuple[int, int] | str], cuts: set[int]
) -> None:
    a = factory()
    view: dict[int, Any] = {}
    tag = 1
    chunk: list[Event] = []

    def flush() -> None:
        for outcome in a.feed(chunk):
            assert isinstance(outcome, Update)
            if not outcome.snapshot:
                assert len({tag_of(e) for e in outcome.events}) <= 1
            rebuild(view, outcome)
            assert len({tag_of(e) for e in view.values()}) <= 1
        chunk.clear()
        assert len({tag_of(e) for e in a.events()}) <= 1

    for position, item in enumerate(items):
        if position in cuts:
            flush()
        if item == "next tag":
            tag += 1
        elif item == LOST:
            flush()
            a.connection_lost()
        else:
            assert isinstance(item, tuple)
            key, flags = item
            chunk.append(make(key, flags, tag))
    flush()
    assert view == {e.index: e for e in a.events()}
