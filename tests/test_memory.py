"""The in-memory transport: the real client and the real test server, WebSocket frames and all,
over :func:`trio.testing.memory_stream_pair` instead of a socket, so hours of keepalives and
backoff pass instantly under a MockClock."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from trio_dxlink import (
    ConnectError,
    FeedState,
    Quote,
    ReconnectPolicy,
    open_dxlink,
)
from trio_dxlink._messages import Keepalive
from trio_dxlink.testing import ServerConfig, open_dxlink_server
from trio_dxlink.testing._server import IN_MEMORY_URL

from .conftest import SocketCheck, pinned_market, task_count, until


async def test_an_in_memory_server_opens_no_socket(sockets: SocketCheck) -> None:
    async with open_dxlink_server(
        config=ServerConfig(simulate=False), market=pinned_market(), in_memory=True
    ) as server:
        assert server.url == IN_MEMORY_URL
        assert server.port == 0
        async with (
            open_dxlink(server.url, connector=server.connector()) as feed,
            feed.subscribe(Quote, ["SPY"]) as rx,
        ):
            await until(server, lambda: ("Quote", "SPY") in server.subscriptions())
            assert sockets.leaked() == []  # connected, subscribed, and still no socket
            server.publish(Quote("SPY", bid_price=1.5))
            with trio.fail_after(5):
                assert (await rx.receive()).bid_price == 1.5


async def test_six_hours_of_keepalives_pass_instantly(
    autojump_clock: trio.testing.MockClock,
) -> None:
    config = ServerConfig(simulate=False, keepalive_timeout=60)
    async with (
        open_dxlink_server(config=config, market=pinned_market(), in_memory=True) as server,
        open_dxlink(
            server.url, connector=server.connector(), keepalive_timeout=60, keepalive_interval=30
        ) as feed,
        feed.subscribe(Quote, ["SPY"]) as rx,
    ):
        started = trio.current_time()
        await trio.sleep(6 * 3600)
        assert trio.current_time() - started >= 6 * 3600
        connection = server.live[0]
        assert connection.id == 1  # the same connection all along
        keepalives = sum(isinstance(m, Keepalive) for m in connection.received)
        assert 6 * 3600 / 30 - 2 <= keepalives <= 6 * 3600 / 30 + 2
        stats = feed.statistics()
        assert stats.reconnects == 0
        assert stats.state is FeedState.CONNECTED
        server.publish(Quote("SPY", bid_price=2.0))
        with trio.fail_after(5):
            assert (await rx.receive()).bid_price == 2.0


async def test_reconnect_backoff_follows_the_policy_in_virtual_time(
    autojump_clock: trio.testing.MockClock,
) -> None:
    policy = ReconnectPolicy(initial_delay=1.0, multiplier=2.0, max_delay=8.0, jitter=0.0)
    async with open_dxlink_server(
        config=ServerConfig(simulate=False), market=pinned_market(), in_memory=True
    ) as server:
        before = task_count()
        async with open_dxlink(server.url, connector=server.connector(), reconnect=policy) as feed:
            server.reject_upgrades(503, count=4)  # four failed attempts after the drop
            lost_at = trio.current_time()
            server.drop_all()
            with trio.fail_after(100):
                await feed.wait_state(FeedState.RECONNECTING)
                await feed.wait_state(FeedState.CONNECTED)
            waited = trio.current_time() - lost_at
            # five attempts (four turned away), each after its delay: 1 + 2 + 4 + 8 + 8 (capped)
            assert 23 <= waited < 24
            assert server.rejected_upgrades == 4
            assert feed.statistics().reconnects == 1
        assert task_count() == before


async def test_upgrade_faults_apply_in_memory() -> None:
    async with open_dxlink_server(
        config=ServerConfig(simulate=False), market=pinned_market(), in_memory=True
    ) as server:
        server.reject_upgrades(503, body=b"maintenance", count=1)
        with pytest.raises(ConnectError, match="HTTP 503") as info:
            async with open_dxlink(server.url, connector=server.connector()):
                pass
        assert info.value.status_code == 503
        server.answer_with_bytes(b"\x00\x01 not http", count=1)
        with pytest.raises(ConnectError, match="invalid answer"):
            async with open_dxlink(server.url, connector=server.connector()):
                pass
        async with open_dxlink(server.url, connector=server.connector()) as feed:
            assert feed.statistics().state is FeedState.CONNECTED


async def test_a_stopped_server_is_a_connect_error() -> None:
    async with open_dxlink_server(
        config=ServerConfig(simulate=False), market=pinned_market(), in_memory=True
    ) as server:
        connector = server.connector()
    with pytest.raises(ConnectError, match="not running"):
        async with open_dxlink(server.url, connector=connector):
            pass


async def test_a_tcp_server_takes_in_memory_connections_too() -> None:
    async with open_dxlink_server(
        config=ServerConfig(simulate=False), market=pinned_market()
    ) as server:
        assert server.url.startswith("ws://127.0.0.1:")
        async with open_dxlink(server.url, connector=server.connector()) as feed:
            assert feed.statistics().state is FeedState.CONNECTED
            assert server.live[0].remote != ""


async def test_in_memory_refuses_tls() -> None:
    with pytest.raises(TypeError, match="no ssl_context"):
        async with open_dxlink_server(
            config=ServerConfig(simulate=False), in_memory=True, ssl_context=object()
        ):  # type: ignore[arg-type]
            pass


async def test_a_long_lived_connection_keeps_a_bounded_record(
    autojump_clock: trio.testing.MockClock,
) -> None:
    config = ServerConfig(simulate=False, keep_received=50)
    async with (
        open_dxlink_server(config=config, market=pinned_market(), in_memory=True) as server,
        open_dxlink(server.url, connector=server.connector(), keepalive_interval=1) as feed,
    ):
        await trio.sleep(1000)  # about a thousand KEEPALIVEs from the client
        assert feed.statistics().reconnects == 0
        assert 50 <= len(server.live[0].received) <= 50 + 50 // 8
        assert 50 <= len(server.received) <= 50 + 50 // 8
        assert all(isinstance(m, Keepalive) for _, m in server.received)


async def test_latest_never_waits_and_get_event_takes_several_symbols() -> None:
    async with (
        open_dxlink_server(
            config=ServerConfig(simulate=False), market=pinned_market(), in_memory=True
        ) as server,
        open_dxlink(server.url, connector=server.connector()) as feed,
    ):
        assert feed.latest(Quote, "SPY") is None  # nothing known: None at once
        async with feed.subscribe(Quote, ["SPY"]) as rx:
            await until(server, lambda: ("Quote", "SPY") in server.subscriptions())
            server.publish(Quote("SPY", bid_price=1.0))
            with trio.fail_after(5):
                await rx.receive()
            latest = feed.latest(Quote, "SPY")
            assert latest is not None
            assert latest.bid_price == 1.0

            async def publish_when_subscribed() -> None:
                await until(server, lambda: ("Quote", "AAPL") in server.subscriptions())
                server.publish(Quote("AAPL", bid_price=2.0), Quote("QQQ", bid_price=3.0))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(publish_when_subscribed)
                with trio.fail_after(5):
                    both = await feed.get_event(Quote, ["SPY", "AAPL", "QQQ"])
            assert list(both) == ["SPY", "AAPL", "QQQ"]
            assert [q.bid_price for q in both.values()] == [1.0, 2.0, 3.0]
        with pytest.raises(TypeError, match="event class"):
            feed.latest(int, "SPY")  # type: ignore[type-var]
