"""Faults a server or a user's code can produce, and how the feed survives them (issue 9).

Each test drives the real client against the local server's fault switches, reached in memory
(``server``) or over loopback.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import AsyncIterator

import pytest
import trio
import trio.testing

from trio_dxlink import (
    NO_RECONNECT,
    AuthenticationError,
    ConnectionClosedError,
    FeedState,
    MalformedDataError,
    Overflow,
    Quote,
    ServerError,
    SubscriptionClosedError,
    Token,
    Trade,
    open_dxlink,
)
from trio_dxlink._buffers import LosslessBuffer
from trio_dxlink._messages import Keepalive
from trio_dxlink.testing import DXLinkServer, ServerConfig, open_dxlink_server

from .conftest import FAST, Session, pinned_market, scripted_server, task_count, until

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup

REVOKED = '{"type":"AUTH_STATE","channel":0,"state":"UNAUTHORIZED"}'


@pytest.fixture
async def server() -> AsyncIterator[DXLinkServer]:
    """This module's server: the conftest one, reached in memory (``server.connector()``)."""
    async with scripted_server(in_memory=True) as srv:
        yield srv


def channel_of(server: DXLinkServer, event_type: str) -> tuple[int, int]:
    """(connection id, channel id) of the live channel subscribed to ``event_type``."""
    for conn in server.live:
        for cid, channel in conn.channels.items():
            if any(key[0] == event_type for key in channel.subscriptions):
                return conn.id, cid
    raise AssertionError(f"no live channel has {event_type}")


# --- item 1: a token rejected on a live connection ---


async def test_revoked_token_reconnects_with_a_fresh_one() -> None:
    config = ServerConfig(simulate=False, token="secret")
    async with open_dxlink_server(config=config, market=pinned_market(), in_memory=True) as srv:
        session = Session(srv.url, ["secret"])
        async with (
            open_dxlink(session, reconnect=FAST, connector=srv.connector()) as feed,
            feed.subscribe(Quote, ["SPY"]) as rx,
        ):
            await until(srv, lambda: ("Quote", "SPY") in srv.subscriptions())
            (first,) = srv.live
            srv.send_raw(first.id, REVOKED)  # the server revokes the live connection's token
            await until(srv, lambda: any(c.id > first.id and c.authorized for c in srv.live))
            await until(srv, lambda: ("Quote", "SPY") in srv.subscriptions())
            srv.publish(Quote("SPY", bid_price=3.0))
            with trio.fail_after(10):
                assert (await rx.receive()).bid_price == 3.0
            assert feed.state is FeedState.CONNECTED
            assert feed.statistics().reconnects == 1
        assert session.calls == 2


async def test_a_session_that_keeps_handing_out_rejected_tokens_ends_in_auth_error() -> None:
    config = ServerConfig(simulate=False, token="secret")
    async with open_dxlink_server(config=config, market=pinned_market(), in_memory=True) as srv:
        session = Session(srv.url, ["secret", "stale"])
        before = task_count()
        with pytest.raises(AuthenticationError, match="rejected"):
            async with open_dxlink(session, reconnect=FAST, connector=srv.connector()):
                await until(srv, lambda: bool(srv.live))
                srv.send_raw(srv.live[0].id, REVOKED)
                await trio.sleep_forever()
        assert session.calls == 4  # the first token, then three rejected in a row
        assert task_count() == before


async def test_renewal_refused_by_the_server_is_retried_with_a_fresh_token(
    autojump_clock: trio.testing.MockClock,
) -> None:
    config = ServerConfig(simulate=False, token="secret")
    async with open_dxlink_server(config=config, market=pinned_market(), in_memory=True) as srv:

        class Expiring(Session):
            async def get_token(self) -> Token:
                token = await super().get_token()
                expires = time.time() + 1000 if self.calls == 1 else 1e12
                return Token(token.token, token.url, expires_at=expires)

        session = Expiring(srv.url, ["secret"])
        async with open_dxlink(
            session,
            reconnect=FAST,
            keepalive_timeout=1e6,
            token_refresh_margin=100,
            connector=srv.connector(),
        ) as feed:
            srv.reject_next_token()  # the renewal, due in 900 s, is refused: close 1008
            with trio.fail_after(5000):
                await feed.wait_state(FeedState.RECONNECTING)
                await feed.wait_state(FeedState.CONNECTED)
            assert feed.statistics().reconnects == 1
        assert session.calls == 3  # the first token, the refused renewal, the reconnect's


# --- item 4: malformed data is skipped, counted and reported; nothing else notices ---

MALFORMED = [
    '{"type":"FEED_DATA","channel":%(c)d,"data":["Quote",["SPY",1.0]]}',  # ragged
    '{"type":"FEED_DATA","channel":%(c)d,"data":["Quote",["Quote","SPY",1,2,3,4,5,"lots"]]}',
    '{"type":"FEED_DATA","channel":%(c)d,"data":["Quote",',  # not JSON
    '{"type":"FEED_DATA","channel":%(c)d,"data":[["Quote","SPY"]]}',  # array for an object
    '{"type":"FEED_DATA","channel":%(c)d,"data":["Quote",' + "[" * 1000 + "]" * 1000 + "]}",
    "[" * 1000 + "]" * 1000,
]


async def test_malformed_data_skips_only_itself(server: DXLinkServer) -> None:
    async with (
        open_dxlink(server.url, connector=server.connector(), reconnect=NO_RECONNECT) as feed,
        feed.subscribe(Quote, ["SPY"], notify_gaps=True, overflow=Overflow.LOSSLESS) as quotes,
        feed.subscribe(Trade, ["SPY"]) as trades,
    ):
        await until(server, lambda: ("Trade", "SPY") in server.subscriptions())
        conn, quote_channel = channel_of(server, "Quote")
        for template in MALFORMED:
            server.send_raw(conn, template % {"c": quote_channel})
            server.publish(Trade("SPY", price=1.0))
            with trio.fail_after(10):
                assert (await trades.receive()).price == 1.0  # the other channel never noticed
        server.publish(Quote("SPY", bid_price=2.0))
        reports: list[str] = []
        with trio.fail_after(10):
            while True:
                try:
                    quote = await quotes.receive()
                except MalformedDataError as exc:
                    reports.append(str(exc))
                    continue
                break
        assert quote.bid_price == 2.0
        assert len(reports) == 1  # skips with no Quote between them are one gap
        assert all(len(report) < 500 for report in reports)
        stats = feed.statistics()
        assert stats.malformed_messages == len(MALFORMED)
        assert stats.events_skipped >= 2
        assert stats.connection_losses == 0
        assert stats.reconnects == 0
        assert quotes.statistics().skipped >= 2
        assert trades.statistics().skipped == 0
        assert feed.state is FeedState.CONNECTED


# --- item 8: the user's own error while the feed is failing ---


async def test_users_cleanup_error_comes_out_alone_with_the_feed_error_as_context(
    server: DXLinkServer,
) -> None:
    with pytest.raises(ValueError, match="cleanup failed") as info:
        async with open_dxlink(server.url, connector=server.connector(), reconnect=NO_RECONNECT):
            try:
                server.drop_all()
                await trio.sleep_forever()  # cancelled when the feed fails
            finally:
                raise ValueError("cleanup failed")
    assert not isinstance(info.value, BaseExceptionGroup)
    assert isinstance(info.value.__context__, ConnectionClosedError)


# --- defects found in review (issue 10) ---


async def test_a_failed_subscribe_leaves_nothing_behind(server: DXLinkServer) -> None:
    # Regression: the wire entry of a subscribe that failed stayed in the feed's state, and
    # the next reconnect replayed it, raised KeyError and ended the whole block.
    Bogus = type("Bogus", (Quote,), {"EVENT_TYPE": "Bogus"})
    async with open_dxlink(server.url, connector=server.connector(), reconnect=FAST) as feed:
        with pytest.raises(TypeError, match="not a registered event type"):
            async with feed.subscribe(Bogus, ["SPY"]):
                pass
        assert feed.statistics().subscriptions == 0
        async with feed.subscribe(Quote, ["SPY"]) as rx:
            await until(server, lambda: ("Quote", "SPY") in server.subscriptions())
            server.drop_all()
            await until(server, lambda: any(c.id > 1 and c.authorized for c in server.live))
            await until(server, lambda: ("Quote", "SPY") in server.subscriptions())
            server.publish(Quote("SPY", bid_price=1.0))
            with trio.fail_after(10):
                assert (await rx.receive()).bid_price == 1.0


# --- handles are trio receive channels (issue 10) ---


async def total_bid(channel: trio.abc.ReceiveChannel[Quote], count: int) -> float:
    """A helper written for trio memory channels: it knows nothing of trio_dxlink."""
    total = 0.0
    async with channel:
        async for quote in channel:
            total += quote.bid_price
            count -= 1
            if count == 0:
                break
    return total


async def test_a_handle_is_a_trio_receive_channel(server: DXLinkServer) -> None:
    send, receive = trio.open_memory_channel[Quote](10)
    for bid in (1.0, 2.0):
        send.send_nowait(Quote("SPY", bid_price=bid))
    assert await total_bid(receive, 2) == 3.0  # the helper works on a memory channel ...
    async with open_dxlink(server.url, connector=server.connector()) as feed:
        rx = feed.subscribe(Quote, ["SPY", "QQQ"], overflow=Overflow.LOSSLESS)
        assert isinstance(rx, trio.abc.ReceiveChannel)
        async with rx:
            with pytest.raises(trio.WouldBlock):
                rx.receive_nowait()
            await until(server, lambda: ("Quote", "QQQ") in server.subscriptions())
            server.publish(Quote("SPY", bid_price=1.5), Quote("QQQ", bid_price=2.5))
            with trio.fail_after(10):
                first = await rx.receive()
            assert rx.receive_nowait().bid_price == 2.5
            assert first.bid_price == 1.5
            server.publish(Quote("SPY", bid_price=3.0), Quote("QQQ", bid_price=4.0))
            with trio.fail_after(10):
                assert await total_bid(rx, 2) == 7.0  # ... and on a handle
        with pytest.raises(SubscriptionClosedError):
            rx.receive_nowait()  # the helper's `async with` closed the handle
        with pytest.raises(AttributeError):
            rx.overflow = Overflow.LATEST  # type: ignore[misc]


# --- item 5: a server's keepalive timeout is not trusted blindly ---


@pytest.mark.parametrize("announced", [-1.0, 0.0, 0.0001, 1e9, math.nan])
async def test_a_nonsense_keepalive_timeout_is_clamped(
    announced: float, autojump_clock: trio.testing.MockClock
) -> None:
    config = ServerConfig(simulate=False, announce_keepalive_timeout=announced)
    async with (
        open_dxlink_server(config=config, market=pinned_market(), in_memory=True) as srv,
        open_dxlink(srv.url, keepalive_interval=30.0, connector=srv.connector()) as feed,
    ):
        await trio.sleep(20)
        (conn,) = srv.live
        keepalives = sum(isinstance(m, Keepalive) for m in conn.received)
        # At most one every half second (the 1 s floor), and none at all if the announced
        # timeout was long: the client's own 30 s interval then rules.
        assert keepalives <= 41
        if announced > 60 or math.isnan(announced):
            assert keepalives == 0
        assert feed.state is FeedState.CONNECTED


# --- found in review: bounded under a server that repeats bad data or long errors ---


async def test_repeated_bad_data_does_not_grow_a_lossless_handle(server: DXLinkServer) -> None:
    async with (
        open_dxlink(server.url, connector=server.connector(), reconnect=NO_RECONNECT) as feed,
        feed.subscribe(Quote, ["SPY"], notify_gaps=True, overflow=Overflow.LOSSLESS) as rx,
        feed.subscribe(Trade, ["SPY"]) as trades,
    ):
        await until(server, lambda: ("Trade", "SPY") in server.subscriptions())
        conn, channel = channel_of(server, "Quote")
        bad = f'{{"type":"FEED_DATA","channel":{channel},"data":["Quote",["SPY","x"]]}}'
        for _ in range(500):
            server.send_raw(conn, bad)
        server.publish(Trade("SPY", price=1.0))  # frames arrive in order: this one comes last
        with trio.fail_after(10):
            await trades.receive()
        assert rx.statistics().skipped == 500
        buffer = rx._buffer
        assert isinstance(buffer, LosslessBuffer)
        assert len(buffer._batches) == 1  # one gap marker, however many skips in a row
        with pytest.raises(MalformedDataError):
            rx.receive_nowait()
        with pytest.raises(trio.WouldBlock):
            rx.receive_nowait()


async def test_a_huge_server_error_text_is_clipped(server: DXLinkServer) -> None:
    with pytest.raises(ServerError) as info:
        async with open_dxlink(server.url, connector=server.connector(), reconnect=NO_RECONNECT):
            await until(server, lambda: bool(server.live))
            server.send_error(server.live[0].id, 0, "X" * 50_000, "y" * 200_000)
            await trio.sleep_forever()
    assert len(str(info.value)) < 1000
    assert len(info.value.message) == 200_000  # the full text stays on the attribute
