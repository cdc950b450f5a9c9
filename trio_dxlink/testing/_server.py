"""A faithful local DXLink server on loopback, for tests.

Start one with :func:`open_dxlink_server` (or host :func:`serve_dxlink` in your own nursery) and
point a client at :attr:`DXLinkServer.url`. The server speaks the protocol the way tastytrade's
server does (protocol reference §2-§4, §6.7 and §10):

* strict handshake: the client's SETUP first; the server answers SETUP, then AUTH_STATE
  (AUTHORIZED with ``userId`` at once when no token is configured, else UNAUTHORIZED until a
  matching AUTH; a wrong token gets UNAUTHORIZED and the socket is closed with code 1008);
* FEED channels with any positive id, re-openable after close; CHANNEL_OPENED echoes the
  parameters plus ``"subFormat": "LIST"``; FEED_CONFIG answers FEED_SETUP without eventFields;
* COMPACT data with exactly the requested fields in the requested order (one type pair per
  message by default), FULL on request; eventFields are announced in a FEED_CONFIG just before
  the first FEED_DATA of a type (always by default; with ``event_fields_in_config=False`` only
  when the client never chose that type's fields);
* KEEPALIVE when the server has sent nothing for half the client's keepaliveTimeout; ERROR
  TIMEOUT and a close when the client has been silent for the server's own keepaliveTimeout
  (``announce_keepalive_timeout`` makes SETUP announce any other value, even a nonsensical one,
  without changing that timer);
* ERROR INVALID_MESSAGE for a frame that is not a JSON object with ``type`` and ``channel``;
  ERROR BAD_ACTION for a message that is out of order, has fields of the wrong shape, or is one
  only a server sends; WebSocket close 1009 for a frame above ``max_message_size``, as soon as
  that much of it has arrived;
* nothing one client sends stops the server: error texts describe wire values in a bounded way
  (a value nested 1,000 levels deep is fine), and a message the server fails to handle (say,
  CHANNEL_REQUEST parameters too deep to echo back) gets ERROR UNKNOWN and close 1011 for that
  client only.

What gets sent, and when: events reach a channel when (type, symbol[, source]) is subscribed
there (``"*"`` matches every symbol). On subscription the channel gets the current value of a
lasting type (Quote, Trade, Summary, Profile, Greeks, Candle, ...) if the market has one; a
time-series type subscribed with ``fromTime`` gets its history as a snapshot, newest first,
flagged as §6.7 says. With ``simulate=False`` (the default) the market only knows what the test
published, so nothing flows unprompted; with ``simulate=True`` the market also makes up initial
values, candle history and an update per subscribed (type, symbol) every ``update_interval``.
Events are not conflated: ``aggregationPeriod`` is echoed, not applied.

The server holds only what it needs: a closed connection is forgotten, with its messages, unless
``ServerConfig(keep_closed_connections=True)`` asks to keep it for inspection.

Transport faults, for testing what a client does when the upgrade fails: with
:meth:`DXLinkServer.reject_upgrades` the server answers WebSocket upgrades with an HTTP status
(``503`` from a load balancer, a ``200`` page) instead of ``101``; with
:meth:`DXLinkServer.answer_with_bytes` it reads the request and answers with bytes that are not
HTTP at all; :meth:`DXLinkServer.accept_upgrades` ends either. ``ssl_context=`` on
:func:`serve_dxlink` / :func:`open_dxlink_server` serves TLS (the URL is then ``wss://``).

Every timer runs on ``trio.current_time()``, so ``MockClock``/``autojump_clock`` tests work;
event timestamps come from the market's wall clock.
"""

from __future__ import annotations

import functools
import hmac
import ipaddress
import itertools
import logging
import math
import ssl
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from typing import Any, TypeAlias, TypeVar, cast

import attrs
import orjson
import trio
from trio_websocket import (
    ConnectionClosed,
    Endpoint,
    WebSocketConnection,
    WebSocketRequest,
    WebSocketServer,
)

from .._codec import Kind, encode_compact, encode_full, field_kinds
from .._connection import sane_keepalive_timeout
from .._exceptions import RemoteProtocolError
from .._messages import (
    Auth,
    AuthState,
    ChannelCancel,
    ChannelClosed,
    ChannelOpened,
    ChannelRequest,
    Error,
    FeedConfig,
    FeedData,
    FeedSetup,
    FeedSubscription,
    Keepalive,
    Message,
    Setup,
    SubscriptionEntry,
    encode,
    from_wire,
    parse_json,
    to_wire,
)
from .._util import describe, unwrap_group
from ..events import (
    EVENT_TYPES,
    Candle,
    Event,
    EventFlag,
    TimeSeriesEvent,
    event_class,
    index_from_time,
)
from ._market import SIMULATED_TYPES, Market

__all__ = [
    "DXLinkServer",
    "ServerChannel",
    "ServerConfig",
    "ServerConnection",
    "open_dxlink_server",
    "serve_dxlink",
]

log = logging.getLogger("trio_dxlink.testing")

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

_DEFAULT_AGGREGATION_PERIOD = 0.1
_DEFAULT_CLIENT_KEEPALIVE = 60.0
_WS_MESSAGE_QUEUE = 64  # trio-websocket's own inbound queue; our reader drains it continuously
_HANDSHAKE_TIMEOUT = 10.0
_CLOSE_TIMEOUT = 5.0
_DATA_FORMATS = ("FULL", "COMPACT")
_MAX_TIME_MS = (2**31 - 1) * 1000  # the last time a time-series index can hold
_KEEPALIVE_FRAME = encode(Keepalive())

SubscriptionKey: TypeAlias = tuple[str, str, "str | None"]
"""A subscription's identity: (type, symbol, source)."""


def _positive(_: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if not value > 0:
        raise ValueError(f"{attribute.name} must be positive, got {value!r}")


def _number_or_none(_: object, attribute: attrs.Attribute[Any], value: float | None) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
        raise TypeError(f"{attribute.name} must be a number or None, got {value!r}")


def _json_double(value: float) -> float | str:
    """A number as DXLink writes a JSONDouble: non-finite values as strings (§1)."""
    if isinstance(value, int):
        return value if -(2**63) <= value < 2**64 else float(value)  # what orjson can write
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    return value


def _data_format(_: object, attribute: attrs.Attribute[Any], value: str | None) -> None:
    if value is not None and value not in _DATA_FORMATS:
        raise ValueError(f"{attribute.name} must be one of {_DATA_FORMATS} or None, got {value!r}")


@attrs.frozen
class ServerConfig:
    """How a :class:`DXLinkServer` behaves. The defaults are the faithful ones.

    Attributes:
        token: the token AUTH must present; ``None`` authorizes at once (like the public demo).
        user_id: the ``userId`` sent with AUTH_STATE AUTHORIZED.
        keepalive_timeout: seconds of client silence before ERROR TIMEOUT and a close; also
            advertised in the server's SETUP (unless ``announce_keepalive_timeout`` is set).
        announce_keepalive_timeout: a fault switch: the ``keepaliveTimeout`` the server's SETUP
            announces instead of ``keepalive_timeout``, whatever it is (-1, 0, 1e-4, 1e9, NaN,
            ...); NaN and infinities go out as the strings ``"NaN"``, ``"Infinity"`` and
            ``"-Infinity"``, as DXLink writes such numbers. The server's own timer still uses
            ``keepalive_timeout``.
        accept_keepalive_timeout: the ``acceptKeepaliveTimeout`` advertised in SETUP.
        max_message_size: a client frame longer than this gets WebSocket close 1009, as soon as
            that much of it has arrived (the server never holds more of a frame than this).
        simulate: make up initial values, history and periodic updates from the market.
        update_interval: seconds between simulated updates.
        event_fields_in_config: announce ``eventFields`` for a type in a FEED_CONFIG just before
            its first FEED_DATA even when the client chose the fields itself (the default, as
            the dxFeed demo does: dxFeed's own JavaScript client decodes COMPACT data only by
            announced fields). Turn it off to mimic a server that never announces them, as
            tastytrade's reply to FEED_SETUP does not.
        data_format_override: ``"FULL"`` or ``"COMPACT"`` whatever the client asks for.
        pairs_per_message: COMPACT (type, values) pairs per FEED_DATA message.
        version: the ``version`` of the server's SETUP.
        queue_size: frames that may wait for a slow client before it is dropped.
        max_events_per_message: events per COMPACT pair (or FULL message).
        max_snapshot_events: history events per snapshot; beyond, the snapshot is snipped.
        keep_closed_connections: keep closed connections (and their messages) in
            :attr:`DXLinkServer.connections` and :attr:`DXLinkServer.received` for tests to
            inspect. Off by default: a closed connection is forgotten, so a long-running server
            holds only what its live connections need.
    """

    token: str | None = attrs.field(default=None, repr=False)
    user_id: str = "local-user"
    keepalive_timeout: float = attrs.field(default=60, validator=_positive)
    announce_keepalive_timeout: float | None = attrs.field(default=None, validator=_number_or_none)
    accept_keepalive_timeout: float = attrs.field(default=60, validator=_positive)
    max_message_size: int = attrs.field(default=2**20, validator=_positive)
    simulate: bool = False
    update_interval: float = attrs.field(default=0.1, validator=_positive)
    event_fields_in_config: bool = True
    data_format_override: str | None = attrs.field(default=None, validator=_data_format)
    pairs_per_message: int = attrs.field(default=1, validator=_positive)
    version: str = "1.0-trio_dxlink-local"
    queue_size: int = attrs.field(default=1024, validator=_positive)
    max_events_per_message: int = attrs.field(default=100, validator=_positive)
    max_snapshot_events: int = attrs.field(default=1000, validator=_positive)
    keep_closed_connections: bool = False


@attrs.define
class ServerChannel:
    """The server's view of one open FEED channel of a connection.

    Attributes:
        id: the channel number.
        service: the requested service (always ``"FEED"`` here).
        parameters: the CHANNEL_REQUEST parameters, as sent.
        subscriptions: current subscriptions keyed by (type, symbol, source).
        event_fields: the field lists FEED_SETUP asked for, per event type (merged).
        data_format: ``"FULL"`` or ``"COMPACT"``.
        aggregation_period: the period FEED_CONFIG reported (echoed, not applied).
    """

    id: int
    service: str
    parameters: dict[str, Any]
    subscriptions: dict[SubscriptionKey, SubscriptionEntry] = attrs.field(factory=dict)
    event_fields: dict[str, list[str]] = attrs.field(factory=dict)
    data_format: str = "FULL"
    aggregation_period: float = _DEFAULT_AGGREGATION_PERIOD
    announced: dict[str, tuple[str, ...]] = attrs.field(factory=dict, repr=False)
    """The layout last announced in a FEED_CONFIG, per event type."""

    def layout(self, cls: type[Event]) -> tuple[str, ...]:
        """The fields sent for ``cls``: the requested list, else every field the type has."""
        requested = self.event_fields.get(cls.EVENT_TYPE)
        if requested:
            return tuple(requested)
        return ("eventType", *cls.wire_fields())

    def wants(self, event: Event) -> bool:
        """Whether a subscription on this channel covers ``event``."""
        subs = self.subscriptions
        kind = event.EVENT_TYPE
        symbol = event.event_symbol
        source: str | None = getattr(event, "source", None)
        if (kind, symbol, source) in subs or (kind, "*", source) in subs:
            return True
        return source is not None and ((kind, symbol, None) in subs or (kind, "*", None) in subs)


# --- COMPACT/FULL layouts ----------------------------------------------------------------------

_CATALOG_KINDS: dict[str, Kind] = {}
for _cls in EVENT_TYPES:
    for _name, _wire in _cls.WIRE_NAMES.items():
        _CATALOG_KINDS.setdefault(_wire.lower(), field_kinds(_cls)[_name])
del _cls, _name, _wire


_Plan: TypeAlias = "tuple[tuple[str, ...], tuple[int, ...]]"
_PLANS: dict[tuple[str, tuple[str, ...]], _Plan] = {}


def _resolve(cls: type[Event], layout: tuple[str, ...]) -> _Plan:
    """Map requested names onto ``cls``'s wire names, ignoring case (tastyware asks for
    ``vwap``). Returns the resolved layout and the positions of names the type lacks but that
    are doubles elsewhere in the catalog (sent as ``"NaN"``; other unknown names go as null)."""
    key = (cls.EVENT_TYPE, layout)
    plan = _PLANS.get(key)
    if plan is None:
        if len(_PLANS) >= 512:
            _PLANS.clear()
        plan = _PLANS[key] = _make_plan(cls, layout)
    return plan


def _make_plan(cls: type[Event], layout: tuple[str, ...]) -> _Plan:
    canonical = {wire.lower(): wire for wire in ("eventType", *cls.wire_fields())}
    resolved: list[str] = []
    nans: list[int] = []
    for position, name in enumerate(layout):
        wire = canonical.get(name.lower())
        if wire is None:
            resolved.append(name)
            if _CATALOG_KINDS.get(name.lower()) is Kind.DOUBLE:
                nans.append(position)
        else:
            resolved.append(wire)
    return tuple(resolved), tuple(nans)


def _compact_values(events: Sequence[Event], layout: tuple[str, ...]) -> list[Any]:
    resolved, nans = _resolve(type(events[0]), layout)
    values = encode_compact(events, resolved)
    if nans:
        width = len(layout)
        for row in range(0, len(values), width):
            for position in nans:
                values[row + position] = "NaN"
    return values


def _full_object(event: Event, layout: tuple[str, ...] | None) -> dict[str, Any]:
    obj = encode_full(event)
    if layout is None:
        return obj
    keep = {"eventType", "eventSymbol", *_resolve(type(event), layout)[0]}
    return {key: value for key, value in obj.items() if key in keep}


def _chunks(items: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _with_flags(event: TimeSeriesEvent, flags: int) -> TimeSeriesEvent:
    copy: TimeSeriesEvent = attrs.evolve(cast(Any, event), event_flags=int(flags))
    return copy


# --- one connection ----------------------------------------------------------------------------


@attrs.frozen
class _Close:
    """Outbox item: close the WebSocket (after everything queued before it was sent)."""

    code: int
    reason: str


_Outgoing: TypeAlias = "str | _Close"


class ServerConnection:
    """One client connection as the server sees it (read it in tests; do not mutate it).

    Attributes:
        id: a number unique within the server, from 1.
        remote: the client's address.
        received: every message decoded from the client, in order.
        setup: the client's SETUP, once received.
        authorized: whether AUTH_STATE AUTHORIZED was sent (and not revoked).
        channels: the open FEED channels by id.
        closed: whether the connection has ended.
        close_code: the WebSocket close code, when known (1006 for an abort).
        frames_sent: how many frames the server has written to this client.
    """

    def __init__(
        self,
        server: DXLinkServer,
        connection_id: int,
        ws: WebSocketConnection,
        stream: trio.SocketStream | None,
        remote: str,
    ) -> None:
        self.id = connection_id
        self.remote = remote
        self.received: list[Message] = []
        self.setup: Setup | None = None
        self.authorized = False
        self.channels: dict[int, ServerChannel] = {}
        self.closed = False
        self.close_code: int | None = None
        self.frames_sent = 0
        self._server = server
        self._ws = ws
        self._stream = stream
        _limit_frames(ws, server.max_message_size)
        self._closing = False
        self._outbox_send, self._outbox_receive = trio.open_memory_channel[_Outgoing](
            server.config.queue_size
        )
        self._last_received = trio.current_time()
        self._last_sent = trio.current_time()
        self._cancel_scope: trio.CancelScope | None = None
        self._nursery: trio.Nursery | None = None
        self._close_done: trio.Event | None = None

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        channels = sorted(self.channels)
        return f"<ServerConnection {self.id} {self.remote} {state} channels={channels}>"

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
                    with trio.move_on_after(_CLOSE_TIMEOUT):
                        await self._close_done.wait()
                nursery.cancel_scope.cancel()
        except Exception:
            log.exception("connection %d failed; dropping it", self.id)
            if self.close_code is None:
                self.close_code = 1006

    async def _reader(self) -> None:
        server = self._server
        try:
            while True:
                if self._closing:
                    deadline = math.inf
                else:
                    deadline = self._last_received + server.config.keepalive_timeout
                with trio.move_on_at(deadline) as scope:
                    frame = await self._ws.get_message()
                if scope.cancelled_caught:
                    self._keepalive_expired()
                    continue
                self._last_received = trio.current_time()
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
        try:
            while True:
                await server._wait_unstalled()
                with trio.move_on_at(self._last_sent + self._keepalive_interval()) as scope:
                    item = await self._outbox_receive.receive()
                if scope.cancelled_caught:
                    item = _KEEPALIVE_FRAME
                await server._wait_unstalled()
                if isinstance(item, _Close):
                    await self._close_now(item.code, item.reason)
                    return
                await self._ws.send_message(item)
                self._last_sent = trio.current_time()
                self.frames_sent += 1
                server._notify()
        except ConnectionClosed:
            pass

    def _keepalive_interval(self) -> float:
        if self.setup is None:
            return math.inf
        timeout = self.setup.keepalive_timeout
        if timeout is None:
            timeout = _DEFAULT_CLIENT_KEEPALIVE
        return sane_keepalive_timeout(timeout) / 2

    def _keepalive_expired(self) -> None:
        silent = trio.current_time() - self._last_received
        log.info("connection %d: nothing received for %.1f s; closing", self.id, silent)
        self._send(
            Error(
                "TIMEOUT",
                "The timeout has been reached. "
                f"The message was last received {silent:.0f} seconds ago.",
            )
        )
        self._close_after(1000, "keepalive timeout")

    async def _close_now(self, code: int, reason: str) -> None:
        """Close the WebSocket with ``code`` at once, then the TCP stream."""
        self._closing = True
        if self.close_code is None:
            self.close_code = code
        done = self._close_done = trio.Event()
        try:
            with trio.move_on_after(_CLOSE_TIMEOUT):
                await self._ws.aclose(code, reason)
        finally:
            self._close_transport()
            done.set()

    def _close_transport(self) -> None:
        """Close the TCP socket under the WebSocket (trio-websocket leaves it open after 1009)."""
        if self._stream is not None:
            self._stream.socket.close()
        elif self._cancel_scope is not None:
            self._cancel_scope.cancel()

    def _abort(self, why: str) -> None:
        """Drop the connection abruptly: no close frame, just the socket closed."""
        if self.closed:
            return
        log.info("connection %d: dropping (%s)", self.id, why)
        self._closing = True
        if self.close_code is None:
            self.close_code = 1006
        self._close_transport()

    def _finish(self) -> None:
        self.closed = True
        self._closing = True
        if self._stream is not None:
            self._stream.socket.close()
        log.info("connection %d closed (code %s)", self.id, self.close_code)
        self._server._forget(self)
        self._server._notify()

    # --- sending ---

    def _enqueue(self, item: _Outgoing) -> None:
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
            self._closing = True

    def _send(self, message: Message) -> None:
        self._enqueue(encode(message))

    def _close_after(self, code: int, reason: str) -> None:
        """Close the WebSocket once everything queued so far has been sent."""
        self._enqueue(_Close(code, reason))
        self._closing = True

    def _emit(self, channel: ServerChannel, events: Sequence[Event]) -> None:
        """Send ``events`` on ``channel`` in its data format."""
        if not events or self._closing:
            return
        config = self._server.config
        by_type: dict[type[Event], list[Event]] = {}
        for event in events:
            by_type.setdefault(type(event), []).append(event)
        for cls in by_type:
            self._announce(channel, cls)
        size = config.max_events_per_message
        if channel.data_format == "FULL":
            objects = [
                _full_object(event, self._full_layout(channel, type(event))) for event in events
            ]
            for chunk in _chunks(objects, size):
                self._send(FeedData(channel.id, list(chunk)))
            return
        pairs: list[Any] = []
        for cls, batch in by_type.items():
            layout = channel.layout(cls)
            for chunk in _chunks(batch, size):
                pairs.append((cls.EVENT_TYPE, _compact_values(chunk, layout)))
        for group in _chunks(pairs, config.pairs_per_message):
            data: list[Any] = []
            for name, values in group:
                data += [name, values]
            self._send(FeedData(channel.id, data))

    @staticmethod
    def _full_layout(channel: ServerChannel, cls: type[Event]) -> tuple[str, ...] | None:
        fields = channel.event_fields.get(cls.EVENT_TYPE)
        return tuple(fields) if fields else None

    def _announce(self, channel: ServerChannel, cls: type[Event]) -> None:
        """FEED_CONFIG with ``eventFields`` for ``cls`` if the client needs it before data."""
        config = self._server.config
        name = cls.EVENT_TYPE
        chose = bool(channel.event_fields.get(name))
        if channel.data_format != "COMPACT" or not (config.event_fields_in_config or not chose):
            return  # FULL data names its fields itself
        layout = channel.layout(cls)
        if channel.announced.get(name) == layout:
            return
        channel.announced[name] = layout
        self._send(
            FeedConfig(
                channel.id,
                aggregation_period=channel.aggregation_period,
                data_format=channel.data_format,
                event_fields={name: list(layout)},
            )
        )

    # --- receiving ---

    def _on_frame(self, frame: str | bytes) -> None:
        if self._closing:
            return
        try:
            self._handle_frame(frame)
        except Exception as exc:
            # Whatever one client's frame does to us (a value too deep to echo back, a bug) must
            # cost that client only: tell it, close it, and keep serving the others.
            log.warning(
                "connection %d: failed on a %d-character message; closing it",
                self.id,
                len(frame),
                exc_info=True,
            )
            reason = f"the server failed on this message ({type(exc).__name__})"
            self._send(Error("UNKNOWN", reason))
            self._close_after(1011, "server error")
        finally:
            self._server._notify()

    def _handle_frame(self, frame: str | bytes) -> None:
        try:
            obj = parse_json(frame)
        except RemoteProtocolError as exc:
            # Not the text: it may quote the frame, and a frame may hold a token.
            log.debug("connection %d: invalid %d-character message", self.id, len(frame))
            self._send(Error("INVALID_MESSAGE", str(exc)))
            return
        try:
            message = from_wire(obj)
        except RemoteProtocolError as exc:
            self._bad_action(obj["channel"], str(exc))  # a known message with bad fields
            return
        self.received.append(message)
        self._server.received.append((self.id, message))
        # Not the message itself: its repr is unbounded (and fails on deeply nested values).
        log.debug(
            "connection %d received %s on channel %d", self.id, _kind(message), obj["channel"]
        )
        if self.setup is None and not isinstance(message, Setup):
            self._bad_action(message.channel, f"SETUP must come first, not {_kind(message)}")
        else:
            handler = _HANDLERS.get(type(message))
            if handler is None:
                self._bad_action(message.channel, f"a client may not send {_kind(message)}")
            else:
                handler(self, message)

    def _bad_action(self, channel: int, text: str) -> None:
        log.debug("connection %d: BAD_ACTION on channel %d: %s", self.id, channel, text)
        self._send(Error("BAD_ACTION", text, channel=channel))

    def _feed_channel(self, message: FeedSetup | FeedSubscription) -> ServerChannel | None:
        channel = self.channels.get(message.channel)
        if channel is None:
            self._bad_action(message.channel, f"channel {message.channel} is not open")
        return channel

    def _on_setup(self, message: Setup) -> None:
        config = self._server.config
        first = self.setup is None
        self.setup = message
        reply = Setup(
            version=config.version,
            keepalive_timeout=config.keepalive_timeout,
            accept_keepalive_timeout=config.accept_keepalive_timeout,
        )
        announced = config.announce_keepalive_timeout
        if announced is None:
            self._send(reply)
        else:
            obj = to_wire(reply)
            obj["keepaliveTimeout"] = _json_double(announced)
            self._enqueue(orjson.dumps(obj).decode())
        if not first:
            return
        if config.token is None:
            self._authorize()
        else:
            self._send(AuthState("UNAUTHORIZED"))

    def _authorize(self) -> None:
        self.authorized = True
        self._send(AuthState("AUTHORIZED", user_id=self._server.config.user_id))

    def _on_auth(self, message: Auth) -> None:
        if message.channel != 0:
            self._bad_action(message.channel, "AUTH belongs on channel 0")
            return
        server = self._server
        expected = server.config.token
        rejected = server._take_token_rejection()
        if not rejected and (
            expected is None or hmac.compare_digest(message.token.encode(), expected.encode())
        ):
            self._authorize()
            return
        log.info("connection %d: token rejected", self.id)
        self.authorized = False
        self._send(AuthState("UNAUTHORIZED"))
        self._close_after(1008, "unauthorized")

    def _on_keepalive(self, message: Keepalive) -> None:
        pass

    def _on_error(self, message: Error) -> None:
        log.info(
            "connection %d: client reported %s on channel %d: %s",
            self.id,
            message.error,
            message.channel,
            message.message,
        )

    def _on_channel_request(self, message: ChannelRequest) -> None:
        number = message.channel
        if number <= 0:
            self._bad_action(number, "channel 0 cannot be requested")
        elif not self.authorized:
            self._send(Error("UNAUTHORIZED", "the connection is not authorized", channel=number))
        elif number in self.channels:
            self._bad_action(number, f"channel {number} is already open")
        elif message.service != "FEED":
            self._bad_action(number, f"unsupported service {describe(message.service)}")
        else:
            data_format = self._server.config.data_format_override or "FULL"
            self.channels[number] = ServerChannel(
                number, message.service, dict(message.parameters), data_format=data_format
            )
            parameters = {**message.parameters, "subFormat": "LIST"}
            self._send(ChannelOpened(number, message.service, parameters))

    def _on_channel_cancel(self, message: ChannelCancel) -> None:
        # Lenient: cancelling a channel that is already closed just confirms it.
        self.channels.pop(message.channel, None)
        self._send(ChannelClosed(message.channel))

    def _on_feed_setup(self, message: FeedSetup) -> None:
        channel = self._feed_channel(message)
        if channel is None:
            return
        override = self._server.config.data_format_override
        requested = message.accept_data_format
        if override is not None:
            channel.data_format = override
        elif requested is not None:
            if requested not in _DATA_FORMATS:
                self._bad_action(channel.id, f"unknown data format {describe(requested)}")
                return
            channel.data_format = requested
        if message.accept_aggregation_period is not None:
            channel.aggregation_period = message.accept_aggregation_period
        if message.accept_event_fields:
            channel.event_fields.update(
                {name: list(fields) for name, fields in message.accept_event_fields.items()}
            )
        self._send(
            FeedConfig(
                channel.id,
                aggregation_period=channel.aggregation_period,
                data_format=channel.data_format,
            )
        )

    def _on_feed_subscription(self, message: FeedSubscription) -> None:
        channel = self._feed_channel(message)
        if channel is None:
            return
        if message.reset:
            channel.subscriptions.clear()
        for entry in message.remove or ():
            channel.subscriptions.pop(entry.key, None)
        added = message.add or []
        for entry in added:
            channel.subscriptions[entry.key] = entry
        server = self._server
        current: list[Event] = []
        snapshots: list[list[Event]] = []
        for entry in added:
            cls = _known_class(entry.type)
            if cls is None or entry.symbol == "*":
                continue
            if entry.from_time is not None and issubclass(cls, TimeSeriesEvent):
                snapshots.append(server._snapshot(cls, entry.symbol, entry.from_time))
            elif entry.type in _LASTING_TYPES:
                event = server._current(entry.type, entry.symbol)
                if event is not None:
                    current.append(event)
        self._emit(channel, current)
        for snapshot in snapshots:
            self._emit(channel, snapshot)


def _kind(message: Message) -> str:
    name = getattr(message, "type", None)
    return name if isinstance(name, str) else type(message).__name__.upper()


def _known_class(name: str) -> type[Event] | None:
    try:
        return event_class(name)
    except KeyError:
        return None


_HANDLERS: dict[type[Any], Callable[[ServerConnection, Any], None]] = {
    Setup: ServerConnection._on_setup,
    Auth: ServerConnection._on_auth,
    Keepalive: ServerConnection._on_keepalive,
    Error: ServerConnection._on_error,
    ChannelRequest: ServerConnection._on_channel_request,
    ChannelCancel: ServerConnection._on_channel_cancel,
    FeedSetup: ServerConnection._on_feed_setup,
    FeedSubscription: ServerConnection._on_feed_subscription,
}
"""What a client may send; any other message is a BAD_ACTION."""


# --- the server --------------------------------------------------------------------------------


def _limit_frames(target: WebSocketConnection | WebSocketServer, size: int) -> None:
    """Make trio-websocket enforce ``size`` as a frame arrives, not after reading all of it.

    trio-websocket 0.12 keeps the limit in ``_max_message_size`` (a server's, for the
    connections it accepts; a connection's, checked against each chunk received) and closes
    with 1009 once a message grows past it. Should a later version drop that attribute, the
    server's own check on each whole frame (in ``_reader``) still applies.
    """
    if hasattr(target, "_max_message_size"):
        setattr(target, "_max_message_size", size)  # noqa: B010 (a private attribute)


@attrs.frozen
class _Reject:
    """Upgrade fault: answer with this HTTP status and body."""

    status: int
    body: bytes


@attrs.frozen
class _Garbage:
    """Upgrade fault: answer with these bytes, which need not be HTTP."""

    data: bytes


_Fault = TypeVar("_Fault", _Reject, _Garbage)


async def _answer_with(stream: trio.SocketStream, data: bytes) -> None:
    """Read the client's request head, answer with ``data``, close."""
    try:
        with trio.move_on_after(_HANDSHAKE_TIMEOUT):
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


def _peer_key(address: object, port: int) -> tuple[str, int]:
    return (str(ipaddress.ip_address(str(address))), port)


class _TrackingListener(trio.abc.Listener[trio.abc.Stream]):
    """A listener that remembers each accepted TCP stream by peer address, so the server can
    close the TCP socket itself (trio-websocket does not expose it).

    ``intercept(stream)`` may take a TCP stream over before anything is read (returning True);
    it is then not handed on. With an ``ssl_context`` the stream handed on is TLS over TCP.
    """

    def __init__(
        self,
        inner: trio.SocketListener,
        streams: dict[tuple[str, int], Any],
        intercept: Callable[[trio.SocketStream], bool] = lambda _: False,
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
        self._streams[_peer_key(host, port)] = stream
        return self._wrap(stream)

    def _wrap(self, stream: trio.SocketStream) -> trio.abc.Stream:
        if self._ssl_context is None:
            return stream
        return trio.SSLStream(stream, self._ssl_context, server_side=True, https_compatible=True)

    async def aclose(self) -> None:
        await self._inner.aclose()


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
        received: every client message as (connection id, message), across the connections in
            :attr:`connections`.
        max_message_size: the current frame-size limit (see :meth:`set_max_message_size`).
        reject_all_tokens: set it to make every AUTH fail until it is cleared (see also
            :meth:`reject_next_token`).
        rejected_upgrades: how many connections a fault from :meth:`reject_upgrades` or
            :meth:`answer_with_bytes` has turned away so far.
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
        self._upgrade_fault: _Reject | _Garbage | None = None
        self._upgrade_faults_left: int | None = None
        self.rejected_upgrades = 0
        self._nursery: trio.Nursery | None = None

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
        batch = list(events)
        for event in batch:
            self.market.update(event)
        self._route(batch)

    def _route(self, events: Sequence[Event]) -> None:
        if not events:
            return
        for conn in self.live:
            for channel in list(conn.channels.values()):
                wanted = [event for event in events if channel.wants(event)]
                if wanted:
                    conn._emit(channel, wanted)

    def _current(self, event_type: str, symbol: str) -> Event | None:
        event = self.market.latest(event_type, symbol)
        if event is None and self.config.simulate and event_type in SIMULATED_TYPES:
            event = self.market.step(event_type, symbol)
        return event

    def _snapshot(self, cls: type[Event], symbol: str, from_time: int) -> list[Event]:
        """The history snapshot of a time-series subscription, newest first, flagged (§6.7)."""
        # Any 64-bit fromTime may arrive; an index holds 32-bit seconds (§6.7), so clamp it.
        from_time = min(max(from_time, 0), _MAX_TIME_MS)
        market = self.market
        name = cls.EVENT_TYPE
        limit = self.config.max_snapshot_events
        if self.config.simulate:
            if cls is Candle:
                market.history(symbol, from_time, market.now_ms(), limit=limit + 1)
            elif name in SIMULATED_TYPES and not market.series(name, symbol, from_time):
                market.step(name, symbol)
        history = market.series(name, symbol, from_time)
        history.reverse()
        snipped = len(history) > limit
        history = history[:limit]
        out: list[TimeSeriesEvent] = [
            _with_flags(event, EventFlag.SNAPSHOT_BEGIN if i == 0 else 0)
            for i, event in enumerate(history)
        ]
        if snipped:
            out[-1] = _with_flags(out[-1], out[-1].event_flags | EventFlag.SNAPSHOT_SNIP)
        elif out and out[-1].time == from_time:
            out[-1] = _with_flags(out[-1], out[-1].event_flags | EventFlag.SNAPSHOT_END)
        else:
            flags = EventFlag.REMOVE_EVENT | EventFlag.SNAPSHOT_END
            if not out:
                flags |= EventFlag.SNAPSHOT_BEGIN
            marker: TimeSeriesEvent = cast(Any, cls)(
                event_symbol=symbol,
                time=from_time,
                index=index_from_time(from_time),
                event_flags=int(flags),
            )
            out.append(marker)
        return list(out)

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
                conn._closing = True
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
        self._set_upgrade_fault(_Reject(status, body), count)

    def answer_with_bytes(self, data: bytes, *, count: int | None = None) -> None:
        """Answer the next ``count`` connections (every one, with ``None``) with ``data``, which
        need not be HTTP, after reading the client's request; then close the socket.

        Until :meth:`accept_upgrades`, or until ``count`` connections have been turned away.
        """
        self._set_upgrade_fault(_Garbage(data), count)

    def accept_upgrades(self) -> None:
        """Undo :meth:`reject_upgrades` / :meth:`answer_with_bytes`: accept upgrades again."""
        self._upgrade_fault = None
        self._upgrade_faults_left = None

    def close_channel(self, connection_id: int, channel: int) -> None:
        """Close a channel from the server's side with an unprompted CHANNEL_CLOSED."""
        conn = self.connection(connection_id)
        conn.channels.pop(channel, None)
        conn._send(ChannelClosed(channel))
        self._notify()

    def send_error(self, connection_id: int, channel: int, code: str, message: str) -> None:
        """Send ``ERROR`` with this code and text on a channel (0: the whole connection)."""
        self.connection(connection_id)._send(Error(code, message, channel=channel))

    def send_raw(self, connection_id: int, text: str) -> None:
        """Send ``text`` as one frame, as is (for malformed-input tests)."""
        self.connection(connection_id)._enqueue(text)

    def switch_data_format(self, connection_id: int, channel: int, data_format: str) -> None:
        """Switch a channel to ``"FULL"`` or ``"COMPACT"`` mid-session, announced by FEED_CONFIG."""
        if data_format not in _DATA_FORMATS:
            raise ValueError(f"data_format must be one of {_DATA_FORMATS}, got {data_format!r}")
        conn = self.connection(connection_id)
        feed = conn.channels[channel]
        feed.data_format = data_format
        conn._send(FeedConfig(channel, feed.aggregation_period, data_format))

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
            _limit_frames(self._ws_server, size)
        for conn in self.live:
            _limit_frames(conn._ws, size)

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

    def _set_upgrade_fault(self, fault: _Reject | _Garbage, count: int | None) -> None:
        if count is not None and count < 1:
            raise ValueError(f"count must be positive or None, got {count}")
        self._upgrade_fault = fault
        self._upgrade_faults_left = count

    def _take_upgrade_fault(self, kind: type[_Fault]) -> _Fault | None:
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

    def _intercept(self, stream: trio.SocketStream) -> bool:
        """Take a fresh TCP stream over when :meth:`answer_with_bytes` is in force."""
        if self._nursery is None or not isinstance(self._upgrade_fault, _Garbage):
            return False
        fault = self._take_upgrade_fault(_Garbage)
        assert fault is not None
        self._nursery.start_soon(_answer_with, stream, fault.data)
        return True

    def _take_token_rejection(self) -> bool:
        rejected, self._reject_next_token = self._reject_next_token, False
        return rejected or self.reject_all_tokens

    async def _wait_unstalled(self) -> None:
        while self._stalled:
            await self._resumed.wait()

    async def _serve(
        self,
        host: str,
        port: int,
        ssl_context: ssl.SSLContext | None,
        task_status: trio.TaskStatus[DXLinkServer],
    ) -> None:
        listeners = await trio.open_tcp_listeners(port, host=host)
        tracked = [
            _TrackingListener(listener, self._streams, self._intercept, ssl_context)
            for listener in listeners
        ]
        ws_server = WebSocketServer(
            self._handle,
            cast("list[trio.SocketListener]", tracked),
            message_queue_size=_WS_MESSAGE_QUEUE,
            max_message_size=self.max_message_size,
            connect_timeout=_HANDSHAKE_TIMEOUT,
            disconnect_timeout=_CLOSE_TIMEOUT,
        )
        self._ws_server = ws_server
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

    async def _handle(self, request: WebSocketRequest) -> None:
        remote = request.remote
        stream = None
        if isinstance(remote, Endpoint):
            stream = self._streams.pop(_peer_key(remote.address, remote.port), None)
        rejection = self._take_upgrade_fault(_Reject)
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
                    (entry.type, entry.symbol)
                    for conn in self.live
                    for channel in conn.channels.values()
                    for entry in channel.subscriptions.values()
                    if entry.symbol != "*" and entry.type in SIMULATED_TYPES
                }
            )
            self._route([self.market.step(kind, symbol) for kind, symbol in keys])


async def serve_dxlink(
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    config: ServerConfig | None = None,
    market: Market | None = None,
    ssl_context: ssl.SSLContext | None = None,
    task_status: trio.TaskStatus[DXLinkServer] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run a local DXLink server until cancelled.

    Use it with ``server = await nursery.start(serve_dxlink)``: once it is listening it calls
    ``task_status.started`` with its :class:`DXLinkServer`. ``port=0`` picks a free port. With
    an ``ssl_context`` (a server context holding a certificate) it serves TLS, at ``wss://``.
    """
    server = DXLinkServer(
        config if config is not None else ServerConfig(),
        market if market is not None else Market(),
    )
    await server._serve(host, port, ssl_context, task_status)


@asynccontextmanager
async def open_dxlink_server(
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    config: ServerConfig | None = None,
    market: Market | None = None,
    ssl_context: ssl.SSLContext | None = None,
) -> AsyncIterator[DXLinkServer]:
    """Run a local DXLink server for the duration of an ``async with`` block.

    Yields the :class:`DXLinkServer`; on exit every connection and task is cancelled. An
    exception raised in the block comes out as itself, not wrapped in an exception group.
    With an ``ssl_context`` the server speaks TLS (``server.url`` is ``wss://...``).
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
            )
            server: DXLinkServer = await nursery.start(serve)
            try:
                yield server
            finally:
                nursery.cancel_scope.cancel()
