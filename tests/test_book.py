"""The pure order book (trio_dxlink._book): scripted sequences (snapshots, updates, removals,
transactions split at every boundary, several sources, lost connections), then properties: a
book whose input never crosses never shows a crossed book of one source, every published step
is a state the source actually had, and the book equals one rebuilt from scratch."""

from __future__ import annotations

import itertools
import math
import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trio_dxlink import (
    AnalyticOrder,
    BookView,
    Order,
    OrderBook,
    PriceLevel,
    Quote,
    SnapshotStatus,
    SpreadOrder,
    SymbolError,
)
from trio_dxlink._book import check_sources
from trio_dxlink.events import EventFlag

TX = int(EventFlag.TX_PENDING)
REMOVE = int(EventFlag.REMOVE_EVENT)
BEGIN = int(EventFlag.SNAPSHOT_BEGIN)
END = int(EventFlag.SNAPSHOT_END)
SIDE = {"b": "BUY", "s": "SELL"}


def order(
    index: int,
    side: str,
    price: float,
    size: float = 1.0,
    flags: int = 0,
    source: str = "NTV",
    **kw: Any,
) -> Order:
    return Order(
        "AAPL",
        event_flags=flags,
        index=index,
        source=source,
        order_side=SIDE.get(side, side),
        price=price,
        size=size,
        **kw,
    )


def snapshot(*orders: Order) -> list[Order]:
    """``orders`` flagged as one snapshot (an empty one is a single REMOVE_EVENT marker)."""
    if not orders:
        return [Order("AAPL", event_flags=BEGIN | END | REMOVE, source="NTV")]
    out = list(orders)
    out[0] = _with_flags(out[0], out[0].event_flags | BEGIN)
    out[-1] = _with_flags(out[-1], out[-1].event_flags | END)
    return out


def transaction(*orders: Order) -> list[Order]:
    return [_with_flags(o, o.event_flags | TX) for o in orders[:-1]] + [orders[-1]]


def _with_flags(event: Order, flags: int) -> Order:
    import attrs

    return attrs.evolve(event, event_flags=flags)


def levels(view: BookView[Any]) -> tuple[list[tuple[float, float, int]], ...]:
    return (
        [(lv.price, lv.size, lv.count) for lv in view.bids],
        [(lv.price, lv.size, lv.count) for lv in view.asks],
    )


def book(*sources: str) -> OrderBook[Order]:
    return OrderBook(Order, "AAPL", sources or ["NTV"])


# --- scripted ---------------------------------------------------------------------------------


def test_a_snapshot_gives_sorted_aggregated_levels_to_a_depth() -> None:
    b = book()
    assert not b.feed([order(1, "b", 10.0, 5, flags=BEGIN)])  # held until the snapshot ends
    assert b.view().bids == ()
    assert b.view().sources == {"NTV": SnapshotStatus.PENDING}
    assert b.feed(
        snapshot(
            order(1, "b", 10.0, 5),
            order(2, "b", 10.5, 1),
            order(3, "b", 10.0, 2),
            order(4, "s", 11.0, 3),
            order(5, "s", 10.75, 4),
            order(6, "s", 12.0, 1),
        )
    )
    view = b.view()
    assert levels(view) == (
        [(10.5, 1, 1), (10.0, 7, 2)],
        [(10.75, 4, 1), (11.0, 3, 1), (12.0, 1, 1)],
    )
    assert view.best_bid == PriceLevel(10.5, 1.0, 1)
    assert view.best_ask == PriceLevel(10.75, 4.0, 1)
    assert not view.crossed
    assert view.complete
    assert view.sources == {"NTV": SnapshotStatus.COMPLETE}
    assert [o.index for o in view.bid_orders] == [2, 1, 3]
    assert [o.index for o in view.orders] == [2, 1, 3, 5, 4, 6]
    top = b.view(1)
    assert levels(top) == ([(10.5, 1, 1)], [(10.75, 4, 1)])
    assert [o.index for o in top.orders] == [2, 5]


def test_updates_move_orders_and_removals_take_them_off() -> None:
    b = book()
    b.feed(snapshot(order(1, "b", 10.0, 5), order(2, "b", 9.0, 1), order(3, "s", 11.0, 3)))
    b.feed([order(1, "b", 9.0, 4)])  # order 1 moves from 10.0 to 9.0
    assert levels(b.view()) == ([(9.0, 5, 2)], [(11.0, 3, 1)])
    b.feed([order(2, "b", 9.0, 1, flags=REMOVE)])  # REMOVE_EVENT
    assert levels(b.view()) == ([(9.0, 4, 1)], [(11.0, 3, 1)])
    b.feed([order(3, "s", 11.0, 0.0)])  # size 0 removes
    assert b.view().asks == ()
    b.feed([order(4, "s", 12.0, 2), order(1, "b", 9.0, math.nan)])  # NaN removes
    assert levels(b.view()) == ([], [(12.0, 2, 1)])
    assert b.statistics().orders == 1
    assert b.statistics().bid_levels == 0


def test_a_new_snapshot_replaces_only_its_own_source() -> None:
    b = book("NTV", "GLBX")
    b.feed(snapshot(order(1, "b", 10.0, 5), order(2, "s", 11.0, 1)))
    b.feed([order(7, "b", 10.0, 1, source="GLBX", flags=BEGIN | END)])
    assert levels(b.view()) == ([(10.0, 6, 2)], [(11.0, 1, 1)])
    b.feed(snapshot(order(3, "b", 9.5, 2)))  # NTV again: orders 1 and 2 are gone
    assert levels(b.view()) == ([(10.0, 1, 1), (9.5, 2, 1)], [])
    b.feed(snapshot())  # an empty NTV snapshot
    assert levels(b.view()) == ([(10.0, 1, 1)], [])
    assert b.view().sources == {"NTV": SnapshotStatus.EMPTY, "GLBX": SnapshotStatus.COMPLETE}


def test_a_transaction_split_at_every_boundary_is_applied_whole() -> None:
    # The market moves up: the old ask at 11 becomes a bid at 11.5's neighbour... applied in an
    # order that crosses half way (the new bid at 11.5 arrives before the ask at 11 leaves).
    start = snapshot(order(1, "b", 10.0, 5), order(2, "s", 11.0, 3), order(3, "s", 12.0, 1))
    move = transaction(
        order(4, "b", 11.5, 2),
        order(2, "s", 11.0, 3, flags=REMOVE),
        order(5, "s", 11.75, 1),
        order(1, "b", 10.0, 0.0),
    )
    for cut in range(len(move) + 1):
        for split in range(len(start) + 1):
            b = book()
            seen = []
            for piece in (start[:split], start[split:], move[:cut], move[cut:]):
                b.feed(piece)
                view = b.view()
                assert not view.crossed
                seen.append(levels(view))
            assert seen[-1] == ([(11.5, 2, 1)], [(11.75, 1, 1), (12.0, 1, 1)])
            before = ([(10.0, 5, 1)], [(11.0, 3, 1), (12.0, 1, 1)])
            assert all(step in (([], []), before, seen[-1]) for step in seen)


def test_several_sources_are_summed_and_each_keeps_its_own_transactions() -> None:
    b = book("NTV", "ntv")
    b.feed(snapshot(order(1, "b", 10.0, 5), order(2, "s", 11.0, 1)))
    aggregated = [
        order(1, "b", 10.0, 300, source="ntv", count=12, flags=BEGIN),
        order(2, "s", 11.0, 200, source="ntv", count=3, flags=END),
    ]
    b.feed(aggregated)
    assert levels(b.view()) == ([(10.0, 305, 13)], [(11.0, 201, 4)])
    # a transaction open on ntv does not hold back NTV's updates
    b.feed([order(3, "b", 10.5, 1, source="ntv", flags=TX), order(4, "b", 10.25, 1)])
    assert levels(b.view())[0] == [(10.25, 1, 1), (10.0, 305, 13)]
    b.feed([order(1, "b", 10.0, 0.0, source="ntv")])
    assert levels(b.view())[0] == [(10.5, 1, 1), (10.25, 1, 1), (10.0, 5, 1)]
    # same index, other source: two orders
    assert {(o.source, o.index) for o in b.view().bid_orders} == {
        ("ntv", 3),
        ("NTV", 4),
        ("NTV", 1),
    }


def test_events_of_unwanted_sources_types_and_symbols_are_counted_not_applied() -> None:
    b = book("NTV")
    assert not b.feed(
        [
            order(1, "b", 10.0, source="GLBX", flags=BEGIN | END),
            Order("MSFT", index=1, source="NTV", price=1.0, size=1.0, order_side="BUY"),
            Quote("AAPL"),
        ]
    )
    assert b.view().bids == ()
    assert b.statistics().assembly.foreign == 3


def test_orders_without_a_side_or_price_stay_off_the_levels() -> None:
    b = book()
    b.feed(
        snapshot(
            order(1, "UNDEFINED", 10.0),
            order(2, "b", math.inf),
            order(3, "s", 11.0, -1.0),
            order(4, "b", 9.0),
        )
    )
    assert levels(b.view()) == ([(9.0, 1, 1)], [])
    assert b.statistics().unplaced == 3
    b.feed([order(4, "UNDEFINED", 9.0)])  # an order that loses its side leaves the book
    assert b.view().bids == ()


def test_a_lost_connection_keeps_the_orders_until_the_new_snapshot_rebuilds_the_book() -> None:
    b = book("NTV", "GLBX")
    b.feed(snapshot(order(1, "b", 10.0)))
    b.feed([order(2, "s", 11.0, source="GLBX", flags=BEGIN | END)])
    version = b.version
    b.connection_lost("NTV")
    assert b.version > version  # the status change is a step of its own
    assert b.gaps == 1
    view = b.view()
    assert levels(view) == ([(10.0, 1, 1)], [(11.0, 1, 1)])  # still shown, but pending
    assert view.sources == {"NTV": SnapshotStatus.PENDING, "GLBX": SnapshotStatus.COMPLETE}
    assert not view.complete
    b.feed(snapshot(order(3, "b", 10.25)))  # NTV's new snapshot, before GLBX heard of the loss
    assert not b.view().rebuilt
    b.connection_lost("GLBX")  # the same loss, on the other source
    assert b.gaps == 1
    b.feed([order(4, "s", 11.5, source="GLBX", flags=BEGIN | END)])
    rebuilt = b.view()
    assert rebuilt.rebuilt
    assert rebuilt.rebuilds == 1
    assert rebuilt.complete
    assert levels(rebuilt) == ([(10.25, 1, 1)], [(11.5, 1, 1)])
    assert b.view() is rebuilt  # built once per version
    b.feed([order(5, "b", 10.0)])
    assert not b.view().rebuilt
    assert b.view().rebuilds == 1
    b.connection_lost()  # every source at once
    assert b.gaps == 2
    assert b.statistics().rebuilds == 1


def test_a_source_that_never_had_a_snapshot_does_not_hold_back_the_rebuild() -> None:
    b = book("NTV", "GLBX")
    b.feed(snapshot(order(1, "b", 10.0)))
    b.connection_lost()
    b.feed(snapshot(order(2, "b", 10.5)))
    assert b.view().rebuilt
    assert b.view().sources["GLBX"] is SnapshotStatus.PENDING


def test_views_compare_by_content_and_spread_and_analytic_orders_work_too() -> None:
    for cls in (SpreadOrder, AnalyticOrder):
        b: OrderBook[Any] = OrderBook(cls, "AAPL", ["NTV"])
        b.feed([cls("AAPL", event_flags=BEGIN | END, index=1, source="NTV", price=1.0,
                    size=2.0, order_side="SELL")])  # fmt: skip
        assert levels(b.view()) == ([], [(1.0, 2.0, 1)])
    one, two = book(), book()
    final = order(1, "b", 10.0)
    one.feed(snapshot(order(3, "s", 11.0)))
    one.feed([order(3, "s", 11.0, 0.0)])
    one.feed([final])
    two.feed(snapshot(order(1, "b", 9.0)))
    two.feed([final])
    assert one.view() == two.view()
    assert one.view().version != two.view().version


@pytest.mark.parametrize(
    ("sources", "error"),
    [
        ("NTV", TypeError),
        ([3], TypeError),
        ([], SymbolError),
        (["NTVXY"], SymbolError),
        (["N-T"], SymbolError),
        ([""], SymbolError),
        (["aggregate_bid"], SymbolError),
    ],
)
def test_malformed_sources_are_refused(sources: Any, error: type[Exception]) -> None:
    with pytest.raises(error):
        check_sources(sources)
    with pytest.raises(error):
        OrderBook(Order, "AAPL", sources)


def test_well_formed_sources_are_kept_once_in_order() -> None:
    assert check_sources(["ntv", "NTV", "BI20", "ntv", "AGGREGATE_ASK", "DEFAULT"]) == (
        "ntv",
        "NTV",
        "BI20",
        "AGGREGATE_ASK",
        "DEFAULT",
    )


def test_other_bad_arguments() -> None:
    with pytest.raises(TypeError, match="Order, SpreadOrder or AnalyticOrder"):
        OrderBook(Quote, "AAPL", ["NTV"])  # type: ignore[type-var]
    with pytest.raises(SymbolError):
        OrderBook(Order, "*", ["NTV"])
    with pytest.raises(SymbolError):
        OrderBook(Order, "", ["NTV"])


# --- properties -------------------------------------------------------------------------------

State = dict[int, tuple[str, float, float]]  # index -> (side, price, size)


@st.composite
def book_states(draw: st.DrawFn) -> State:
    """An uncrossed book: bids below a mid, asks above it."""
    mid = draw(st.integers(10, 40))
    state: State = {}
    for index, side, offset, size in draw(
        st.lists(
            st.tuples(
                st.integers(0, 12),
                st.sampled_from("bs"),
                st.integers(1, 4),
                st.sampled_from([1.0, 2.0, 0.5]),
            ),
            max_size=10,
        )
    ):
        state[index] = (side, mid - offset if side == "b" else mid + offset, size)
    return state


@st.composite
def source_streams(draw: st.DrawFn, source: str) -> tuple[list[State], list[Order]]:
    """A source's states and the events that take it through them: a snapshot, then each
    change as one transaction (shuffled, so it may cross half way) or a fresh snapshot."""
    states = draw(st.lists(book_states(), min_size=1, max_size=5))
    rng = random.Random(draw(st.integers(0, 2**16)))

    def event(index: int, side: str, price: float, size: float, flags: int = 0) -> Order:
        return order(index, side, price, size, flags=flags, source=source)

    events = _snapshot_of(states[0], event, source)
    for before, after in itertools.pairwise(states):
        if draw(st.booleans()) and draw(st.booleans()):
            events += _snapshot_of(after, event, source)
            continue
        changes = [event(i, *after[i]) for i in after if before.get(i) != after[i]]
        for i in before.keys() - after.keys():
            side, price, _ = before[i]
            how = rng.choice(["flag", "zero", "nan"])
            size = {"flag": 1.0, "zero": 0.0, "nan": math.nan}[how]
            changes.append(event(i, side, price, size, REMOVE if how == "flag" else 0))
        rng.shuffle(changes)
        if changes:
            events += transaction(*changes)
    return states, events


def _snapshot_of(state: State, event: Any, source: str) -> list[Order]:
    items = sorted(state.items())
    if not items:
        return [Order("AAPL", event_flags=BEGIN | END | REMOVE, source=source)]
    out = [event(i, *v) for i, v in items]
    out[0] = _with_flags(out[0], BEGIN)
    out[-1] = _with_flags(out[-1], out[-1].event_flags | END)
    return out


def _state_of(view: BookView[Any], source: str) -> State:
    return {
        o.index: ("b" if o.order_side == "BUY" else "s", o.price, o.size)
        for o in view.orders
        if o.source == source
    }


SOURCES = ["NTV", "ntv", "GLBX"]


@settings(max_examples=200, deadline=None)
@given(
    streams=st.lists(st.integers(0, 2), min_size=1, max_size=3, unique=True).flatmap(
        lambda picks: st.tuples(*(source_streams(SOURCES[p]) for p in picks))
    ),
    interleave=st.randoms(use_true_random=False),
    cuts=st.sets(st.integers(0, 200)),
)
def test_published_books_are_uncrossed_real_states_and_equal_a_rebuild(
    streams: tuple[tuple[list[State], list[Order]], ...],
    interleave: random.Random,
    cuts: set[int],
) -> None:
    names = [s[1][0].source for s in streams]
    assert all(isinstance(n, str) for n in names)
    queues = [list(events) for _, events in streams]
    wire: list[Order] = []
    while any(queues):
        queue = interleave.choice([q for q in queues if q])
        wire.append(queue.pop(0))
    b = OrderBook(Order, "AAPL", [n for n in names if n])
    start = 0
    for end in [*sorted(c for c in cuts if c < len(wire)), len(wire)]:
        b.feed(wire[start:end])
        start = end
        view = b.view()
        for (states, _), name in zip(streams, names, strict=True):
            assert name is not None
            mine = [o for o in view.orders if o.source == name]
            bids = [o.price for o in mine if o.order_side == "BUY"]
            asks = [o.price for o in mine if o.order_side == "SELL"]
            assert not (bids and asks and max(bids) >= min(asks))  # never crossed
            assert _state_of(view, name) in [{}, *states]  # never half a transaction
    final = b.view()
    for (states, _), name in zip(streams, names, strict=True):
        assert name is not None
        assert _state_of(final, name) == states[-1]
        assert final.sources[name] is not SnapshotStatus.PENDING
    rebuilt = OrderBook(Order, "AAPL", [n for n in names if n])
    rebuilt.feed(wire)
    assert rebuilt.view() == final
    assert rebuilt.view(2) == b.view(2)
