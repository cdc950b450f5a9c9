"""The local server's simulated order books: pure (SimulatedBook), and as subscribers see them
(Order / AnalyticOrder / SpreadOrder subscriptions by source, snapshots, transactions, switches).

A small §6.7 assembler below rebuilds each source's book from what a client receives, and checks
it at every point the rule lets a client publish: never crossed."""

from __future__ import annotations

import random

import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from trio_dxlink import AnalyticOrder, EventFlag, IndexedEvent, Order, SpreadOrder, open_dxlink
from trio_dxlink.testing import ServerConfig, open_dxlink_server
from trio_dxlink.testing._book_publisher import SIMULATED_SOURCES
from trio_dxlink.testing._books import SimulatedBook, merged_levels, render, source_index

from .conftest import pinned_market, until


class Assembler:
    """§6.7 for one source: pending events, snapshot state; the book at each publish point."""

    def __init__(self) -> None:
        self.pending: list[IndexedEvent] = []
        self.partial = False
        self.complete = False
        self.book: dict[int, IndexedEvent] = {}
        self.published = 0

    def feed(self, event: IndexedEvent) -> None:
        if event.snapshot_begin:
            self.pending, self.partial, self.complete = [], True, False
        if self.partial and (event.snapshot_end or event.snapshot_snip):
            self.partial, self.complete = False, True
        self.pending.append(event)
        if event.tx_pending or self.partial:
            return
        if self.complete:
            self.book = {}
            self.complete = False
        for item in self.pending:
            size = getattr(item, "size", 0.0)
            if item.remove_event or not size > 0:
                self.book.pop(item.index, None)
            else:
                self.book[item.index] = item
        self.pending = []
        self.published += 1
        assert not self.crossed(), f"crossed book published: {self.levels()}"

    def levels(self) -> tuple[list[float], list[float]]:
        bids = sorted((o.price for o in self.book.values() if o.order_side == "BUY"), reverse=True)  # type: ignore[attr-defined]
        asks = sorted(o.price for o in self.book.values() if o.order_side == "SELL")  # type: ignore[attr-defined]
        return bids, asks

    def crossed(self) -> bool:
        bids, asks = self.levels()
        return bool(bids and asks and bids[0] >= asks[0])


def content(book: dict[int, Order]) -> dict[int, tuple[str | None, float, float]]:
    return {index: (o.order_side, o.price, o.size) for index, o in book.items()}


# --- pure ---------------------------------------------------------------------------------------


def test_an_order_index_carries_its_source_in_the_top_bits() -> None:
    assert source_index("NTV") == int.from_bytes(b"NTV", "big") << 32
    assert source_index("GLBX") >> 32 == int.from_bytes(b"GLBX", "big")
    assert source_index("AGGREGATE_ASK") < 2**63
    assert source_index("NTV") != source_index("ntv")


def test_an_empty_book_snapshot_is_one_removal_flagged_begin_and_end() -> None:
    book = SimulatedBook("AAPL", "NTV", random.Random(0))
    (event,) = book.snapshot()
    assert event.event_flags == EventFlag.SNAPSHOT_BEGIN | EventFlag.SNAPSHOT_END | (
        EventFlag.REMOVE_EVENT
    )
    assert event.source == "NTV"


def test_replace_makes_the_book_exactly_that_and_refuses_a_crossed_one() -> None:
    book = SimulatedBook("AAPL", "NTV", random.Random(0))
    snapshot = book.replace([(10.0, 100), (9.5, 200)], [(10.5, 50)], now=1)
    assert [o.price for o in snapshot] == [10.0, 9.5, 10.5]
    assert snapshot[0].snapshot_begin
    assert snapshot[-1].snapshot_end
    assert [o.event_flags for o in snapshot[1:-1]] == [0]
    assert merged_levels([book], None) == ([(10.0, 100.0), (9.5, 200.0)], [(10.5, 50.0)])
    cut = book.snapshot(limit=2)
    assert len(cut) == 2
    assert cut[-1].snapshot_snip
    with pytest.raises(ValueError, match="crossed"):
        book.replace([(11.0, 1)], [(10.5, 1)], now=2)
    with pytest.raises(ValueError, match="positive"):
        book.replace([(11.0, 0)], [], now=2)


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    source=st.sampled_from(["NTV", "ntv", "DEX", "GLBX"]),
    mids=st.lists(st.floats(5.0, 500.0), min_size=1, max_size=40),
)
def test_every_step_is_a_transaction_that_leaves_the_book_uncrossed(
    seed: int, source: str, mids: list[float]
) -> None:
    book = SimulatedBook("X", source, random.Random(seed))
    client = Assembler()
    for event in book.snapshot():
        client.feed(event)
    for now, mid in enumerate(mids):
        changes = book.step(mid, now)
        assert changes
        assert all(event.tx_pending for event in changes[:-1])
        assert not changes[-1].tx_pending
        for event in changes:
            client.feed(event)
        assert not book.crossed()
        # The client rebuilt exactly the server's book.
        assert content(client.book) == content(book.orders)  # type: ignore[arg-type]
    if source.islower():  # aggregated: one order a price level
        prices = [(o.order_side, o.price) for o in book.orders.values()]
        assert len(prices) == len(set(prices))


def test_render_gives_each_order_type_its_own_fields() -> None:
    book = SimulatedBook("=AAPL-MSFT", "NTV", random.Random(0))
    (order,) = book.replace([(1.0, 1)], [], now=1)
    (spread,) = render(SpreadOrder, [order])
    assert isinstance(spread, SpreadOrder)
    assert spread.spread_symbol == "=AAPL-MSFT"
    assert spread.index == order.index
    (analytic,) = render(AnalyticOrder, [order])
    assert isinstance(analytic, AnalyticOrder)
    assert analytic.price == 1.0


# --- as subscribers see them --------------------------------------------------------------------


async def test_an_order_subscription_gets_its_sources_book_as_a_snapshot() -> None:
    async with (
        open_dxlink_server(
            config=ServerConfig(simulate=False), market=pinned_market(), in_memory=True
        ) as server,
        open_dxlink(server.url, connector=server.connector()) as feed,
    ):
        server.publish_book("AAPL", "NTV", bids=[(99.0, 100)], asks=[(100.0, 200), (101.0, 5)])
        server.publish_book("AAPL", "DEX", bids=[(98.0, 1)], asks=[])
        async with feed.subscribe(Order, ["AAPL"], source="NTV") as rx:
            with trio.fail_after(10):
                events = [await rx.receive() for _ in range(3)]
        assert {e.source for e in events} == {"NTV"}
        assert events[0].snapshot_begin
        assert events[-1].snapshot_end
        assert sorted(e.price for e in events) == [99.0, 100.0, 101.0]
        async with feed.subscribe(AnalyticOrder, ["AAPL"], source="DEX") as rx:
            with trio.fail_after(10):
                event = await rx.receive()
        assert isinstance(event, AnalyticOrder)
        assert event.price == 98.0
        assert event.flags == EventFlag.SNAPSHOT_BEGIN | EventFlag.SNAPSHOT_END


async def test_switches_cut_snapshots_and_send_transactions_in_pieces() -> None:
    async with (
        open_dxlink_server(
            config=ServerConfig(simulate=False), market=pinned_market(), in_memory=True
        ) as server,
        open_dxlink(server.url, connector=server.connector()) as feed,
    ):
        server.books.max_snapshot_orders = 2
        server.publish_book("AAPL", "NTV", bids=[(99.0, 1), (98.0, 1)], asks=[(100.0, 1)])
        async with feed.subscribe(Order, ["AAPL"], source="NTV") as rx:
            with trio.fail_after(10):
                snapshot = [await rx.receive(), await rx.receive()]
            assert snapshot[-1].snapshot_snip
            frames = server.live[0].frames_sent
            # A transaction of three orders, one frame each: the client sees TX_PENDING twice.
            base = source_index("NTV")
            orders = [
                Order("AAPL", source="NTV", index=base | n, price=97.0, size=1, order_side="BUY")
                for n in (50, 51, 52)
            ]
            server.publish_transaction(*orders, per_message=1)
            with trio.fail_after(10):
                got = [await rx.receive() for _ in range(3)]
            assert [e.tx_pending for e in got] == [True, True, False]
            await until(server, lambda: server.live[0].frames_sent >= frames + 3)
            # The books recorded them: a new subscriber's snapshot has them too.
            assert len(server.books.book("AAPL", "NTV").orders) == 6


async def test_simulated_books_stay_consistent_for_a_subscriber(
    autojump_clock: trio.abc.Clock,
) -> None:
    config = ServerConfig(simulate=True, update_interval=0.25)
    async with (
        open_dxlink_server(config=config, in_memory=True) as server,
        open_dxlink(server.url, connector=server.connector()) as feed,
    ):
        server.books.transaction_per_message = 1  # every transaction spans several frames
        clients = {"NTV": Assembler(), "ntv": Assembler()}

        async def follow(source: str) -> None:
            client = clients[source]
            async with feed.subscribe(Order, ["SPY"], source=source) as rx:
                async for event in rx:
                    assert event.source == source
                    client.feed(event)  # checks every published book
                    if client.published >= 40:
                        return

        with trio.fail_after(600):
            async with trio.open_nursery() as nursery:
                for source in clients:
                    nursery.start_soon(follow, source)
        for source, client in clients.items():
            assert len(client.book) >= 10, source
            bids, asks = client.levels()
            assert bids
            assert asks
        # The aggregated source has one order a price level.
        aggregated = clients["ntv"].book.values()
        assert len({(o.order_side, o.price) for o in aggregated}) == len(aggregated)  # type: ignore[attr-defined]


async def test_a_sourceless_subscription_gets_the_changes_of_every_simulated_source(
    autojump_clock: trio.abc.Clock,
) -> None:
    config = ServerConfig(simulate=True, update_interval=0.25)
    async with (
        open_dxlink_server(config=config, in_memory=True) as server,
        open_dxlink(server.url, connector=server.connector()) as feed,
        feed.subscribe(Order, ["SPY"]) as rx,
    ):
        seen: set[str | None] = set()
        with trio.fail_after(600):
            async for event in rx:
                assert event.event_symbol == "SPY"
                assert not event.snapshot_begin  # changes only: no snapshot
                seen.add(event.source)
                if seen >= set(SIMULATED_SOURCES):
                    break
        assert seen == set(SIMULATED_SOURCES)
        assert {source for _, source in server.books.books} == set(SIMULATED_SOURCES)
