"""Transport faults of the local server: answering a WebSocket upgrade with something else.

:meth:`~trio_dxlink.testing.DXLinkServer.reject_upgrades` answers upgrades with an HTTP status
(:class:`Reject`), :meth:`~trio_dxlink.testing.DXLinkServer.answer_with_bytes` with bytes that
need not be HTTP (:class:`Garbage`, sent by :func:`answer_with` on a TCP stream taken over before
trio-websocket reads it). :class:`TrackingListener` is the listener that makes both possible: it
remembers each accepted TCP stream, so the server can also close the socket itself.
"""

from __future__ import annotations

import ipaddress
import ssl
from collections.abc import Callable
from typing import Any, TypeVar

import attrs
import trio

__all__ = [
    "HANDSHAKE_TIMEOUT",
    "Fault",
    "Garbage",
    "Reject",
    "TrackingListener",
    "answer_with",
    "peer_key",
]

HANDSHAKE_TIMEOUT = 10.0
"""How long an upgrade (or a faulty answer to one) may take."""


@attrs.frozen
class Reject:
    """Upgrade fault: answer with this HTTP status and body."""

    status: int
    body: bytes


@attrs.frozen
class Garbage:
    """Upgrade fault: answer with these bytes, which need not be HTTP."""

    data: bytes


Fault = TypeVar("Fault", Reject, Garbage)


async def answer_with(stream: trio.abc.Stream, data: bytes) -> None:
    """Read the client's request head, answer with ``data``, close."""
    try:
        with trio.move_on_after(HANDSHAKE_TIMEOUT):
            request = b""
            while b"\r\n\r\n" not in request and len(request) < 65536:
                chunk = await stream.receive_some()
                if not chunk:
                    break
                request += chunk
            await stream.send_all(data)
    except trio.BrokenResourceError:
        pass
    finally:
        await trio.aclose_forcefully(stream)


def peer_key(address: object, port: int) -> tuple[str, int]:
    return (str(ipaddress.ip_address(str(address))), port)


class TrackingListener(trio.abc.Listener[trio.abc.Stream]):
    """A listener that remembers each accepted TCP stream by peer address, so the server can
    close the TCP socket itself (trio-websocket does not expose it).

    ``intercept(stream)`` may take a TCP stream over before anything is read (returning True);
    it is then not handed on. With an ``ssl_context`` the stream handed on is TLS over TCP.
    """

    def __init__(
        self,
        inner: trio.SocketListener,
        streams: dict[tuple[str, int], Any],
        intercept: Callable[[trio.abc.Stream], bool] = lambda _: False,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._inner = inner
        self._streams = streams
        self._intercept = intercept
        self._ssl_context = ssl_context

    async def accept(self) -> trio.abc.Stream:
        stream = await self._inner.accept()
        while self._intercept(stream):
            stream = await self._inner.accept()
        try:
            host, port, *_ = stream.socket.getpeername()
        except OSError:
            return self._wrap(stream)
        for key, old in list(self._streams.items()):
            if old.socket.fileno() == -1:
                del self._streams[key]
        self._streams[peer_key(host, port)] = stream
        return self._wrap(stream)

    def _wrap(self, stream: trio.SocketStream) -> trio.abc.Stream:
        if self._ssl_context is None:
            return stream
        return trio.SSLStream(stream, self._ssl_context, server_side=True, https_compatible=True)

    async def aclose(self) -> None:
        await self._inner.aclose()
