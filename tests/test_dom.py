"""feed.depth_of_market against the local server (in memory): books from the server's simulated
order books, across a reconnect, failing alone, conflating for a slow reader."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from trio_dxlink import (
    ChannelError,
    ConnectionClosedError,
    DomLevel,
    DomSnapshot,
    Quote,
    SubscriptionClosedError,
    open_dxlink,
)
from trio_dxlink._messages import DomSetup
from trio_dxlink.testing import ServerConfig, open_dxlink_server

from .conftest import FAST, NOW, pinned_market, until


async def next_book(dom: object, predicate: object = lambda book: True) -> DomSnapshot:
    with trio.fail_after(10):
        async for book in dom:  # type: ignore[attr-defined]
            if predicate(book):  # type: ignore[operator]
                return book  # type: ignore[no-any-return]
    raise AssertionError("the handle ended")


async def test_depth_of_market_yields_the_servers_books_across_a_reconnect() -> None:
    async with (
        open_dxlink_server(
            config=ServerConfig(simulate=False), market=pinned_market(), in_memory=True
        ) as server,
        open_dxlink(server.url, connector=server.connector(), reconnect=FAST) as feed,
    ):
        server.publish_book("AAPL", "NTV", bids=[(99.0, 300), (99.5, 100)], asks=[(100.0, 200)])
        server.publish_book("AAPL", "DEX", bids=[(99.5, 50)], asks=[(100.5, 10)])
        async with feed.depth_of_market("AAPL", sources=["NTV", "DEX"], depth=5) as dom:
            book = await next_book(dom)
            assert book.symbol == "AAPL"
            assert book.sources == ("NTV", "DEX")
            assert book.time == int(NOW * 1000)
            assert book.bids == (DomLevel(99.5, 150.0), DomLevel(99.0, 300.0))
            assert book.asks == (DomLevel(100.0, 200.0), DomLevel(100.5, 10.0))
            assert dom.latest == book
            assert dom.config is not None
            assert dom.config.depth_limit == 5
            server.publish_book("AAPL", "NTV", bids=[(98.0, 1)], asks=[(101.0, 2)])
            book = await next_book(dom)
            assert book.bids == (DomLevel(99.5, 50.0), DomLevel(98.0, 1.0))

            server.drop_all()
            await until(server, lambda: len(server.live) == 1 and server.live[0].id == 2)
            server.publish_book("AAPL", "DEX", bids=[], asks=[(100.25, 7)])
            book = await next_book(dom, lambda b: b.asks[0] == DomLevel(100.25, 7.0))
            assert book.bids == (DomLevel(98.0, 1.0),)
            setups = [msg for msg in server.live[0].received if isinstance(msg, DomSetup)]
            assert [s.accept_depth_limit for s in setups] == [5]  # replayed on the new connection
        await until(server, lambda: server.live[0].protocol.dom_channels == {})


async def test_an_error_on_a_dom_channel_fails_that_handle_only() -> None:
    async with (
        open_dxlink_server(
            config=ServerConfig(simulate=False), market=pinned_market(), in_memory=True
        ) as server,
        open_dxlink(server.url, connector=server.connector()) as feed,
        feed.subscribe(Quote, ["SPY"]) as quotes,
    ):
        server.publish_book("AAPL", "NTV", bids=[(1.0, 1)], asks=[(2.0, 1)])
        async with (
            feed.depth_of_market("AAPL", sources=["NTV"]) as failing,
            feed.depth_of_market("MSFT", sources=["NTV"]) as other,
        ):
            await next_book(failing)
            await next_book(other)
            conn = server.live[0]
            (cid,) = [c for c, ch in conn.protocol.dom_channels.items() if ch.symbol == "AAPL"]
            server.send_error(conn.id, cid, "BAD_ACTION", "no book for you")
            with pytest.raises(ChannelError, match="no book for you"), trio.fail_after(10):
                await failing.receive()
            assert failing.failed
            server.publish_book("MSFT", "NTV", bids=[(5.0, 1)], asks=[(6.0, 1)])
            assert (await next_book(other)).bids == (DomLevel(5.0, 1.0),)
            server.publish(Quote("SPY", bid_price=3.0))
            with trio.fail_after(10):
                assert (await quotes.receive()).bid_price == 3.0
            # A server-side CHANNEL_CLOSED fails the other one the same way.
            (cid,) = list(server.live[0].protocol.dom_channels)
            server.close_channel(conn.id, cid)
            with pytest.raises(ChannelError, match="CHANNEL_CLOSED"), trio.fail_after(10):
                await other.receive()


async def test_a_slow_reader_sees_the_newest_book(autojump_clock: trio.abc.Clock) -> None:
    async with (
        open_dxlink_server(
            config=ServerConfig(simulate=False), market=pinned_market(), in_memory=True
        ) as server,
        open_dxlink(server.url, connector=server.connector()) as feed,
        feed.depth_of_market("AAPL", sources=["NTV"], depth=1) as dom,
    ):
        await next_book(dom)  # the empty book
        for size in range(1, 6):
            server.publish_book("AAPL", "NTV", bids=[(10.0, size)], asks=[])
        await trio.testing.wait_all_tasks_blocked()
        assert dom.statistics().received == 6
        book = dom.receive_nowait()
        assert book.bids == (DomLevel(10.0, 5.0),)
        assert dom.statistics().conflated == 4
        with pytest.raises(trio.WouldBlock):
            dom.receive_nowait()


async def test_the_handle_ends_with_its_block_and_with_the_feed() -> None:
    async with open_dxlink_server(
        config=ServerConfig(simulate=False), market=pinned_market(), in_memory=True
    ) as server:
        async with open_dxlink(server.url, connector=server.connector()) as feed:
            dom = feed.depth_of_market("AAPL", sources="NTV")
            assert dom.sources == ("NTV",)
            async with dom:
                await next_book(dom)
            with pytest.raises(SubscriptionClosedError):
                await dom.receive()
            dom_after = feed.depth_of_market("AAPL", sources=["NTV"])
            async with dom_after:
                pass
            with pytest.raises(SubscriptionClosedError):
                await dom_after.__aenter__()
            held = feed.depth_of_market("IBM", sources=["NTV"])
            await held.__aenter__()
        with pytest.raises(ConnectionClosedError):
            await held.receive()
        with pytest.raises(ConnectionClosedError):
            feed.depth_of_market("IBM", sources=["NTV"])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"sources": []}, "sources"), ({"sources": [""]}, "sources"), ({"depth": -1}, "depth")],
)
async def test_bad_arguments_are_refused(kwargs: dict[str, object], match: str) -> None:
    async with (
        open_dxlink_server(
            config=ServerConfig(simulate=False), market=pinned_market(), in_memory=True
        ) as server,
        open_dxlink(server.url, connector=server.connector()) as feed,
    ):
        with pytest.raises(ValueError, match=match):
            feed.depth_of_market("AAPL", **{"sources": ["NTV"], **kwargs})  # type: ignore[arg-type]


async def test_simulated_books_move_with_the_market(autojump_clock: trio.abc.Clock) -> None:
    config = ServerConfig(simulate=True, update_interval=0.5)
    async with (
        open_dxlink_server(config=config, market=pinned_market(), in_memory=True) as server,
        open_dxlink(server.url, connector=server.connector()) as feed,
        feed.depth_of_market("SPY", sources=["NTV", "ntv"], depth=10) as dom,
    ):
        first = await next_book(dom)
        assert len(first.bids) == len(first.asks) == 10
        assert first.bids[0].price < first.asks[0].price
        assert list(first.bids) == sorted(first.bids, key=lambda level: -level.price)
        assert list(first.asks) == sorted(first.asks, key=lambda level: level.price)
        changed = await next_book(dom, lambda book: book != first)
        assert changed.bids[0].price < changed.asks[0].price
