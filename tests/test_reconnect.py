"""Staying up: reconnect with replay, dead links, tokens, chunking, error isolation.

Every fault is injected by the local server. Most tests reach it in memory
(:meth:`DXLinkServer.connector`), so they need no socket and the ones that wait for keepalive
timeouts or backoff run instantly under a MockClock; the soak test and the "server gone for
good" test use real loopback sockets.
"""

from __future__ import annotations

import functools
import gc
import os
import random
import time
import tracemalloc
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from typing import Any

import orjson
import pytest
import trio
import trio.testing

from trio_dxlink import (
    AuthenticationError,
    ChannelError,
    ConnectError,
    ConnectionClosedError,
    DataGapError,
    DXLinkFeed,
    FeedState,
    GaveUpError,
    KeepaliveTimeoutError,
    Overflow,
    Quote,
    ReconnectPolicy,
    Token,
    Trade,
    open_dxlink,
)
from trio_dxlink._messages import Auth, FeedSubscription, encode
from trio_dxlink.testing import DXLinkServer, ServerConfig, open_dxlink_server

from .conftest import FAST, pinned_market, task_count, until


@pytest.fixture
async def server() -> AsyncIterator[DXLinkServer]:
    """This module's server: the conftest one, reached in memory."""
    config = ServerConfig(simulate=False, keep_closed_connections=True)
    async with open_dxlink_server(config=config, market=pinned_market(), in_memory=True) as srv:
        yield srv


@pytest.fixture
async def token_server() -> AsyncIterator[DXLinkServer]:
    """A server that requires the token ``"secret"``, reached in memory."""
    config = ServerConfig(simulate=False, token="secret", keep_closed_connections=True)
    async with open_dxlink_server(config=config, market=pinned_market(), in_memory=True) as srv:
        yield srv


def connect(
    srv: DXLinkServer, target: object = None, **kwargs: Any
) -> AbstractAsyncContextManager[DXLinkFeed]:
    """``open_dxlink`` to ``srv`` in memory (``target``: a token source instead of its URL)."""
    return open_dxlink(
        srv.url if target is None else target,  # type: ignore[arg-type]
        connector=srv.connector(),
        **kwargs,
    )


def subscription_messages(server: DXLinkServer, connection: int) -> list[FeedSubscription]:
    return [m for m in server.connection(connection).received if isinstance(m, FeedSubscription)]


async def test_drop_resumes_on_the_same_handle_with_full_replay(server: DXLinkServer) -> None:
    before = task_count()
    async with (
        connect(server, reconnect=FAST) as feed,
        feed.subscribe(Quote, ["SPY", "AAPL"]) as quotes,
        feed.subscribe(Trade, ["SPY"], overflow=Overflow.LOSSLESS) as trades,
    ):
        await until(server, lambda: ("Trade", "SPY") in server.subscriptions())
        server.publish(Quote("SPY", bid_price=1.0))
        with trio.fail_after(5):
            assert (await quotes.receive()).bid_price == 1.0

        server.drop_all()
        await until(server, lambda: len(server.live) == 1 and server.live[0].id == 2)
        await until(server, lambda: ("Trade", "SPY") in server.subscriptions())
        await until(server, lambda: ("Quote", "AAPL") in server.subscriptions())

        replayed = subscription_messages(server, 2)
        assert all(m.reset for m in replayed)
        symbols = {(e.type, e.symbol) for m in replayed for e in m.add or ()}
        assert symbols == {("Quote", "SPY"), ("Quote", "AAPL"), ("Trade", "SPY")}

        server.publish(Quote("SPY", bid_price=2.0), Trade("SPY", price=3.0))
        with trio.fail_after(5):
            # the replayed subscription first brings the server's current value back
            while (await quotes.receive()).bid_price != 2.0:
                pass
            while (await trades.receive()).price != 3.0:
                pass
        stats = feed.statistics()
        assert stats.reconnects == 1
        assert stats.connection_losses == 1
        assert isinstance(stats.reason, ConnectionClosedError)
        assert quotes.statistics().gaps == 1
    assert task_count() == before


async def test_changes_made_while_disconnected_apply_on_the_next_connection(
    server: DXLinkServer,
) -> None:
    policy = ReconnectPolicy(initial_delay=0.2)
    async with (
        connect(server, reconnect=policy) as feed,
        feed.subscribe(Quote, ["SPY"]) as rx,
    ):
        await until(server, lambda: ("Quote", "SPY") in server.subscriptions())
        server.drop_all()
        with trio.fail_after(5):
            await feed.wait_state(FeedState.RECONNECTING)
        rx.add(["QQQ"])
        rx.remove(["SPY"])
        with trio.fail_after(5):
            await feed.wait_state(FeedState.CONNECTED)
        await until(server, lambda: ("Quote", "QQQ") in server.subscriptions())
        assert ("Quote", "SPY") not in server.subscriptions()
        assert server.connection(2).received  # the new connection did the work


async def test_notify_gaps_marks_the_gap_in_stream_order(server: DXLinkServer) -> None:
    async with (
        connect(server, reconnect=FAST) as feed,
        feed.subscribe(Trade, ["SPY"], overflow=Overflow.LOSSLESS, notify_gaps=True) as rx,
    ):
        await until(server, lambda: ("Trade", "SPY") in server.subscriptions())
        server.publish(Trade("SPY", price=1.0))
        with trio.fail_after(5):
            while rx.statistics().buffered < 1:  # in the handle's buffer, not yet read
                await trio.testing.wait_all_tasks_blocked()
        server.drop_all()
        await until(server, lambda: ("Trade", "SPY") in server.subscriptions())
        server.publish(Trade("SPY", price=2.0))
        with trio.fail_after(5):
            assert (await rx.receive()).price == 1.0
            with pytest.raises(DataGapError):
                await rx.receive()
            assert (await rx.receive()).price == 2.0


async def test_stall_is_a_dead_link_and_reconnects_within_the_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with (
        open_dxlink_server(
            config=ServerConfig(simulate=False), market=pinned_market(), in_memory=True
        ) as srv,
        connect(srv, reconnect=FAST, keepalive_timeout=10) as feed,
        feed.subscribe(Quote, ["SPY"]) as rx,
    ):
        await until(srv, lambda: ("Quote", "SPY") in srv.subscriptions())
        srv.stall()
        stalled_at = trio.current_time()
        with trio.fail_after(60):
            await feed.wait_state(FeedState.RECONNECTING)
        detected = trio.current_time() - stalled_at
        assert detected <= 10.5
        assert isinstance(feed.statistics().reason, KeepaliveTimeoutError)
        srv.resume()
        with trio.fail_after(60):
            await feed.wait_state(FeedState.CONNECTED)
        await until(srv, lambda: any(c.id > 1 for c in srv.live))
        await until(srv, lambda: ("Quote", "SPY") in srv.subscriptions())
        srv.publish(Quote("SPY", bid_price=4.0))
        with trio.fail_after(10):
            assert (await rx.receive()).bid_price == 4.0


async def test_rejected_token_on_reconnect_fails_fast(token_server: DXLinkServer) -> None:
    before = task_count()
    started = trio.current_time()
    with pytest.raises(AuthenticationError):
        async with connect(token_server, token="secret", reconnect=FAST) as feed:
            token_server.reject_all_tokens = True
            token_server.drop_all()
            await feed.wait_state(FeedState.CLOSED)
    assert trio.current_time() - started < 5
    assert len(token_server.connections) == 2  # one retry connection, no more
    assert task_count() == before


class ExpiringSession:
    """Hands out short-lived tokens; counts how often it was asked."""

    def __init__(self, url: str, lifetime: float) -> None:
        self.url = url
        self.lifetime = lifetime
        self.calls = 0

    async def get_token(self) -> Token:
        await trio.lowlevel.checkpoint()
        self.calls += 1
        return Token("secret", self.url, expires_at=time.time() + self.lifetime)


async def test_token_renewed_before_expiry_without_losing_subscriptions(
    autojump_clock: trio.testing.MockClock,
) -> None:
    config = ServerConfig(simulate=False, token="secret")
    async with open_dxlink_server(config=config, market=pinned_market(), in_memory=True) as srv:
        session = ExpiringSession(srv.url, lifetime=1000)
        async with (
            connect(srv, session, token_refresh_margin=100, keepalive_timeout=1e6) as feed,
            feed.subscribe(Quote, ["SPY"]) as rx,
        ):
            await until(srv, lambda: ("Quote", "SPY") in srv.subscriptions())
            with trio.fail_after(5000):
                await srv.wait_for(
                    lambda: sum(isinstance(m, Auth) for m in srv.connection(1).received) >= 3
                )
            assert session.calls >= 3
            assert len(srv.connections) == 1  # renewed in place, no reconnect
            assert ("Quote", "SPY") in srv.subscriptions()
            srv.publish(Quote("SPY", bid_price=6.0))
            with trio.fail_after(10):
                assert (await rx.receive()).bid_price == 6.0
            assert feed.statistics().reconnects == 0


async def test_25000_symbols_subscribe_in_chunks_under_the_budget() -> None:
    config = ServerConfig(simulate=False, max_message_size=16 * 1024)
    async with (
        open_dxlink_server(config=config, market=pinned_market(), in_memory=True) as srv,
        connect(srv, reconnect=FAST) as feed,
    ):
        symbols = [f".SPXW2612{i % 28 + 1:02d}{'CP'[i % 2]}{4000 + i}" for i in range(25_000)]
        async with feed.subscribe(Quote, symbols):
            with trio.fail_after(30):
                await srv.wait_for(lambda: len(srv.subscriptions("Quote")) == 25_000)
        messages = subscription_messages(srv, 1)
        assert len(messages) > 25_000 * 40 // 8192  # it really was split
        assert all(len(encode(m).encode()) <= 8192 for m in messages)
        assert sum(len(m.add or ()) for m in messages) == 25_000
        assert len(srv.connections) == 1  # no 1009, no reconnect


async def test_multi_megabyte_feed_data_is_accepted() -> None:
    config = ServerConfig(simulate=False, max_events_per_message=50_000)
    async with (
        open_dxlink_server(config=config, market=pinned_market(), in_memory=True) as srv,
        connect(srv) as feed,
    ):
        symbols = [f"SYM{i}" for i in range(30_000)]
        async with feed.subscribe(
            Quote, symbols, overflow=Overflow.LOSSLESS, max_buffer=50_000
        ) as rx:
            with trio.fail_after(30):
                await srv.wait_for(lambda: len(srv.subscriptions("Quote")) == 30_000)
            events = [Quote(s, bid_price=1.0, ask_price=2.0, bid_size=3.0) for s in symbols]
            size = len(orjson.dumps([[e.event_symbol, 1.0, 2.0, 3.0] * 3 for e in events]))
            assert size > 2_000_000
            srv.publish_many(events)
            got = 0
            with trio.fail_after(30):
                while got < len(symbols):
                    got += len(await rx.receive_batch())
            assert got == 30_000


async def test_channel_error_fails_only_that_channels_handles(server: DXLinkServer) -> None:
    async with (
        connect(server, reconnect=FAST) as feed,
        feed.subscribe(Quote, ["SPY"]) as quotes,
        feed.subscribe(Trade, ["SPY"]) as trades,
    ):
        await until(server, lambda: ("Trade", "SPY") in server.subscriptions())
        conn = server.connection(1)
        (quote_channel,) = [
            cid
            for cid, ch in conn.channels.items()
            if any(key[0] == "Quote" for key in ch.subscriptions)
        ]
        server.send_error(1, quote_channel, "BAD_ACTION", "quote channel broke")
        with trio.fail_after(5), pytest.raises(ChannelError) as info:
            await quotes.receive()
        assert info.value.code == "BAD_ACTION"
        assert info.value.channel == quote_channel
        server.publish(Trade("SPY", price=9.0))
        with trio.fail_after(5):
            assert (await trades.receive()).price == 9.0
        assert feed.state is FeedState.CONNECTED
        assert len(server.connections) == 1
        # a new subscription for the failed type opens a fresh channel
        async with feed.subscribe(Quote, ["QQQ"]) as again:
            await until(server, lambda: ("Quote", "QQQ") in server.subscriptions())
            server.publish(Quote("QQQ", bid_price=1.5))
            with trio.fail_after(5):
                assert (await again.receive()).bid_price == 1.5


async def test_unprompted_channel_close_fails_only_that_channel(server: DXLinkServer) -> None:
    async with (
        connect(server) as feed,
        feed.subscribe(Quote, ["SPY"]) as quotes,
        feed.subscribe(Trade, ["SPY"]) as trades,
    ):
        await until(server, lambda: ("Trade", "SPY") in server.subscriptions())
        conn = server.connection(1)
        (trade_channel,) = [
            cid
            for cid, ch in conn.channels.items()
            if any(key[0] == "Trade" for key in ch.subscriptions)
        ]
        server.close_channel(1, trade_channel)
        with trio.fail_after(5), pytest.raises(ChannelError, match="CHANNEL_CLOSED"):
            await trades.receive()
        server.publish(Quote("SPY", bid_price=2.0))
        with trio.fail_after(5):
            assert (await quotes.receive()).bid_price == 2.0


async def run_server(
    scope: trio.CancelScope,
    *,
    in_memory: bool = False,
    task_status: trio.TaskStatus[DXLinkServer],
) -> None:
    """Serve until ``scope`` is cancelled: a server that can be taken away for good."""
    with scope:
        async with open_dxlink_server(
            config=ServerConfig(simulate=False), market=pinned_market(), in_memory=in_memory
        ) as srv:
            task_status.started(srv)
            await trio.sleep_forever()


async def test_give_up_after_attempts_when_the_server_is_gone() -> None:
    before = task_count()
    policy = ReconnectPolicy(max_attempts=3, initial_delay=0.01, jitter=0.0)
    async with trio.open_nursery() as nursery:
        server_scope = trio.CancelScope()
        srv = await nursery.start(run_server, server_scope)
        with pytest.raises(GaveUpError, match="3 reconnect attempts") as info:
            async with open_dxlink(srv.url, reconnect=policy) as feed:
                server_scope.cancel()  # the server goes away for good
                with trio.fail_after(10):
                    await feed.wait_state(FeedState.CLOSED)
        assert isinstance(info.value.__cause__, ConnectionClosedError)
        assert feed.statistics().connection_losses == 1
    assert task_count() == before


async def test_give_up_after_a_deadline(autojump_clock: trio.testing.MockClock) -> None:
    policy = ReconnectPolicy(give_up_after=30, initial_delay=1, max_delay=4, jitter=0.0)
    async with trio.open_nursery() as nursery:
        server_scope = trio.CancelScope()
        srv = await nursery.start(functools.partial(run_server, server_scope, in_memory=True))
        with pytest.raises(GaveUpError, match="after 30 s"):
            async with connect(srv, reconnect=policy) as feed:
                server_scope.cancel()
                lost = trio.current_time()
                await feed.wait_state(FeedState.CLOSED)
        assert 25 <= trio.current_time() - lost <= 31


def test_backoff_grows_caps_and_jitters() -> None:
    policy = ReconnectPolicy(initial_delay=0.5, max_delay=8, multiplier=2, jitter=0.2)
    rng = random.Random(1)
    delays = [policy.delay(n, rng) for n in range(1, 10)]
    assert 0.4 <= delays[0] <= 0.6
    assert all(d <= 8 * 1.2 for d in delays)
    assert delays[-1] >= 8 * 0.8
    assert len(set(delays)) == len(delays)  # jittered


@pytest.mark.soak
async def test_soak_drops_every_few_hundred_ms() -> None:
    seconds = float(os.environ.get("DXLINK_SOAK_SECONDS", "3"))
    config = ServerConfig(simulate=True, update_interval=0.01)
    async with (
        open_dxlink_server(config=config, market=pinned_market()) as srv,
        connect(srv, reconnect=FAST) as feed,
    ):
        symbols = ["SPY", "AAPL", "QQQ", "MSFT"]
        handles = [
            feed.subscribe(Quote, symbols),
            feed.subscribe(Trade, symbols, overflow=Overflow.DROP_OLDEST, max_buffer=1000),
            feed.subscribe(Quote, symbols[:2], overflow=Overflow.LOSSLESS),
        ]
        counts = [0] * len(handles)
        per_round: list[list[int]] = []
        arrived = [trio.Event() for _ in handles]

        async def consume(i: int) -> None:
            async with handles[i] as rx:
                async for batch in rx.batches():
                    counts[i] += len(batch)
                    arrived[i].set()

        tracemalloc.start()
        try:
            async with trio.open_nursery() as nursery:
                for i in range(len(handles)):
                    nursery.start_soon(consume, i)
                deadline = trio.current_time() + seconds
                baseline = None
                rounds = 0
                while trio.current_time() < deadline:
                    await trio.sleep(0.3)
                    srv.drop_all()
                    rounds += 1
                    before = list(counts)
                    arrived[:] = [trio.Event() for _ in handles]
                    with trio.fail_after(10):
                        await feed.wait_state(FeedState.CONNECTED)
                        for event in arrived:
                            await event.wait()
                    per_round.append([c - b for c, b in zip(counts, before, strict=True)])
                    if rounds == 3:
                        gc.collect()
                        baseline = tracemalloc.get_traced_memory()[0]
                gc.collect()
                current = tracemalloc.get_traced_memory()[0]
                nursery.cancel_scope.cancel()
        finally:
            tracemalloc.stop()
        assert rounds >= 3
        assert all(all(n > 0 for n in row) for row in per_round)  # every handle, every round
        assert feed.statistics().reconnects >= rounds - 1
        if baseline is not None:
            assert current - baseline < 2_000_000, (baseline, current)


class FlakySession:
    """A session whose token service fails now and then."""

    def __init__(self, url: str, failures: set[int]) -> None:
        self.url = url
        self.failures = failures
        self.calls = 0

    async def get_token(self) -> tuple[str, str]:
        await trio.lowlevel.checkpoint()
        self.calls += 1
        if self.calls in self.failures:
            raise OSError("token service unreachable")
        return ("secret", self.url)


async def test_a_failing_session_is_retried_on_reconnect(token_server: DXLinkServer) -> None:
    session = FlakySession(token_server.url, failures={2, 3})
    async with (
        connect(token_server, session, reconnect=FAST) as feed,
        feed.subscribe(Quote, ["SPY"]) as rx,
    ):
        await until(token_server, lambda: ("Quote", "SPY") in token_server.subscriptions())
        token_server.drop_all()
        await until(token_server, lambda: len(token_server.connections) == 2)
        await until(token_server, lambda: ("Quote", "SPY") in token_server.subscriptions())
        assert session.calls == 4
        assert "token service unreachable" in str(feed.statistics().reason)
        token_server.publish(Quote("SPY", bid_price=3.0))
        with trio.fail_after(5):
            while (await rx.receive()).bid_price != 3.0:
                pass


async def test_a_session_failing_at_first_is_a_connect_error(server: DXLinkServer) -> None:
    with pytest.raises(ConnectError, match="token service unreachable"):
        async with connect(server, FlakySession(server.url, failures={1})):
            pass


class BadSession:
    async def get_token(self) -> Any:
        await trio.lowlevel.checkpoint()
        return "just-a-token"


async def test_a_session_returning_nonsense_is_an_authentication_error() -> None:
    with pytest.raises(AuthenticationError, match="must return a Token"):
        async with open_dxlink(BadSession()):
            pass
