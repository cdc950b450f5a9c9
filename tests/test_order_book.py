"""``feed.order_book(...)`` end to end: the real client and the local server over the in-memory
transport; the tests publish the Order events (snapshots, transactions split across frames)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import attrs
import pytest
import trio
import trio.testing

from trio_dxlink import (
    BookView,
    ChannelError,
    DataGapError,
    DXLinkFeed,
    FeedState,
    LiveOrderBook,
    Order,
    Quote,
    ReconnectPolicy,
    SnapshotStatus,
    SymbolError,
    open_dxlink,
)
from trio_dxlink.events import EventFlag
from trio_dxlink.testing import DXLinkServer, ServerConfig, open_dxlink_server

from .conftest import pinned_market, until

BEGIN = int(EventFlag.SNAPSHOT_BEGIN)
END = int(EventFlag.SNAPSHOT_END)
REMOVE = int(EventFlag.REMOVE_EVENT)
FAST = ReconnectPolicy(initial_delay=0.5, jitter=0.0)


def order(index: int, side: str, price: float, size: float = 1.0, **kw: Any) -> Order:
    kw.setdefault("source", "NTV")
    return Order("AAPL", index=index, order_side=side, price=price, size=size, **kw)


def snapshot(*orders: Order) -> list[Order]:
    out = list(orders)
    out[0] = attrs.evolve(out[0], event_flags=out[0].event_flags | BEGIN)
    out[-1] = attrs.evolve(out[-1], event_flags=out[-1].event_flags | END)
    return out


def subscribed(server: DXLinkServer, *sources: str, connection: int | None = None) -> bool:
    keys = set()
    for conn in server.live:
        if connection is None or conn.id == connection:
            for channel in conn.channels.values():
                keys.update(channel.subscriptions)
    return all(("Order", "AAPL", source) in keys for source in sources)


def ladder(view: BookView[Any]) -> tuple[list[tuple[float, float]], list[tuple[float, float]]]:
    return ([(b.price, b.size) for b in view.bids], [(a.price, a.size) for a in view.asks])


async def view_where(
    book: LiveOrderBook[Any], predicate: Callable[[BookView[Any]], bool]
) -> BookView[Any]:
    with trio.fail_after(10):
        while True:
            view = await book.next_view()
            if predicate(view):
                return view


@pytest.fixture
async def memory() -> AsyncIterator[tuple[DXLinkServer, DXLinkFeed]]:
    async with (
        open_dxlink_server(
            config=ServerConfig(simulate=False), market=pinned_market(), in_memory=True
        ) as server,
        open_dxlink(server.url, connector=server.connector(), reconnect=FAST) as feed,
    ):
        yield server, feed


async def test_a_book_fills_from_a_snapshot_and_follows_transactions(
    memory: tuple[DXLinkServer, DXLinkFeed],
) -> None:
    server, feed = memory
    async with feed.order_book("AAPL", sources=["NTV", "ntv"], depth=2) as book:
        assert book.sources == ("NTV", "ntv")
        assert book.view.bids == ()
        assert book.view.sources == {
            "NTV": SnapshotStatus.PENDING,
            "ntv": SnapshotStatus.PENDING,
        }
        await until(server, lambda: subscribed(server, "NTV", "ntv"))
        server.publish(
            *snapshot(order(1, "BUY", 10.0, 5), order(2, "BUY", 9.5, 1), order(3, "SELL", 11.0))
        )
        server.publish(order(9, "SELL", 10.75, 300, source="ntv", count=4, event_flags=BEGIN | END))
        view = await view_where(book, lambda v: v.complete)
        assert ladder(view) == ([(10.0, 5), (9.5, 1)], [(10.75, 300), (11.0, 1)])
        assert view.asks[0].count == 4
        # A move that crosses half way, sent one event per frame.
        server.publish_transaction(
            order(4, "BUY", 11.5, 2),
            order(3, "SELL", 11.0, event_flags=REMOVE),
            order(5, "SELL", 12.0, 1),
            order(1, "BUY", 10.0, 0.0),
            order(6, "SELL", 12.5, 1),
        )
        server.publish(order(9, "SELL", 10.75, 0.0, source="ntv"))
        final = await view_where(book, lambda v: not v.ask_orders or v.asks[0].price == 12.0)
        assert not final.crossed
        assert ladder(final) == ([(11.5, 2), (9.5, 1)], [(12.0, 1), (12.5, 1)])
        stats = book.statistics()
        assert stats.events == 10
        assert stats.book.orders == 4
        assert stats.views_delivered >= 3


async def test_the_book_is_rebuilt_after_a_reconnect_and_the_reader_is_told(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with (
        open_dxlink_server(
            config=ServerConfig(simulate=False), market=pinned_market(), in_memory=True
        ) as server,
        open_dxlink(server.url, connector=server.connector(), reconnect=FAST) as feed,
        feed.order_book("AAPL", sources=["NTV", "GLBX"], notify_gaps=True) as book,
    ):
        await until(server, lambda: subscribed(server, "NTV", "GLBX"))
        server.publish(*snapshot(order(1, "BUY", 10.0), order(2, "SELL", 11.0)))
        server.publish(order(3, "BUY", 9.0, source="GLBX", event_flags=BEGIN | END))
        before = await view_where(book, lambda v: v.complete)
        assert ladder(before) == ([(10.0, 1), (9.0, 1)], [(11.0, 1)])
        server.drop_all()
        with trio.fail_after(10), pytest.raises(DataGapError):
            await book.next_view()
        stale = await book.next_view()  # the same orders, no longer confirmed
        assert ladder(stale) == ladder(before)
        assert set(stale.sources.values()) == {SnapshotStatus.PENDING}
        assert not stale.rebuilt
        await feed.wait_state(FeedState.CONNECTED)
        # The new connection's subscriptions get the server's books as fresh snapshots (the
        # orders it recorded): the book is rebuilt from them, and says so.
        after = await view_where(book, lambda v: v.complete)
        assert after.rebuilt
        assert after.rebuilds == 1
        assert ladder(after) == ladder(before)
        assert book.statistics().book.gaps == 1
        # A later snapshot replaces one source's orders whole.
        server.publish(*snapshot(order(7, "BUY", 10.25), order(8, "SELL", 10.5)))
        replaced = await view_where(book, lambda v: v.asks[0].price == 10.5)
        assert ladder(replaced) == ([(10.25, 1), (9.0, 1)], [(10.5, 1)])


async def test_a_slow_reader_gets_the_newest_book_not_a_backlog(
    memory: tuple[DXLinkServer, DXLinkFeed],
) -> None:
    server, feed = memory
    async with feed.order_book("AAPL", sources=["NTV"], depth=1) as book:
        await until(server, lambda: subscribed(server, "NTV"))
        server.publish(*snapshot(order(1, "BUY", 10.0), order(2, "SELL", 20.0)))
        for step in range(1, 50):
            server.publish(order(1, "BUY", 10.0 + step / 10))
        server.publish(order(2, "SELL", 19.0))
        await trio.testing.wait_all_tasks_blocked()
        view = await view_where(book, lambda v: v.asks[0].price == 19.0)
        assert ladder(view) == ([(pytest.approx(14.9), 1)], [(19.0, 1)])
        stats = book.statistics()
        assert stats.views_delivered < 10
        assert stats.conflated > 40
        assert book.view is view  # nothing changed since


async def test_closing_the_book_ends_iteration_and_unsubscribes(
    memory: tuple[DXLinkServer, DXLinkFeed],
) -> None:
    server, feed = memory
    seen: list[BookView[Any]] = []
    async with trio.open_nursery() as nursery:
        book = feed.order_book("AAPL", sources=["NTV"])
        async with book:
            await until(server, lambda: subscribed(server, "NTV"))

            async def read() -> None:
                async for view in book:
                    seen.append(view)

            nursery.start_soon(read)
            server.publish(order(1, "BUY", 10.0, event_flags=BEGIN | END))
            await trio.testing.wait_all_tasks_blocked()
            assert [ladder(v) for v in seen] == [([(10.0, 1)], [])]
    assert not nursery.child_tasks  # the reader's loop ended when the book closed
    await until(server, lambda: not subscribed(server, "NTV"))
    with pytest.raises(Exception, match="only once"):
        await book.__aenter__()


async def test_a_channel_error_fails_the_book(memory: tuple[DXLinkServer, DXLinkFeed]) -> None:
    server, feed = memory
    async with (
        feed.order_book("AAPL", sources=["NTV"]) as book,
        feed.subscribe(Quote, ["AAPL"]) as quotes,
    ):
        await until(server, lambda: subscribed(server, "NTV"))
        conn = server.live[0]
        (channel,) = [
            cid
            for cid, ch in conn.channels.items()
            if any(k[0] == "Order" for k in ch.subscriptions)
        ]
        server.send_error(conn.id, channel, "UNKNOWN", "order channel broke")
        with trio.fail_after(10), pytest.raises(ChannelError):
            await book.next_view()
        with pytest.raises(ChannelError):  # and again, for every later read
            await book.next_view()
        assert quotes.statistics().received == 0  # another channel is not affected


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"sources": "NTV"}, TypeError),
        ({"sources": ["NTVXY"]}, SymbolError),
        ({"sources": []}, SymbolError),
        ({"sources": ["NTV"], "depth": 0}, ValueError),
        ({"sources": ["NTV"], "event_type": Quote}, TypeError),
    ],
)
async def test_bad_arguments_are_refused_before_anything_is_subscribed(
    memory: tuple[DXLinkServer, DXLinkFeed], kwargs: dict[str, Any], error: type[Exception]
) -> None:
    _, feed = memory
    with pytest.raises(error):
        feed.order_book("AAPL", **kwargs)
    with pytest.raises(SymbolError):
        feed.order_book("*", sources=["NTV"])
    assert feed.statistics().subscriptions == 0
