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
* the TCP (and TLS) stream is opened here and handed to
  :func:`trio_websocket.wrap_client_stream`, so this module owns it and closes it on every
  path: a failed, timed-out or cancelled upgrade, and after any close (including a 1009, where
  trio-websocket 0.12.2 leaves the TCP socket open);
* the TLS handshake is done here, before the upgrade (``ssl_context=`` or the system's CAs), so
  an untrusted certificate is a :class:`CertificateError` at once (trio-websocket would do it
  lazily in its reader task, which swallows the error and leaves the upgrade waiting for the
  connect timeout);
* trio-websocket's reader task runs under a small host (:class:`_ReaderHost`) that keeps what
  it raises, so an HTTP answer instead of an upgrade (``ConnectionRejected``) or bytes that are
  not HTTP (h11's errors) become a :class:`ConnectError` (``status_code`` set for an HTTP
  answer) instead of escaping from a nursery as an exception group.

Every failure to connect, with either connector, is a :class:`ConnectError` whose message names
the URL (without its query string, which may hold a token) and a non-empty reason, such as
``timed out after 30 s``; the reconnect loop retries them like any lost connection.

A test or a faster library can supply any other ``Connector``; :func:`websockets_connector`
uses the ``websockets`` library instead.
"""

from __future__ import annotations

import math
import ssl
import sys
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from typing import Any, Protocol, cast

import attrs
import trio
import trio_websocket

from ._exceptions import CertificateError, ConnectError, ConnectionClosedError, MessageTooBigError
from ._util import _leaves, clip, describe, unwrap_group

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup

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
    def __init__(self, ws: trio_websocket.WebSocketConnection, reader: _ReaderHost) -> None:
        self._ws = ws
        self._reader = reader

    async def send(self, text: str) -> None:
        try:
            await self._ws.send_message(text)
        except trio_websocket.ConnectionClosed as exc:
            raise self._closed(exc) from exc

    async def receive(self) -> str | bytes:
        try:
            return await self._ws.get_message()
        except trio_websocket.ConnectionClosed as exc:
            raise self._closed(exc) from exc

    def _closed(self, exc: trio_websocket.ConnectionClosed) -> ConnectionClosedError:
        failure = self._reader.error
        if failure is not None:  # trio-websocket's reader task died of it
            return ConnectionClosedError(
                f"connection failed ({type(failure).__name__}: {_reason(failure)})"
            )
        return _closed(exc)

    async def aclose(self) -> None:
        await self._ws.aclose()


def websocket_connector(
    *,
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
    message_queue_size: int = 16,
    receive_buffer_size: int = 64 * 1024,
    connect_timeout: float = 30.0,
    disconnect_timeout: float = 5.0,
    ssl_context: ssl.SSLContext | None = None,
) -> Connector:
    """A :data:`Connector` over trio-websocket with the given limits.

    ``connect_timeout`` bounds the TCP connect, the TLS handshake and the WebSocket upgrade
    together. ``ssl_context`` is used for ``wss://`` URLs (default: the system's trusted CAs,
    ``ssl.create_default_context()``); ``ws://`` URLs ignore it.
    """
    default_context: list[ssl.SSLContext] = []

    def tls_context() -> ssl.SSLContext:
        if ssl_context is not None:
            return ssl_context
        if not default_context:
            default_context.append(ssl.create_default_context())
        return default_context[0]

    async def open_stream(target: _Target) -> trio.abc.Stream:
        return await _open_stream(target, tls_context() if target.tls else None)

    return connector_over_streams(
        open_stream,
        max_message_size=max_message_size,
        message_queue_size=message_queue_size,
        receive_buffer_size=receive_buffer_size,
        connect_timeout=connect_timeout,
        disconnect_timeout=disconnect_timeout,
    )


StreamOpener = Callable[["_Target"], Awaitable[trio.abc.Stream]]
"""Opens the byte stream a WebSocket runs over, to a parsed ``ws://``/``wss://`` URL."""


def connector_over_streams(
    open_stream: StreamOpener,
    *,
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
    message_queue_size: int = 16,
    receive_buffer_size: int = 64 * 1024,
    connect_timeout: float = 30.0,
    disconnect_timeout: float = 5.0,
) -> Connector:
    """A :data:`Connector` speaking trio-websocket over whatever byte stream ``open_stream``
    returns: TCP/TLS for :func:`websocket_connector`, a memory stream for the test server's
    in-memory connector (``trio_dxlink.testing``). The stream is owned and closed here."""

    @asynccontextmanager
    async def connect(url: str) -> AsyncIterator[Transport]:
        target = _Target.parse(url)
        stream: trio.abc.Stream | None = None
        try:
            with unwrap_group():
                async with trio.open_nursery() as nursery:
                    reader = _ReaderHost(nursery)
                    ws: trio_websocket.WebSocketConnection | None = None
                    with trio.move_on_after(connect_timeout):
                        try:
                            stream = await open_stream(target)
                        except (OSError, trio.BrokenResourceError) as exc:
                            raise _connect_error(target.safe, exc) from exc
                        ws = await reader.upgrade(
                            stream,
                            target,
                            message_queue_size=message_queue_size,
                            max_message_size=max_message_size,
                            receive_buffer_size=receive_buffer_size,
                        )
                    if ws is None:
                        raise ConnectError(
                            f"could not connect to {target.safe}: "
                            f"timed out after {connect_timeout:g} s"
                        )
                    opened: trio.abc.Stream = cast(trio.abc.Stream, stream)  # set with ws
                    try:
                        yield _WebSocketTransport(ws, reader)
                    finally:
                        # A graceful close needs trio-websocket's reader task, which a
                        # cancellation from outside has already stopped: then just close.
                        graceful = trio.current_effective_deadline() != -math.inf
                        with trio.CancelScope(shield=True):
                            if graceful:
                                with trio.move_on_after(disconnect_timeout):
                                    await ws.aclose()
                            # Close the socket before the reader is stopped, not after: the
                            # peer sees the end of the connection as soon as possible.
                            await trio.aclose_forcefully(opened)
                        nursery.cancel_scope.cancel()
        finally:
            if stream is not None:
                with trio.CancelScope(shield=True):
                    await trio.aclose_forcefully(stream)

    return connect


@attrs.frozen
class _Target:
    """Where a ``ws://`` / ``wss://`` URL points."""

    host: str
    port: int
    authority: str  # the Host header: host[:port] as written in the URL
    resource: str  # path and query
    tls: bool
    safe: str  # the URL without its query string, for messages

    @classmethod
    def parse(cls, url: str) -> _Target:
        safe = _safe(url)
        try:
            parts = urllib.parse.urlsplit(url)
            port = parts.port
        except ValueError as exc:
            raise ConnectError(f"bad DXLink URL {safe}: {exc}") from exc
        scheme = parts.scheme.lower()
        if scheme not in ("ws", "wss"):
            raise ConnectError(f"bad DXLink URL {safe}: the scheme must be ws:// or wss://")
        if not parts.hostname:
            raise ConnectError(f"bad DXLink URL {safe}: no host")
        tls = scheme == "wss"
        resource = parts.path or "/"
        if parts.query:
            resource += "?" + parts.query
        return cls(
            host=parts.hostname,
            port=port if port is not None else (443 if tls else 80),
            authority=parts.netloc.rpartition("@")[2],
            resource=resource,
            tls=tls,
            safe=safe,
        )


async def _open_stream(target: _Target, context: ssl.SSLContext | None) -> trio.abc.Stream:
    """TCP to the target, and TLS over it (handshake done) when ``context`` is given. Closed
    again if anything fails or is cancelled."""
    tcp = await trio.open_tcp_stream(target.host, target.port)
    if context is None:
        return tcp
    try:
        tls = trio.SSLStream(tcp, context, server_hostname=target.host, https_compatible=True)
        # Done here, not lazily by trio-websocket's first send, which would swallow a
        # certificate error and leave the upgrade waiting for the connect timeout.
        await tls.do_handshake()
    except BaseException:
        with trio.CancelScope(shield=True):
            await trio.aclose_forcefully(tcp)
        raise
    return tls


class _ReaderHost:
    """Stands in for the nursery :func:`trio_websocket.wrap_client_stream` starts its reader
    task in: what the reader raises (``ConnectionRejected`` for an HTTP answer, h11's errors
    for bytes that are not HTTP) is kept here instead of escaping from our nursery, and the
    upgrade stops waiting as soon as the reader has stopped."""

    def __init__(self, nursery: trio.Nursery) -> None:
        self._nursery = nursery
        self._on_stop: Callable[[], object] | None = None
        self.error: Exception | None = None

    def start_soon(self, fn: Callable[..., Awaitable[object]], *args: object) -> None:
        self._nursery.start_soon(self._run, fn, *args)

    async def _run(self, fn: Callable[..., Awaitable[object]], *args: object) -> None:
        try:
            await fn(*args)
        except Exception as exc:
            self.error = exc
        finally:
            if self._on_stop is not None:
                self._on_stop()

    async def upgrade(
        self, stream: trio.abc.Stream, target: _Target, **limits: Any
    ) -> trio_websocket.WebSocketConnection:
        """The WebSocket upgrade over ``stream``. Raises :class:`ConnectError` if the reader
        stops (the server answered with something else, or closed) before it completes."""
        with trio.CancelScope() as scope:
            self._on_stop = scope.cancel
            ws = await trio_websocket.wrap_client_stream(
                cast(trio.Nursery, self),
                cast(trio.SocketStream, stream),
                target.authority,
                target.resource,
                **limits,
            )
            self._on_stop = None
            return ws
        self._on_stop = None
        exc = self.error
        if isinstance(exc, trio_websocket.ConnectionRejected):
            status = exc.status_code
            body = (exc.body or b"")[:200].decode("utf-8", "replace")
            body = " ".join(body.split())
            raise ConnectError(
                f"could not connect to {target.safe}: the server answered HTTP {status} "
                f"instead of upgrading to WebSocket{': ' + describe(body) if body else ''}",
                status_code=status,
            ) from exc
        if exc is not None:
            # h11 / wsproto errors: trio-websocket's own handling of a bad answer fails too,
            # so what the server sent is described by the first error of the chain.
            raise ConnectError(
                f"could not connect to {target.safe}: invalid answer to the WebSocket upgrade "
                f"({_reason(_root(exc))})"
            ) from exc
        raise ConnectError(
            f"could not connect to {target.safe}: "
            "the connection was closed during the WebSocket upgrade"
        )


def _connect_error(safe: str, exc: BaseException) -> ConnectError:
    """The :class:`ConnectError` for a failure to open the TCP/TLS stream. trio reports TLS
    failures as ``BrokenResourceError`` caused by the ``ssl`` error."""
    cause = exc
    if isinstance(exc, trio.BrokenResourceError) and exc.__cause__ is not None:
        cause = exc.__cause__
    if isinstance(cause, ssl.SSLCertVerificationError):
        problem = cause.verify_message or cause.reason or "certificate verify failed"
        return CertificateError(
            f"could not connect to {safe}: TLS certificate verify failed: {problem}"
        )
    if isinstance(cause, ssl.SSLError):
        return ConnectError(f"could not connect to {safe}: TLS handshake failed: {_reason(cause)}")
    return ConnectError(f"could not connect to {safe}: {_reason(cause)}")


def _reason(exc: BaseException) -> str:
    """A non-empty, bounded description of ``exc`` and of its cause, if it has one (trio's
    "all attempts to connect failed" has the reasons in the group it was raised from)."""
    text = str(exc) or type(exc).__name__
    cause = exc.__cause__
    if isinstance(cause, BaseExceptionGroup):
        details = "; ".join(dict.fromkeys(str(leaf) for leaf in _leaves(cause) if str(leaf)))
    else:
        details = str(cause) if cause is not None else ""
    if details and details not in text:
        text += f" ({details})"
    return clip(text, 300)


def _root(exc: BaseException) -> BaseException:
    """The first exception of ``exc``'s chain (what was raised first, while handling nothing)."""
    seen = {id(exc)}
    while True:
        inner = exc.__cause__ or exc.__context__
        if inner is None or id(inner) in seen:
            return exc
        seen.add(id(inner))
        exc = inner


def _safe(url: str) -> str:
    """The URL without a query string (which could carry credentials)."""
    return url.split("?", 1)[0]


def websockets_connector(
    *,
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
    max_queue: int = 16,
    connect_timeout: float = 30.0,
    disconnect_timeout: float = 5.0,
    ssl_context: ssl.SSLContext | None = None,
) -> Connector:
    """A :data:`Connector` over the ``websockets`` library's trio implementation.

    Optional: needs ``pip install 'trio-dxlink[websockets]'`` (websockets >= 16). WebSocket
    pings are turned off, since DXLink ignores them and the client sends JSON keepalives.
    ``ssl_context`` is used for ``wss://`` URLs (default: the system's trusted CAs); ``ws://``
    URLs ignore it. Failures to connect are translated exactly as by
    :func:`websocket_connector`.
    """
    try:
        from websockets.exceptions import ConnectionClosed, InvalidStatus, InvalidURI
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
        safe = _safe(url)
        tls = urllib.parse.urlsplit(url).scheme.lower() == "wss"
        async with AsyncExitStack() as stack:
            try:
                ws = await stack.enter_async_context(
                    ws_connect(
                        url,
                        ssl=ssl_context if tls else None,
                        max_size=max_message_size,
                        max_queue=max_queue,
                        ping_interval=None,
                        open_timeout=connect_timeout,
                        close_timeout=disconnect_timeout,
                        compression=None,
                    )
                )
            except InvalidURI as exc:  # its text would repeat the URL, query string and all
                raise ConnectError(f"bad DXLink URL {safe}: {exc.msg}") from exc
            except InvalidStatus as exc:
                status = exc.response.status_code
                raise ConnectError(
                    f"could not connect to {safe}: the server answered HTTP {status} "
                    "instead of upgrading to WebSocket",
                    status_code=status,
                ) from exc
            except (TimeoutError, trio.TooSlowError) as exc:
                raise ConnectError(
                    f"could not connect to {safe}: timed out after {connect_timeout:g} s"
                ) from exc
            except Exception as exc:  # OSError, TLS, InvalidHandshake, BrokenResourceError...
                raise _connect_error(safe, exc) from exc
            yield _Transport(ws)

    return connect
