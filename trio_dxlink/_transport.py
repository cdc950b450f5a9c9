"""The seam between the DXLink client and whatever carries its WebSocket text frames.

The client only needs :class:`Transport`: send a text frame, receive the next one, close. The
default :func:`websocket_connector` uses trio-websocket, configured deliberately:

* ``max_message_size`` is 64 MiB by default: a FEED_DATA for a whole option chain runs to
  several MB, and trio-websocket's 1 MiB default would close the connection with 1009;
* the socket is read 64 KiB at a time (trio-websocket reads 4 KiB by default, which more than
  halves the throughput of large FEED_DATA frames);
* the client's reader drains :meth:`Transport.receive` continuously, so trio-websocket's
  internal queue never fills and stops its own reader (which would also stop pong/close
  handling);
* after any close (including a 1009, where trio-websocket 0.12.2 leaves the TCP socket open)
  the underlying stream is closed explicitly.

A test or a faster library can supply any other ``Connector``.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from typing import Any, Protocol

import trio
import trio_websocket

from ._exceptions import ConnectError, ConnectionClosedError, MessageTooBigError

__all__ = ["Connector", "Transport", "websocket_connector", "websockets_connector"]

DEFAULT_MAX_MESSAGE_SIZE = 64 * 1024 * 1024


class Transport(Protocol):
    """One open connection that carries DXLink text frames."""

    async def send(self, text: str) -> None:
        """Send one text frame. Raises :class:`ConnectionClosedError` if the connection ended."""

    async def receive(self) -> str | bytes:
        """The next frame. Raises :class:`ConnectionClosedError` when the connection ends."""

    async def aclose(self) -> None:
        """Close the connection gracefully (a WebSocket close handshake). Idempotent."""


Connector = Callable[[str], AbstractAsyncContextManager[Transport]]
"""Opens a :class:`Transport` to a URL; leaving the context closes it."""


def _closed(exc: trio_websocket.ConnectionClosed) -> ConnectionClosedError:
    reason = exc.reason
    code = getattr(reason, "code", None)
    text = getattr(reason, "reason", None)
    name = getattr(reason, "name", "")
    message = f"connection closed (code {code} {name}{': ' + text if text else ''})"
    if code == 1009:
        return MessageTooBigError(message, code, text)
    return ConnectionClosedError(message, code, text)


class _WebSocketTransport:
    def __init__(self, ws: trio_websocket.WebSocketConnection) -> None:
        self._ws = ws

    async def send(self, text: str) -> None:
        try:
            await self._ws.send_message(text)
        except trio_websocket.ConnectionClosed as exc:
            raise _closed(exc) from exc

    async def receive(self) -> str | bytes:
        try:
            return await self._ws.get_message()
        except trio_websocket.ConnectionClosed as exc:
            raise _closed(exc) from exc

    async def aclose(self) -> None:
        await self._ws.aclose()


def websocket_connector(
    *,
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
    message_queue_size: int = 16,
    receive_buffer_size: int = 64 * 1024,
    connect_timeout: float = 30.0,
    disconnect_timeout: float = 5.0,
) -> Connector:
    """A :data:`Connector` over trio-websocket with the given limits."""

    @asynccontextmanager
    async def connect(url: str) -> AsyncIterator[Transport]:
        async with trio.open_nursery() as nursery:
            try:
                with trio.fail_after(connect_timeout):
                    ws = await trio_websocket.connect_websocket_url(
                        nursery,
                        url,
                        message_queue_size=message_queue_size,
                        max_message_size=max_message_size,
                        receive_buffer_size=receive_buffer_size,
                    )
            except trio_websocket.ConnectionRejected as exc:
                raise ConnectError(
                    f"{_safe(url)} refused the WebSocket upgrade (HTTP {exc.status_code})"
                ) from exc
            except (OSError, trio_websocket.HandshakeError, trio.TooSlowError) as exc:
                raise ConnectError(f"could not connect to {_safe(url)}: {exc}") from exc
            except ValueError as exc:
                raise ConnectError(f"bad DXLink URL {_safe(url)}: {exc}") from exc
            try:
                yield _WebSocketTransport(ws)
            finally:
                # A graceful close needs trio-websocket's reader task, which a cancellation
                # from outside has already stopped: then just close the socket.
                graceful = trio.current_effective_deadline() != -math.inf
                with trio.CancelScope(shield=True), trio.move_on_after(disconnect_timeout):
                    if graceful:
                        await ws.aclose()
                    await _close_stream(ws)
                nursery.cancel_scope.cancel()

    return connect


async def _close_stream(ws: Any) -> None:
    stream = getattr(ws, "_stream", None)
    if stream is not None:
        await stream.aclose()


def _safe(url: str) -> str:
    """The URL without a query string (which could carry credentials)."""
    return url.split("?", 1)[0]


def websockets_connector(
    *,
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
    max_queue: int = 16,
    connect_timeout: float = 30.0,
    disconnect_timeout: float = 5.0,
) -> Connector:
    """A :data:`Connector` over the ``websockets`` library's trio implementation.

    Optional: needs ``pip install 'trio-dxlink[websockets]'`` (websockets >= 16). WebSocket
    pings are turned off, since DXLink ignores them and the client sends JSON keepalives.
    """
    try:
        from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI
        from websockets.trio.client import connect as ws_connect
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "websockets_connector needs the 'websockets' package (>= 16) with trio support"
        ) from exc

    def closed(exc: ConnectionClosed) -> ConnectionClosedError:
        frame = exc.rcvd or exc.sent
        code = frame.code if frame is not None else None
        reason = frame.reason if frame is not None else None
        message = f"connection closed (code {code}{': ' + reason if reason else ''})"
        if code == 1009:
            return MessageTooBigError(message, code, reason)
        return ConnectionClosedError(message, code, reason)

    class _Transport:
        def __init__(self, ws: Any) -> None:
            self._ws = ws

        async def send(self, text: str) -> None:
            try:
                await self._ws.send(text)
            except ConnectionClosed as exc:
                raise closed(exc) from exc

        async def receive(self) -> str | bytes:
            try:
                message: str | bytes = await self._ws.recv()
            except ConnectionClosed as exc:
                raise closed(exc) from exc
            return message

        async def aclose(self) -> None:
            await self._ws.aclose()

    @asynccontextmanager
    async def connect(url: str) -> AsyncIterator[Transport]:
        async with AsyncExitStack() as stack:
            try:
                ws = await stack.enter_async_context(
                    ws_connect(
                        url,
                        max_size=max_message_size,
                        max_queue=max_queue,
                        ping_interval=None,
                        open_timeout=connect_timeout,
                        close_timeout=disconnect_timeout,
                        compression=None,
                    )
                )
            except (OSError, InvalidHandshake, TimeoutError, trio.TooSlowError) as exc:
                raise ConnectError(f"could not connect to {_safe(url)}: {exc}") from exc
            except InvalidURI as exc:
                raise ConnectError(f"bad DXLink URL {_safe(url)}: {exc}") from exc
            yield _Transport(ws)

    return connect
