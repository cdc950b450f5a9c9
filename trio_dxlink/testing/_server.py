"""A faithful local DXLink server on loopback, for tests.

Start one with :func:`open_dxlink_server` (or host :func:`serve_dxlink` in your own nursery) and
point a client at :attr:`DXLinkServer.url`. The server speaks the protocol the way tastytrade's
server does (protocol reference §2-§4, §6.7 and §10):

* the handshake, channels, data formats, keepalives and errors as ``_server_core.py`` says; a
  message the server fails to handle costs that client only (ERROR UNKNOWN, close 1011);
* order books per (symbol, source) for order subscriptions naming a source and for DOM
  channels, from the same books (``_book_publisher.py``, :meth:`DXLinkServer.publish_book`).

What gets sent, and when: events reach a channel when (type, symbol[, source]) is subscribed
there (``"*"`` matches every symbol). On subscription the channel gets the current value of a
lasting type (Quote, Trade, Summary, Profile, Greeks, Candle, ...) if the market has one; a
time-series type subscribed with ``fromTime`` gets its history as a snapshot, newest first,
flagged as §6.7 says (``_history.py``, which also holds the switches real servers need: TX_PENDING
pieces, normalised candle symbols, ``index`` as a string, a cap on snapshots in flight, empty
snapshots). With ``simulate=True`` (the default) the market also makes up initial values,
candle history, order books and an update per subscribed (type, symbol) every
``update_interval``, for every event type; with ``simulate=False`` (a scripted server, what a
test that publishes its own events wants) the market only knows what the test published, so
nothing flows unprompted.
Events are not conflated: ``aggregationPeriod`` is echoed, not applied.

A closed connection is forgotten, with its messages, unless ``keep_closed_connections``.

Transport faults: :meth:`DXLinkServer.reject_upgrades` (an HTTP status instead of ``101``),
:meth:`DXLinkServer.answer_with_bytes` (bytes that are not HTTP), ended by
:meth:`DXLinkServer.accept_upgrades`. ``ssl_context=`` serves TLS (``wss://``).

Every timer runs on ``trio.current_time()``, so ``MockClock``/``autojump_clock`` tests work;
event timestamps come from the market's wall clock.

Where it lives: the conversation with each client is the pure core in ``_server_core.py``
(``ServerProtocol``, sharing ``trio_dxlink._protocol`` with the client), driven by the trio
``ServerConnection`` in ``_server_connection.py``; this module holds :class:`DXLinkServer` (the
market, routing and test switches) and the entry points.
"""

from __future__ import annotations

import functools
import itertools
import logging
import ssl
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from typing import cast

import trio
from trio_websocket import (
    ConnectionClosed,
    Endpoint,
    WebSocketRequest,
    WebSocketServer,
    wrap_server_stream,
)

from .._messages import Message
from .._transport import DEFAULT_MAX_MESSAGE_SIZE, Connector, connector_over_streams
from .._util import unwrap_group
from ..events import Event, IndexedEvent
from ._book_publisher import BookPublisher
from ._books import Level
from ._config import ServerConfig
from ._history import HistoryPublisher, as_transaction, wants_normalized
from ._market import SIMULATED_TYPES, Market
from ._server_connection import CLOSE_TIMEOUT, ServerConnection, close_at_once, limit_frames
from ._server_core import ServerChannel
from ._upgrade_faults import (
    HANDSHAKE_TIMEOUT,
    Fault,
    Garbage,
    Reject,
    TrackingListener,
    answer_with,
    peer_key,
)

__all__ = [
    "DXLinkServer",
    "ServerChannel",
    "ServerConfig",
    "ServerConnection",
    "open_dxlink_server",
    "serve_dxlink",
]

log = logging.getLogger("trio_dxlink.testing")

IN_MEMORY_URL = "ws://in-memory.localhost/"
"""``server.url`` of a server started with ``in_memory=True``: reach it with
:meth:`DXLinkServer.connector` (the name is under ``.localhost``: it never leaves the machine)."""
_WS_MESSAGE_QUEUE = 64  # trio-websocket's own inbound queue; our reader drains it continuously


class DXLinkServer:
    """A running local DXLink server: where it listens, what it has seen, and levers for tests.

    Made by :func:`serve_dxlink` / :func:`open_dxlink_server`; do not construct it yourself.

    Attributes:
        url: ``ws://127.0.0.1:PORT``.
        host: the address it listens on.
        port: the port it listens on.
        config: its :class:`ServerConfig`.
        market: the :class:`~trio_dxlink.testing.Market` it serves.
        connections: the open connections, in order (with
            ``ServerConfig(keep_closed_connections=True)``, every connection so far).
        received: client messages as (connection id, message), across the connections in
            :attr:`connections`: the newest ``ServerConfig.keep_received`` of them (see there).
        max_message_size: the current frame-size limit (see :meth:`set_max_message_size`).
        reject_all_tokens: set it to make every AUTH fail until it is cleared (see also
            :meth:`reject_next_token`).
        rejected_upgrades: how many connections a fault from :meth:`reject_upgrades` or
            :meth:`answer_with_bytes` has turned away so far.
        history: how it publishes history (``history.empty_snapshot_symbols`` is a set a test
            may change while serving).
        books: its order books, which serve order events and the DOM service (switches:
            ``books.max_snapshot_orders``, ``books.transaction_per_message``).
    """

    def __init__(self, config: ServerConfig, market: Market) -> None:
        self.config = config
        self.market = market
        self.host = ""
        self.port = 0
        self.url = ""
        self.connections: list[ServerConnection] = []
        self.received: list[tuple[int, Message]] = []
        self.max_message_size = config.max_message_size
        self._ws_server: WebSocketServer | None = None
        self._ids = itertools.count(1)
        self._changed = trio.lowlevel.ParkingLot()
        self._stalled = False
        self._resumed = trio.Event()
        self._resumed.set()
        self._reject_next_token = False
        self.reject_all_tokens = False
        self._streams: dict[tuple[str, int], trio.SocketStream] = {}
        self._upgrade_fault: Reject | Garbage | None = None
        self._upgrade_faults_left: int | None = None
        self.rejected_upgrades = 0
        self._nursery: trio.Nursery | None = None
        self.history = HistoryPublisher(config, market)
        self.books = BookPublisher(config, market, self._route, lambda: self.live)

    def __repr__(self) -> str:
        return f"<DXLinkServer {self.url or '(not listening)'} connections={len(self.live)}>"

    # --- inspection ---

    @property
    def live(self) -> list[ServerConnection]:
        """The connections that are still open."""
        return [conn for conn in self.connections if not conn.closed]

    def connection(self, connection_id: int) -> ServerConnection:
        """The connection with this id.

        Raises:
            KeyError: no connection has that id, or it has closed and was forgotten (see
                ``ServerConfig.keep_closed_connections``).
        """
        for conn in self.connections:
            if conn.id == connection_id:
                return conn
        raise KeyError(f"no connection {connection_id}")

    def subscriptions(self, event_type: str | None = None) -> set[tuple[str, str]]:
        """(type, symbol) pairs subscribed on any open channel of any live connection."""
        return {
            (entry.type, entry.symbol)
            for conn in self.live
            for channel in conn.channels.values()
            for entry in channel.subscriptions.values()
            if event_type is None or entry.type == event_type
        }

    async def wait_for(self, predicate: Callable[[], bool]) -> None:
        """Return as soon as ``predicate()`` is true.

        It is checked now and again whenever the server's state changes (a message received, a
        frame sent, a connection opened or closed). Wrap it in ``trio.fail_after`` to bound it.
        """
        await trio.lowlevel.checkpoint()
        while not predicate():
            await self._changed.park()

    # --- publishing ---

    def publish(self, *events: Event) -> None:
        """Deliver events to every channel subscribed to them, and record them in the market.

        Never blocks: frames wait in each connection's bounded queue; a client whose queue is
        full is dropped.
        """
        self.publish_many(events)

    def publish_many(self, events: Iterable[Event]) -> None:
        """:meth:`publish` for an iterable of events."""
        batch = [self.history.event(event) for event in events]
        for event in batch:
            self.market.update(event)
        self._route(batch)
        self.books.record(batch)

    def publish_transaction(self, *events: IndexedEvent, per_message: int = 1) -> None:
        """Publish time-series events as one transaction: every event but the last flagged
        TX_PENDING, sent ``per_message`` events to a FEED_DATA (so by default the transaction
        spans as many frames as it has events). Recorded in the market like :meth:`publish`.

        Raises:
            TypeError: an event is not an indexed one (only those have flags).
            ValueError: ``per_message`` is not positive.
        """
        if per_message < 1:
            raise ValueError(f"per_message must be positive, got {per_message}")
        batch = as_transaction([self.history.event(event) for event in events])
        for event in batch:
            self.market.update(event)
        for start in range(0, len(batch), per_message):
            self._route(batch[start : start + per_message])
        self.books.record(batch)

    def publish_book(
        self,
        symbol: str,
        source: str,
        *,
        bids: Sequence[Level] = (),
        asks: Sequence[Level] = (),
        per_message: int | None = None,
    ) -> None:
        """Make the book of (``symbol``, ``source``) exactly ``bids`` and ``asks`` ((price,
        size) pairs) and send it as a snapshot (``per_message`` events a frame) to its order
        subscribers and DOM channels. ``ValueError`` for a crossed book or a bad level."""
        self.books.publish_book(symbol, source, bids, asks, per_message=per_message)

    def _route(self, events: Sequence[Event]) -> None:
        if not events:
            return
        wants = wants_normalized if self.config.normalize_candle_symbols else ServerChannel.wants
        for conn in self.live:
            for channel in list(conn.channels.values()):
                wanted = [event for event in events if wants(channel, event)]
                if wanted:
                    conn._emit(channel, wanted)

    def _current(self, event_type: str, symbol: str) -> Event | None:
        symbol = self.history.symbol(symbol)
        event = self.market.latest(event_type, symbol)
        if event is None and self.config.simulate and event_type in SIMULATED_TYPES:
            event = self.market.step(event_type, symbol)
        return event

    # --- fault injection ---

    def drop_all(self, *, code: int | None = None, reason: str = "dropped by test") -> None:
        """Close every live connection abruptly.

        With ``code=None`` the TCP socket is just closed (the client sees an abnormal closure,
        1006); with a code (e.g. 1011) a WebSocket close frame is sent first, bypassing the
        queue and any stall.
        """
        for conn in self.live:
            if code is None:
                conn._abort("drop_all")
            elif conn._nursery is not None:
                conn._stop()
                conn._nursery.start_soon(conn._close_now, code, reason)

    def stall(self) -> None:
        """Stop sending anything (data, replies, keepalives) on every connection until
        :meth:`resume`. Frames queue up meanwhile; a full queue still drops its client."""
        if not self._stalled:
            self._stalled = True
            self._resumed = trio.Event()

    def resume(self) -> None:
        """Undo :meth:`stall`: queued frames go out, then keepalives as usual."""
        self._stalled = False
        self._resumed.set()

    def reject_next_token(self) -> None:
        """Make the next AUTH on any connection fail (UNAUTHORIZED, then close 1008)."""
        self._reject_next_token = True

    def reject_upgrades(
        self,
        status: int = 503,
        *,
        body: bytes = b"",
        count: int | None = None,
    ) -> None:
        """Answer the next ``count`` WebSocket upgrades (every one, with ``None``) with HTTP
        ``status`` and ``body`` instead of ``101 Switching Protocols``, then close the socket.

        Until :meth:`accept_upgrades`, or until ``count`` upgrades have been turned away.
        """
        if not 100 <= status <= 599 or status == 101:
            raise ValueError(f"status must be an HTTP status other than 101, got {status}")
        self._set_upgrade_fault(Reject(status, body), count)

    def answer_with_bytes(self, data: bytes, *, count: int | None = None) -> None:
        """Answer the next ``count`` connections (every one, with ``None``) with ``data``, which
        need not be HTTP, after reading the client's request; then close the socket.

        Until :meth:`accept_upgrades`, or until ``count`` connections have been turned away.
        """
        self._set_upgrade_fault(Garbage(data), count)

    def accept_upgrades(self) -> None:
        """Undo :meth:`reject_upgrades` / :meth:`answer_with_bytes`: accept upgrades again."""
        self._upgrade_fault = None
        self._upgrade_faults_left = None

    def close_channel(self, connection_id: int, channel: int) -> None:
        """Close a channel from the server's side with an unprompted CHANNEL_CLOSED."""
        conn = self.connection(connection_id)
        conn.protocol.close_channel(channel)
        conn._flush()
        self._notify()

    def send_error(self, connection_id: int, channel: int, code: str, message: str) -> None:
        """Send ``ERROR`` with this code and text on a channel (0: the whole connection)."""
        conn = self.connection(connection_id)
        conn.protocol.send_error(channel, code, message)
        conn._flush()

    def send_raw(self, connection_id: int, text: str) -> None:
        """Send ``text`` as one frame, as is (for malformed-input tests)."""
        conn = self.connection(connection_id)
        conn.protocol.send_raw(text)
        conn._flush()

    def switch_data_format(self, connection_id: int, channel: int, data_format: str) -> None:
        """Switch a channel to ``"FULL"`` or ``"COMPACT"`` mid-session, announced by FEED_CONFIG."""
        conn = self.connection(connection_id)
        conn.protocol.switch_data_format(channel, data_format)
        conn._flush()

    def set_max_message_size(self, size: int) -> None:
        """Change the frame-size limit above which a client frame gets close 1009, for the
        live connections and the ones to come.

        Raises:
            ValueError: ``size`` is not positive.
        """
        if not size > 0:
            raise ValueError(f"size must be positive, got {size}")
        self.max_message_size = size
        if self._ws_server is not None:
            limit_frames(self._ws_server, size)
        for conn in self.live:
            limit_frames(conn._ws, size)

    # --- internals ---

    def _notify(self) -> None:
        self._changed.unpark_all()

    def _forget(self, conn: ServerConnection) -> None:
        """Drop a closed connection and its messages, unless told to keep them."""
        if self.config.keep_closed_connections:
            return
        if conn in self.connections:
            self.connections.remove(conn)
        self.received[:] = [item for item in self.received if item[0] != conn.id]

    def _set_upgrade_fault(self, fault: Reject | Garbage, count: int | None) -> None:
        if count is not None and count < 1:
            raise ValueError(f"count must be positive or None, got {count}")
        self._upgrade_fault = fault
        self._upgrade_faults_left = count

    def _take_upgrade_fault(self, kind: type[Fault]) -> Fault | None:
        fault = self._upgrade_fault
        if not isinstance(fault, kind):
            return None
        if self._upgrade_faults_left is not None:
            self._upgrade_faults_left -= 1
            if self._upgrade_faults_left <= 0:
                self.accept_upgrades()
        self.rejected_upgrades += 1
        self._notify()
        return fault

    def _intercept(self, stream: trio.abc.Stream) -> bool:
        """Take a fresh TCP stream over when :meth:`answer_with_bytes` is in force."""
        if self._nursery is None or not isinstance(self._upgrade_fault, Garbage):
            return False
        fault = self._take_upgrade_fault(Garbage)
        assert fault is not None
        self._nursery.start_soon(answer_with, stream, fault.data)
        return True

    def _take_token_rejection(self) -> bool:
        rejected, self._reject_next_token = self._reject_next_token, False
        return rejected or self.reject_all_tokens

    async def _wait_unstalled(self) -> None:
        while self._stalled:
            await self._resumed.wait()

    def connector(self) -> Connector:
        """A :data:`~trio_dxlink.Connector` that reaches this server in memory, whatever the URL.

        ``open_dxlink(server.url, connector=server.connector())`` speaks real WebSocket frames
        over :func:`trio.testing.memory_stream_pair` instead of a socket, so a test can run
        under :class:`trio.testing.MockClock` (with ``autojump_threshold=0`` hours of
        keepalives and reconnect backoff pass instantly). It works whether or not the server
        also listens on TCP (see ``in_memory=`` of :func:`open_dxlink_server`). Upgrade faults
        (:meth:`reject_upgrades`, :meth:`answer_with_bytes`) apply to it too.
        """

        async def open_stream(target: object) -> trio.abc.Stream:
            await trio.lowlevel.checkpoint()
            if self._nursery is None:
                raise OSError("the DXLink test server is not running")
            client, server = trio.testing.memory_stream_pair()
            if not self._intercept(server):
                self._nursery.start_soon(self._serve_stream, server)
            return client

        return connector_over_streams(open_stream, max_message_size=DEFAULT_MAX_MESSAGE_SIZE)

    async def _serve_stream(self, stream: trio.abc.Stream) -> None:
        """Serve one in-memory connection (see :meth:`connector`)."""
        assert self._nursery is not None
        try:
            request: WebSocketRequest | None = None
            with trio.move_on_after(HANDSHAKE_TIMEOUT):
                request = await wrap_server_stream(
                    self._nursery,
                    stream,
                    message_queue_size=_WS_MESSAGE_QUEUE,
                    max_message_size=self.max_message_size,
                )
            if request is not None:
                await self._handle(request, stream)
        finally:
            close_at_once(stream)

    async def _serve_in_memory(self, task_status: trio.TaskStatus[DXLinkServer]) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            self.url = IN_MEMORY_URL
            if self.config.simulate:
                nursery.start_soon(self._simulate)
            log.info("DXLink test server running in memory")
            task_status.started(self)
            try:
                await trio.sleep_forever()
            finally:
                self._nursery = None

    async def _serve(
        self,
        host: str,
        port: int,
        ssl_context: ssl.SSLContext | None,
        task_status: trio.TaskStatus[DXLinkServer],
    ) -> None:
        listeners = await trio.open_tcp_listeners(port, host=host)
        tracked = [
            TrackingListener(listener, self._streams, self._intercept, ssl_context)
            for listener in listeners
        ]
        ws_server = WebSocketServer(
            self._handle,
            cast("list[trio.SocketListener]", tracked),
            message_queue_size=_WS_MESSAGE_QUEUE,
            max_message_size=self.max_message_size,
            connect_timeout=HANDSHAKE_TIMEOUT,
            disconnect_timeout=CLOSE_TIMEOUT,
        )
        self._ws_server = ws_server
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                await nursery.start(ws_server.run)
                address, self.port, *_ = listeners[0].socket.getsockname()
                self.host = str(address)
                shown = f"[{self.host}]" if ":" in self.host else self.host
                scheme = "ws" if ssl_context is None else "wss"
                self.url = f"{scheme}://{shown}:{self.port}"
                if self.config.simulate:
                    nursery.start_soon(self._simulate)
                log.info("DXLink test server listening on %s", self.url)
                task_status.started(self)
        finally:
            self._nursery = None  # in-memory connections fail cleanly from now on

    async def _handle(
        self, request: WebSocketRequest, stream: trio.abc.Stream | None = None
    ) -> None:
        remote = request.remote
        if stream is None and isinstance(remote, Endpoint):
            stream = self._streams.pop(peer_key(remote.address, remote.port), None)
        rejection = self._take_upgrade_fault(Reject)
        if rejection is not None:
            try:
                await request.reject(rejection.status, body=rejection.body or None)
            except ConnectionClosed:
                pass
            finally:
                if stream is not None:
                    await stream.aclose()
            return
        try:
            ws = await request.accept()
        except ConnectionClosed:
            return
        conn = ServerConnection(self, next(self._ids), ws, stream, str(remote))
        self.connections.append(conn)
        log.info("connection %d opened from %s", conn.id, conn.remote)
        self._notify()
        try:
            await conn._run()
        finally:
            conn._finish()

    async def _simulate(self) -> None:
        while True:
            await trio.sleep(self.config.update_interval)
            if self._stalled:
                continue
            keys = sorted(
                {
                    (entry.type, self.history.symbol(entry.symbol))
                    for conn in self.live
                    for channel in conn.channels.values()
                    for entry in channel.subscriptions.values()
                    if entry.symbol != "*" and entry.type in SIMULATED_TYPES
                }
            )
            self._route([self.market.step(kind, symbol) for kind, symbol in keys])
            self.books.simulate()


async def serve_dxlink(
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    config: ServerConfig | None = None,
    market: Market | None = None,
    ssl_context: ssl.SSLContext | None = None,
    in_memory: bool = False,
    task_status: trio.TaskStatus[DXLinkServer] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run a local DXLink server until cancelled.

    Use it with ``server = await nursery.start(serve_dxlink)``: once it is listening it calls
    ``task_status.started`` with its :class:`DXLinkServer`. ``port=0`` picks a free port. With
    an ``ssl_context`` (a server context holding a certificate) it serves TLS, at ``wss://``.
    With ``in_memory=True`` it opens no socket at all: clients reach it through
    :meth:`DXLinkServer.connector`, and ``server.url`` is :data:`IN_MEMORY_URL`.
    """
    server = DXLinkServer(
        config if config is not None else ServerConfig(),
        market if market is not None else Market(),
    )
    if in_memory:
        if ssl_context is not None:
            raise TypeError("in_memory=True takes no ssl_context (there is no socket to secure)")
        await server._serve_in_memory(task_status)
    else:
        await server._serve(host, port, ssl_context, task_status)


@asynccontextmanager
async def open_dxlink_server(
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    config: ServerConfig | None = None,
    market: Market | None = None,
    ssl_context: ssl.SSLContext | None = None,
    in_memory: bool = False,
) -> AsyncIterator[DXLinkServer]:
    """Run a local DXLink server for the duration of an ``async with`` block.

    Yields the :class:`DXLinkServer`; on exit every connection and task is cancelled. An
    exception raised in the block comes out as itself, not wrapped in an exception group.
    With an ``ssl_context`` the server speaks TLS (``server.url`` is ``wss://...``). With
    ``in_memory=True`` it opens no socket: connect with
    ``open_dxlink(server.url, connector=server.connector())``.
    """
    with unwrap_group():
        async with trio.open_nursery() as nursery:
            serve = functools.partial(
                serve_dxlink,
                host=host,
                port=port,
                config=config,
                market=market,
                ssl_context=ssl_context,
                in_memory=in_memory,
            )
            server: DXLinkServer = await nursery.start(serve)
            try:
                yield server
            finally:
                nursery.cancel_scope.cancel()
