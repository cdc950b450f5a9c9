"""One client connection of the local DXLink server: a thin trio I/O layer over its core.

:class:`ServerConnection` owns the WebSocket and two tasks. The reader hands each frame to the
connection's :class:`~trio_dxlink.testing._server_core.ServerProtocol` and acts on what it reports
(a token to check, a subscription whose current values and history to send); the writer sends
what the core queued, one frame at a time, through a bounded queue (a client too slow to empty
it is dropped). Both wait with the core's keepalive deadlines and call its ``handle_timers`` when
one passes. Every protocol decision is the core's.
"""

from __future__ import annotations

import hmac
import logging
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import trio
from trio.testing import MemoryReceiveStream, MemorySendStream
from trio_websocket import ConnectionClosed, WebSocketConnection, WebSocketServer

from .._messages import Message
from ..events import Event, IndexedEvent, TimeSeriesEvent, event_class
from ._books import ORDER_TYPES
from ._history import SNAPSHOT_LIMIT_CODE, SnapshotSlots, snapshot_limit_message
from ._server_core import (
    AuthRequested,
    Close,
    MessageReceived,
    Outgoing,
    ServerChannel,
    ServerEvent,
    ServerProtocol,
    SubscriptionChanged,
)
from ._server_events import DomSetupReceived

if TYPE_CHECKING:
    from .._messages import Setup
    from ._server import DXLinkServer

__all__ = ["ServerConnection", "limit_frames"]

log = logging.getLogger("trio_dxlink.testing")

CLOSE_TIMEOUT = 5.0
"""How long a close handshake may take before the socket is just closed."""

_LASTING_TYPES = frozenset(
    {
        "Quote",
        "Trade",
        "TradeETH",
        "Summary",
        "Profile",
        "Greeks",
        "TheoPrice",
        "Underlying",
        "Candle",
    }
)
"""Types whose current value a new subscriber gets at once (the TICKER side of AUTO)."""


def limit_frames(target: WebSocketConnection | WebSocketServer, size: int) -> None:
    """Make trio-websocket enforce ``size`` as a frame arrives, not after reading all of it.

    trio-websocket 0.12 keeps the limit in ``_max_message_size`` (a server's, for the
    connections it accepts; a connection's, checked against each chunk received) and closes
    with 1009 once a message grows past it. Should a later version drop that attribute, the
    server's own check on each whole frame (in ``_reader``) still applies.
    """
    if hasattr(target, "_max_message_size"):
        setattr(target, "_max_message_size", size)  # noqa: B010 (a private attribute)


def trim_to(record: list[Any], keep: int) -> None:
    """Forget the oldest items of ``record`` once it holds an eighth more than ``keep`` (so the
    cost of trimming is spread over many appends)."""
    if len(record) > keep + keep // 8:
        del record[: len(record) - keep]


def close_at_once(stream: trio.abc.Stream) -> None:
    """Close the byte stream under a WebSocket now, without a close handshake or waiting: the
    TCP socket, or both directions of an in-memory stream (the peer reads the end of it)."""
    if isinstance(stream, trio.SocketStream):
        stream.socket.close()
    elif isinstance(stream, trio.SSLStream):
        close_at_once(stream.transport_stream)
    elif isinstance(stream, trio.StapledStream):
        for part in (stream.send_stream, stream.receive_stream):
            if isinstance(part, (MemorySendStream, MemoryReceiveStream)):
                part.close()


class ServerConnection:
    """One client connection as the server sees it (read it in tests; do not mutate it).

    Attributes:
        id: a number unique within the server, from 1.
        remote: the client's address.
        received: the messages decoded from the client, in order (the newest
            ``ServerConfig.keep_received`` of them).
        closed: whether the connection has ended.
        close_code: the WebSocket close code, when known (1006 for an abort).
        frames_sent: how many frames the server has written to this client.
        snapshots_in_flight: how many history snapshots wait to be written to this client (see
            ``ServerConfig.max_snapshots_in_flight``; counted only when that cap is set).
        protocol: the connection's pure protocol core.
    """

    def __init__(
        self,
        server: DXLinkServer,
        connection_id: int,
        ws: WebSocketConnection,
        stream: trio.abc.Stream | None,
        remote: str,
    ) -> None:
        self.id = connection_id
        self.remote = remote
        self.received: list[Message] = []
        self.closed = False
        self.close_code: int | None = None
        self.frames_sent = 0
        self.protocol = ServerProtocol(
            server.config, trio.current_time(), label=f"connection {connection_id}"
        )
        self._server = server
        self._ws = ws
        self._stream = stream
        limit_frames(ws, server.max_message_size)
        self._closing = False
        self._outbox_send, self._outbox_receive = trio.open_memory_channel[Outgoing](
            server.config.queue_size
        )
        self._cancel_scope: trio.CancelScope | None = None
        self._nursery: trio.Nursery | None = None
        self._close_done: trio.Event | None = None
        self._frames_queued = 0
        self._snapshot_slots = SnapshotSlots(server.config.max_snapshots_in_flight)

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        channels = sorted(self.channels)
        return f"<ServerConnection {self.id} {self.remote} {state} channels={channels}>"

    @property
    def snapshots_in_flight(self) -> int:
        """How many history snapshots wait to be written (counted only under a cap)."""
        return len(self._snapshot_slots)

    @property
    def setup(self) -> Setup | None:
        """The client's SETUP, once received."""
        return self.protocol.setup

    @property
    def authorized(self) -> bool:
        """Whether AUTH_STATE AUTHORIZED was sent (and not revoked)."""
        return self.protocol.authorized

    @property
    def channels(self) -> dict[int, ServerChannel]:
        """The open FEED channels by id."""
        return self.protocol.channels

    # --- tasks ---

    async def _run(self) -> None:
        """Serve this client until it goes. Nothing it does may take the server down: an
        exception out of its tasks (a bug) is logged and costs this connection only."""
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                self._cancel_scope = nursery.cancel_scope
                nursery.start_soon(self._writer)
                await self._reader()
                if self._close_done is not None:
                    # We started a close handshake: let it finish (it closes the socket after).
                    with trio.move_on_after(CLOSE_TIMEOUT):
                        await self._close_done.wait()
                nursery.cancel_scope.cancel()
        except Exception:
            log.exception("connection %d failed; dropping it", self.id)
            if self.close_code is None:
                self.close_code = 1006

    async def _reader(self) -> None:
        server = self._server
        core = self.protocol
        try:
            while True:
                deadline = math.inf if self._closing else core.receive_deadline()
                with trio.move_on_at(deadline) as scope:
                    frame = await self._ws.get_message()
                if scope.cancelled_caught:
                    core.handle_timers(trio.current_time())
                    self._flush()
                    continue
                limit = server.max_message_size
                if len(frame) > limit:
                    log.info("connection %d: frame of %d > %d", self.id, len(frame), limit)
                    await self._close_now(1009, f"message of {len(frame)} exceeds {limit}")
                    return
                self._on_frame(frame)
        except ConnectionClosed as exc:
            if self.close_code is None and exc.reason is not None:
                self.close_code = exc.reason.code

    async def _writer(self) -> None:
        server = self._server
        core = self.protocol
        try:
            while True:
                await server._wait_unstalled()
                try:
                    item = self._outbox_receive.receive_nowait()
                except trio.WouldBlock:
                    with trio.move_on_at(core.send_deadline()) as scope:
                        item = await self._outbox_receive.receive()
                    if scope.cancelled_caught:
                        core.handle_timers(trio.current_time())  # queues a KEEPALIVE
                        self._flush()
                        continue
                await server._wait_unstalled()
                if isinstance(item, Close):
                    await self._close_now(item.code, item.reason)
                    return
                await self._ws.send_message(item)
                core.frame_sent(trio.current_time())
                self.frames_sent += 1
                self._snapshot_slots.written(self.frames_sent)
                server._notify()
        except ConnectionClosed:
            pass

    async def _close_now(self, code: int, reason: str) -> None:
        """Close the WebSocket with ``code`` at once, then the TCP stream."""
        self._stop()
        if self.close_code is None:
            self.close_code = code
        done = self._close_done = trio.Event()
        try:
            with trio.move_on_after(CLOSE_TIMEOUT):
                await self._ws.aclose(code, reason)
        finally:
            self._close_transport()
            done.set()

    def _close_transport(self) -> None:
        """Close the TCP socket under the WebSocket (trio-websocket leaves it open after 1009)."""
        if self._stream is not None:
            close_at_once(self._stream)
        elif self._cancel_scope is not None:
            self._cancel_scope.cancel()

    def _stop(self) -> None:
        """Read and queue nothing more."""
        self._closing = True
        self.protocol.connection_closed()

    def drop(self, why: str = "dropped by test") -> None:
        """Close this connection abruptly (no close frame: the client sees 1006), as
        :meth:`DXLinkServer.drop_all` does to every connection."""
        self._abort(why)

    def _abort(self, why: str) -> None:
        """Drop the connection abruptly: no close frame, just the socket closed."""
        if self.closed:
            return
        log.info("connection %d: dropping (%s)", self.id, why)
        self._stop()
        if self.close_code is None:
            self.close_code = 1006
        self._close_transport()

    def _finish(self) -> None:
        self.closed = True
        self._stop()
        if self._stream is not None:
            close_at_once(self._stream)
        log.info("connection %d closed (code %s)", self.id, self.close_code)
        self._server._forget(self)
        self._server._notify()

    # --- between the core and the socket ---

    def _flush(self) -> None:
        """Move what the core queued into the writer's bounded queue."""
        for item in self.protocol.data_to_send():
            if self._closing:
                return
            try:
                self._outbox_send.send_nowait(item)
            except trio.WouldBlock:
                log.warning(
                    "connection %d: %d frames waiting; the client is too slow, dropping it",
                    self.id,
                    self._server.config.queue_size,
                )
                self._abort("outgoing queue full")
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                self._stop()
            else:
                if isinstance(item, Close):
                    self._closing = True
                else:
                    self._frames_queued += 1

    def _emit(self, channel: ServerChannel, events: Sequence[Event]) -> None:
        """Send ``events`` on ``channel`` in its data format."""
        if events and not self._closing:
            self.protocol.send_events(channel, events)
            self._flush()

    def _on_frame(self, frame: str | bytes) -> None:
        if self._closing:
            return
        try:
            for event in self.protocol.receive_message(frame, trio.current_time()):
                self._on_event(event)
        except Exception as exc:
            # What the server does about a client's message (a snapshot, say) failed: that
            # costs this client only.
            log.warning("connection %d: failed on a message; closing it", self.id, exc_info=True)
            self.protocol.handling_failed(exc)
        finally:
            self._flush()
            self._server._notify()

    def _on_event(self, event: ServerEvent) -> None:
        if isinstance(event, MessageReceived):
            keep = self._server.config.keep_received
            self.received.append(event.message)
            self._server.received.append((self.id, event.message))
            if keep is not None:
                trim_to(self.received, keep)
                trim_to(self._server.received, keep)
        elif isinstance(event, AuthRequested):
            self._check_token(event.token)
        elif isinstance(event, SubscriptionChanged):
            self._welcome(self.channels[event.channel], event.added)
        elif isinstance(event, DomSetupReceived):
            self._server.books.send_dom(self, self.protocol.dom_channels[event.channel])

    def _check_token(self, token: str) -> None:
        server = self._server
        expected = server.config.token
        rejected = server._take_token_rejection()
        if not rejected and (
            expected is None or hmac.compare_digest(token.encode(), expected.encode())
        ):
            self.protocol.authorize()
        else:
            self.protocol.reject_token()

    def _welcome(self, channel: ServerChannel, added: list[Any]) -> None:
        """What new subscribers get at once: current values of lasting types, then the history
        snapshots of time-series subscriptions with ``fromTime`` (each refused with an ERROR,
        and unsubscribed, when the cap on snapshots in flight is reached), and the book of an
        order subscription naming a source."""
        server = self._server
        current: list[Event] = []
        books: list[IndexedEvent] = []
        snapshots: list[tuple[tuple[Any, ...], list[list[TimeSeriesEvent]]]] = []
        for entry in added:
            cls = _known_class(entry.type)
            if cls is None or entry.symbol == "*":
                continue
            if entry.from_time is not None and issubclass(cls, TimeSeriesEvent):
                key = (channel.id, *entry.key)
                if not self._snapshot_slots.take(key):
                    channel.subscriptions.pop(entry.key, None)
                    message = snapshot_limit_message(entry.type)
                    self.protocol.send_error(channel.id, SNAPSHOT_LIMIT_CODE, message)
                    continue
                pieces = server.history.snapshot(cls, entry.symbol, entry.from_time)
                snapshots.append((key, pieces))
            elif entry.type in ORDER_TYPES and entry.source:
                books += server.books.snapshot(ORDER_TYPES[entry.type], entry.symbol, entry.source)
            elif entry.type in _LASTING_TYPES:
                event = server._current(entry.type, entry.symbol)
                if event is not None:
                    current.append(event)
        self.protocol.send_events(channel, current)
        self.protocol.send_events(channel, books)
        for key, pieces in snapshots:
            for piece in pieces:
                self.protocol.send_events(channel, piece)
            self._flush()
            self._snapshot_slots.queued(key, self._frames_queued)


def _known_class(name: str) -> type[Event] | None:
    try:
        return event_class(name)
    except KeyError:
        return None
