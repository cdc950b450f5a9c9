"""Transport faults: HTTP answers instead of an upgrade, bytes that are not HTTP, TLS, timeouts,
cancellation, and sockets closed on every one of those paths.

Everything runs over real sockets on 127.0.0.1. Both connectors are held to the same rules.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import pytest
import trio
import trio.testing
import trustme

from trio_dxlink import (
    CertificateError,
    ConnectError,
    ConnectionClosedError,
    Connector,
    FeedState,
    Quote,
    ReconnectPolicy,
    open_dxlink,
    websocket_connector,
    websockets_connector,
)
from trio_dxlink.testing import DXLinkServer, ServerConfig, open_dxlink_server

from .conftest import SocketCheck, pinned_market

CONNECTORS: dict[str, Callable[..., Connector]] = {
    "trio-websocket": websocket_connector,
    "websockets": websockets_connector,
}


def needs_websockets_trio() -> None:
    """websockets' trio client ships only for Python 3.11+ (websockets 16 has none on 3.10)."""
    pytest.importorskip("websockets.trio.client", reason="websockets has no trio client here")


@pytest.fixture(params=sorted(CONNECTORS))
def make_connector(request: pytest.FixtureRequest) -> Callable[..., Connector]:
    if request.param == "websockets":
        needs_websockets_trio()
    return CONNECTORS[request.param]


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def server_tls(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    return context


@pytest.fixture(scope="module")
def client_tls(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


async def connect(url: str, connector: Connector) -> None:
    """Open and close one connection."""
    async with connector(url):
        pass


# --- HTTP answers instead of an upgrade ---------------------------------------------------------


@pytest.mark.parametrize(("status", "body"), [(503, b"busy, try later"), (200, b"<html>hi</html>")])
async def test_an_http_answer_is_a_connect_error_with_its_status(
    sockets: SocketCheck,
    make_connector: Callable[..., Connector],
    status: int,
    body: bytes,
) -> None:
    async with open_dxlink_server(
        config=ServerConfig(simulate=False), market=pinned_market()
    ) as srv:
        srv.reject_upgrades(status, body=body)
        with trio.fail_after(5), pytest.raises(ConnectError) as info:
            await connect(srv.url, make_connector())
        assert info.value.status_code == status
        assert f"HTTP {status}" in str(info.value)
        assert srv.rejected_upgrades == 1
        assert sockets.connected_to(srv.port) == []


async def test_an_http_answer_on_first_connect_ends_open_dxlink(server: DXLinkServer) -> None:
    server.reject_upgrades(503)
    with trio.fail_after(5), pytest.raises(ConnectError) as info:
        async with open_dxlink(server.url):
            pass
    assert info.value.status_code == 503


async def test_a_reconnect_that_meets_503_retries_until_upgraded(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with (
        open_dxlink_server(config=ServerConfig(simulate=False), market=pinned_market()) as srv,
        open_dxlink(srv.url, keepalive_timeout=1e6) as feed,  # the default reconnect policy
        feed.subscribe(Quote, ["SPY"]) as rx,
    ):
        with trio.fail_after(60):
            await srv.wait_for(lambda: ("Quote", "SPY") in srv.subscriptions())
        srv.reject_upgrades(503, body=b"overloaded", count=2)
        srv.drop_all()
        with trio.fail_after(600):
            await srv.wait_for(lambda: srv.rejected_upgrades == 2)
            await srv.wait_for(lambda: ("Quote", "SPY") in srv.subscriptions())
            await feed.wait_state(FeedState.CONNECTED)
        assert [c.id for c in srv.live] == [2]
        reason = feed.statistics().reason
        assert isinstance(reason, ConnectError)
        assert reason.status_code == 503
        srv.publish(Quote("SPY", bid_price=7.0))
        with trio.fail_after(60):
            while (await rx.receive()).bid_price != 7.0:
                pass


# --- bytes that are not HTTP --------------------------------------------------------------------


async def test_bytes_that_are_not_http_are_a_connect_error(
    sockets: SocketCheck, make_connector: Callable[..., Connector]
) -> None:
    async with open_dxlink_server(
        config=ServerConfig(simulate=False), market=pinned_market()
    ) as srv:
        srv.answer_with_bytes(b"\x00\x01 SSH-2.0-nonsense\r\n\r\n")
        with trio.fail_after(5), pytest.raises(ConnectError, match="could not connect"):
            await connect(srv.url, make_connector())
        assert sockets.connected_to(srv.port) == []
        srv.accept_upgrades()
        await connect(srv.url, make_connector())  # and it is a server again


# --- TLS ----------------------------------------------------------------------------------------


async def test_tls_with_a_trusted_certificate_works_end_to_end(
    server_tls: ssl.SSLContext, client_tls: ssl.SSLContext
) -> None:
    async with open_dxlink_server(
        config=ServerConfig(simulate=False), market=pinned_market(), ssl_context=server_tls
    ) as srv:
        assert srv.url.startswith("wss://127.0.0.1:")
        async with (
            open_dxlink(srv.url, ssl_context=client_tls) as feed,
            feed.subscribe(Quote, ["SPY"]) as rx,
        ):
            with trio.fail_after(5):
                await srv.wait_for(lambda: ("Quote", "SPY") in srv.subscriptions())
            srv.publish(Quote("SPY", bid_price=1.25))
            with trio.fail_after(5):
                assert (await rx.receive()).bid_price == 1.25


async def test_tls_with_the_websockets_connector(
    server_tls: ssl.SSLContext, client_tls: ssl.SSLContext
) -> None:
    needs_websockets_trio()
    connector = websockets_connector(ssl_context=client_tls)
    async with (
        open_dxlink_server(
            config=ServerConfig(simulate=False), market=pinned_market(), ssl_context=server_tls
        ) as srv,
        open_dxlink(srv.url, connector=connector),
    ):
        assert len(srv.live) == 1


async def test_an_untrusted_certificate_is_reported_at_once(
    sockets: SocketCheck, server_tls: ssl.SSLContext, make_connector: Callable[..., Connector]
) -> None:
    async with open_dxlink_server(
        config=ServerConfig(simulate=False), market=pinned_market(), ssl_context=server_tls
    ) as srv:
        # the default context trusts the system's CAs, not the test CA
        connector = make_connector(connect_timeout=30)
        with trio.fail_after(5), pytest.raises(CertificateError) as info:
            await connect(srv.url, connector)
        message = str(info.value)
        assert "certificate verify failed" in message
        assert "unable to get local issuer certificate" in message  # ssl's verify_message
        assert message.startswith(f"could not connect to {srv.url}")
        assert isinstance(info.value, ConnectError)
        assert sockets.connected_to(srv.port) == []


async def test_a_wrong_host_name_is_a_certificate_error(
    ca: trustme.CA, client_tls: ssl.SSLContext
) -> None:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("example.com").configure_cert(context)
    async with open_dxlink_server(
        config=ServerConfig(simulate=False), market=pinned_market(), ssl_context=context
    ) as srv:
        with trio.fail_after(5), pytest.raises(CertificateError, match="mismatch"):
            async with open_dxlink(srv.url, ssl_context=client_tls):
                pass


async def test_ssl_context_and_connector_together_are_a_type_error(
    client_tls: ssl.SSLContext,
) -> None:
    with pytest.raises(TypeError, match="ssl_context"):
        async with open_dxlink(
            "wss://127.0.0.1:1", ssl_context=client_tls, connector=websocket_connector()
        ):
            pass


# --- timeouts, cancellation, sockets ------------------------------------------------------------


class Silent:
    """A TCP server that accepts connections, reads what arrives, and never answers."""

    def __init__(self, listener: trio.SocketListener) -> None:
        self.port: int = listener.socket.getsockname()[1]
        self.url = f"ws://127.0.0.1:{self.port}/realtime"
        self.received = b""
        self.requested = trio.Event()
        self.eof = trio.Event()
        self._listener = listener

    async def serve(self) -> None:
        stream = await self._listener.accept()
        async with stream:
            while chunk := await stream.receive_some():
                self.received += chunk
                if b"\r\n\r\n" in self.received:
                    self.requested.set()
            self.eof.set()


@asynccontextmanager
async def silent_server() -> AsyncIterator[Silent]:
    (listener,) = await trio.open_tcp_listeners(0, host="127.0.0.1")
    async with listener, trio.open_nursery() as nursery:
        silent = Silent(listener)
        nursery.start_soon(silent.serve)
        yield silent
        nursery.cancel_scope.cancel()


async def test_a_connect_timeout_says_so(
    sockets: SocketCheck,
    make_connector: Callable[..., Connector],
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with silent_server() as silent:
        with pytest.raises(ConnectError) as info:
            await connect(silent.url + "?token=secret", make_connector(connect_timeout=7))
        message = str(info.value)
        assert message == f"could not connect to {silent.url}: timed out after 7 s"
        assert "secret" not in message
        assert sockets.connected_to(silent.port) == []
        with trio.fail_after(5):
            await silent.eof.wait()


async def test_a_cancelled_connect_closes_its_socket(
    sockets: SocketCheck, make_connector: Callable[..., Connector]
) -> None:
    async with silent_server() as silent, trio.open_nursery() as nursery:
        cancel = trio.CancelScope()

        async def attempt() -> None:
            with cancel:
                await connect(silent.url, make_connector())

        nursery.start_soon(attempt)
        with trio.fail_after(5):
            await silent.requested.wait()  # the upgrade request is out: mid-handshake
        cancel.cancel()
        with trio.fail_after(5):
            await silent.eof.wait()  # the server saw the socket close
        assert sockets.connected_to(silent.port) == []
    assert cancel.cancelled_caught


@pytest.mark.parametrize("ending", ["exit", "cancel", "drop"])
async def test_a_session_leaves_no_socket_open(
    sockets: SocketCheck, make_connector: Callable[..., Connector], ending: str
) -> None:
    outside = trio.CancelScope()

    async def session(srv: DXLinkServer) -> None:
        policy = ReconnectPolicy(max_attempts=0)  # a drop ends the block
        async with (
            open_dxlink(srv.url, connector=make_connector(), reconnect=policy) as feed,
            feed.subscribe(Quote, ["SPY"]),
        ):
            await srv.wait_for(lambda: ("Quote", "SPY") in srv.subscriptions())
            if ending == "cancel":
                outside.cancel()  # as a user's cancel scope around the block would
                await trio.sleep_forever()
            if ending == "drop":
                srv.drop_all()
                await trio.sleep_forever()

    async with open_dxlink_server(
        config=ServerConfig(simulate=False), market=pinned_market()
    ) as srv:
        with trio.fail_after(5):
            if ending == "drop":
                with pytest.raises(ConnectionClosedError):
                    await session(srv)
            elif ending == "cancel":
                with outside:
                    await session(srv)
                assert outside.cancelled_caught
            else:
                await session(srv)
        assert sockets.connected_to(srv.port) == []


async def test_a_refused_connection_has_a_reason(make_connector: Callable[..., Connector]) -> None:
    async with silent_server() as silent:
        port = silent.port
    with trio.fail_after(5), pytest.raises(ConnectError) as info:
        await connect(f"ws://127.0.0.1:{port}", make_connector())
    assert not str(info.value).rstrip().endswith(":")
