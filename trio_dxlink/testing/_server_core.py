"""The local DXLink server's side of one connection, as a pure state machine.

:class:`ServerProtocol` is the server's twin of :class:`~trio_dxlink._connection.ClientConnection`
and shares its rules (``trio_dxlink._protocol``): the connection states, the server's transition
table (:data:`~trio_dxlink._protocol.SERVER_ACCEPTS`) and the keepalive arithmetic. It is handed
each client frame with the time (:meth:`~ServerProtocol.receive_message`) and returns what
happened as server events; every reply waits in an outbox (:meth:`~ServerProtocol.data_to_send`),
together with :class:`Close` when the connection is to be closed after what precedes it. It owns
no socket, no clock and no task, and imports no trio: ``tests/test_server_core.py`` drives it
synchronously, and the trio server (``_server_connection.py``) and the benchmark's blast server
are thin drivers over it.

The conversation (protocol reference §2-§4):

* the client's SETUP first; the answer is SETUP, then AUTH_STATE: AUTHORIZED with ``userId`` at
  once when the server needs no token, else UNAUTHORIZED;
* AUTH is reported as :class:`AuthRequested`; the driver checks the token and calls
  :meth:`~ServerProtocol.authorize` or :meth:`~ServerProtocol.reject_token` (UNAUTHORIZED, then
  close 1008);
* FEED channels with any positive id, re-openable after close, once authorized; CHANNEL_OPENED
  echoes the parameters plus ``"subFormat": "LIST"``; FEED_SETUP is answered by FEED_CONFIG;
  FEED_SUBSCRIPTION changes the channel's subscriptions and is reported as
  :class:`SubscriptionChanged` (the driver sends what a new subscriber gets);
* DOM channels (``_dom_service.py``): DOM_SETUP is answered by DOM_CONFIG and reported as
  :class:`DomSetupReceived`; books go out with :meth:`~ServerProtocol.send_dom_snapshot`;
* market events go out with :meth:`~ServerProtocol.send_events`, in the channel's data format,
  the COMPACT layout announced by FEED_CONFIG first when the client needs it;
* KEEPALIVE when nothing was sent for half the client's keepalive timeout; ERROR TIMEOUT and a
  close when the client was silent for the server's own (:meth:`~ServerProtocol.handle_timers`).

Nothing a client sends raises: a frame that is not a message envelope gets ERROR
INVALID_MESSAGE, a message its state does not accept (or fields of the wrong shape) ERROR
BAD_ACTION, and a message the server fails to handle ERROR UNKNOWN and a close 1011.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from typing import Any

import orjson

from .._exceptions import RemoteProtocolError
from .._messages import (
    Auth,
    AuthState,
    ChannelCancel,
    ChannelClosed,
    ChannelOpened,
    ChannelRequest,
    DomSetup,
    Error,
    FeedConfig,
    FeedData,
    FeedSetup,
    FeedSubscription,
    Keepalive,
    Message,
    Setup,
    encode,
    from_wire,
    parse_json,
    to_wire,
)
from .._protocol import (
    DEFAULT_PEER_KEEPALIVE_TIMEOUT,
    SERVER_ACCEPTS,
    ConnectionState,
    KeepaliveTimers,
    keepalive_send_interval,
)
from .._util import describe
from ..events import Event
from ._config import DATA_FORMATS, ServerConfig
from ._dom_service import DomServerChannel, Level, apply_setup, open_dom_channel, snapshot_message
from ._encoding import chunks, compact_values, full_object
from ._server_channel import ServerChannel, within_cap
from ._server_events import (
    AuthRequested,
    ChannelCancelled,
    ChannelRequested,
    ClientErrorReceived,
    ClientTimedOut,
    Close,
    DomSetupReceived,
    FeedSetupReceived,
    HandlingFailed,
    MessageReceived,
    Outgoing,
    Refused,
    ServerEvent,
    SubscriptionChanged,
)

__all__ = [
    "AuthRequested",
    "ChannelCancelled",
    "ChannelRequested",
    "ClientErrorReceived",
    "ClientTimedOut",
    "Close",
    "FeedSetupReceived",
    "HandlingFailed",
    "MessageReceived",
    "Outgoing",
    "Refused",
    "ServerChannel",
    "ServerEvent",
    "ServerProtocol",
    "SubscriptionChanged",
]

log = logging.getLogger("trio_dxlink.testing")


def _json_double(value: float) -> float | str:
    """A number as DXLink writes a JSONDouble: non-finite values as strings (§1)."""
    if isinstance(value, int):
        return value if -(2**63) <= value < 2**64 else float(value)  # what orjson can write
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    return value


# --- the machine --------------------------------------------------------------------------------


class ServerProtocol:
    """The server side of one DXLink connection, as a pure state machine.

    Args:
        config: how the server behaves (only whether a token is needed is read from
            ``config.token``; checking one is the driver's business).
        now: the time the connection was accepted; both keepalive clocks start then.
        label: how log lines name this connection.

    Attributes:
        state: a :class:`~trio_dxlink._protocol.ConnectionState` (``IDLE`` until SETUP,
            ``AUTHENTICATING`` until a token is accepted, ``AUTHORIZED``, ``CLOSED`` once the
            server decided to close or the transport ended).
        setup: the client's SETUP, once received.
        authorized: whether AUTH_STATE AUTHORIZED was sent (and not revoked by a rejected
            token); it stays set while an authorized connection closes.
        channels: the open FEED channels by id.
        dom_channels: the open DOM channels by id.
    """

    def __init__(self, config: ServerConfig, now: float = 0.0, *, label: str = "connection"):
        self.config = config
        self.label = label
        self.state = ConnectionState.IDLE
        self.setup: Setup | None = None
        self.authorized = False
        self.channels: dict[int, ServerChannel] = {}
        self.dom_channels: dict[int, DomServerChannel] = {}
        self._outbox: list[Outgoing] = []
        self._timers = KeepaliveTimers()
        self._timers.start(now)

    def __repr__(self) -> str:
        return f"<ServerProtocol {self.label} {self.state.value} channels={sorted(self.channels)}>"

    @property
    def closing(self) -> bool:
        """Whether the connection is closing: input is ignored and nothing more is queued."""
        return self.state is ConnectionState.CLOSED

    # --- input ---

    def receive_message(self, frame: str | bytes, now: float) -> list[ServerEvent]:
        """Handle one frame from the client; return what happened. Never raises for anything
        the client sent; ignores frames once the connection is closing."""
        if self.closing:
            return []
        self._timers.last_received = now
        try:
            return self._handle_frame(frame)
        except Exception as exc:
            # Whatever one client's frame does (a value too deep to echo back, a bug) must cost
            # that client only: tell it, close it.
            log.warning(
                "%s: failed on a %d-character message; closing it",
                self.label,
                len(frame),
                exc_info=True,
            )
            return [self.handling_failed(exc)]

    def handling_failed(self, exc: BaseException) -> HandlingFailed:
        """Answer a message the server failed on (here or in its driver): ERROR UNKNOWN, then
        close 1011."""
        reason = f"the server failed on this message ({type(exc).__name__})"
        self._send(Error("UNKNOWN", reason))
        self._close_after(1011, "server error")
        return HandlingFailed(reason)

    def connection_closed(self) -> None:
        """The transport ended or is being closed: ignore input, queue nothing more."""
        self.state = ConnectionState.CLOSED
        self._outbox.clear()

    # --- decisions the driver feeds in ---

    def authorize(self) -> None:
        """Accept the client's token: AUTH_STATE AUTHORIZED."""
        if self.closing:
            return
        self.state = ConnectionState.AUTHORIZED
        self.authorized = True
        self._send(AuthState("AUTHORIZED", user_id=self.config.user_id))

    def reject_token(self) -> None:
        """Refuse the client's token: AUTH_STATE UNAUTHORIZED, then close 1008."""
        if self.closing:
            return
        log.info("%s: token rejected", self.label)
        self.state = ConnectionState.AUTHENTICATING
        self.authorized = False
        self._send(AuthState("UNAUTHORIZED"))
        self._close_after(1008, "unauthorized")

    # --- what the server says unprompted ---

    def send_events(self, channel: ServerChannel, events: Sequence[Event]) -> None:
        """Queue ``events`` on ``channel`` in its data format (FEED_CONFIG first where the
        client needs the COMPACT layout announced)."""
        if not events or self.closing:
            return
        config = self.config
        by_type: dict[type[Event], list[Event]] = {}
        for event in events:
            by_type.setdefault(type(event), []).append(event)
        for cls in by_type:
            self._announce(channel, cls)
        size = config.max_events_per_message
        as_string = config.index_as_string
        if channel.data_format == "FULL":
            objects = [
                full_object(event, _full_layout(channel, type(event)), index_as_string=as_string)
                for event in events
            ]
            for chunk in chunks(objects, size):
                self._send(FeedData(channel.id, list(chunk)))
            return
        pairs: list[Any] = []
        for cls, batch in by_type.items():
            layout = channel.layout(cls)
            for chunk in chunks(batch, size):
                values = compact_values(chunk, layout, index_as_string=as_string)
                pairs.append((cls.EVENT_TYPE, values))
        for group in chunks(pairs, config.pairs_per_message):
            data: list[Any] = []
            for name, values in group:
                data += [name, values]
            self._send(FeedData(channel.id, data))

    def send_dom_snapshot(
        self, channel: DomServerChannel, time: int, bids: Sequence[Level], asks: Sequence[Level]
    ) -> None:
        """Queue a book on a DOM channel (levels best first, cut to the channel's depth)."""
        if channel.set_up:
            self._send(snapshot_message(channel, time, bids, asks))

    def close_channel(self, channel: int) -> None:
        """Close a channel from the server's side with an unprompted CHANNEL_CLOSED."""
        self.channels.pop(channel, None)
        self.dom_channels.pop(channel, None)
        self._send(ChannelClosed(channel))

    def send_error(self, channel: int, code: str, message: str) -> None:
        """Queue ERROR with this code and text on a channel (0: the whole connection)."""
        self._send(Error(code, message, channel=channel))

    def send_raw(self, text: str) -> None:
        """Queue ``text`` as one frame, as is."""
        self._queue(text)

    def switch_data_format(self, channel: int, data_format: str) -> None:
        """Switch a channel to ``"FULL"`` or ``"COMPACT"``, announced by FEED_CONFIG.

        Raises:
            ValueError: not a data format.
            KeyError: no such channel is open.
        """
        if data_format not in DATA_FORMATS:
            raise ValueError(f"data_format must be one of {DATA_FORMATS}, got {data_format!r}")
        feed = self.channels[channel]
        feed.data_format = data_format
        self._send(FeedConfig(channel, feed.aggregation_period, data_format))

    def close(self, code: int, reason: str) -> None:
        """Close the connection once everything queued so far has been sent."""
        self._close_after(code, reason)

    # --- output and time ---

    def data_to_send(self, now: float | None = None) -> list[Outgoing]:
        """Take what waits to be sent. With ``now``, it counts as sent now (a driver that
        writes later reports each write with :meth:`frame_sent` instead)."""
        out, self._outbox = self._outbox, []
        if out and now is not None:
            self._timers.last_sent = now
        return out

    def frame_sent(self, now: float) -> None:
        """A frame was written to the client now (keepalive counts from here)."""
        self._timers.last_sent = now

    @property
    def keepalive_interval(self) -> float:
        """The longest the server stays silent: half the client's keepalive timeout (the
        protocol's default when SETUP named none); infinite before SETUP."""
        if self.setup is None:
            return math.inf
        timeout = self.setup.keepalive_timeout
        return keepalive_send_interval(
            DEFAULT_PEER_KEEPALIVE_TIMEOUT if timeout is None else timeout
        )

    def send_deadline(self) -> float:
        """When the server must next send something (a KEEPALIVE if nothing else)."""
        return self._timers.send_deadline(self.keepalive_interval)

    def receive_deadline(self) -> float:
        """When the client's silence becomes a keepalive timeout (never, once closing)."""
        if self.closing:
            return math.inf
        return self._timers.receive_deadline(self.config.keepalive_timeout)

    def next_deadline(self) -> float:
        """When :meth:`handle_timers` next has something to do."""
        return min(self.send_deadline(), self.receive_deadline())

    def handle_timers(self, now: float) -> list[ServerEvent]:
        """Time out a silent client (ERROR TIMEOUT, then a close), or queue KEEPALIVE when the
        server has been quiet and has nothing else to send."""
        if self.closing:
            return []
        timers = self._timers
        if timers.peer_expired(now, self.config.keepalive_timeout):
            silence = timers.silence(now)
            log.info("%s: nothing received for %.1f s; closing", self.label, silence)
            self._send(
                Error(
                    "TIMEOUT",
                    "The timeout has been reached. "
                    f"The message was last received {silence:.0f} seconds ago.",
                )
            )
            self._close_after(1000, "keepalive timeout")
            return [ClientTimedOut(silence)]
        if timers.send_due(now, self.keepalive_interval) and not self._outbox:
            self._queue(_KEEPALIVE_FRAME)
        return []

    # --- internals ---

    def _queue(self, item: Outgoing) -> None:
        if not self.closing:
            self._outbox.append(item)

    def _send(self, message: Message) -> None:
        self._queue(encode(message))

    def _close_after(self, code: int, reason: str) -> None:
        self._queue(Close(code, reason))
        self.state = ConnectionState.CLOSED

    def _refuse(self, channel: int, reason: str, code: str = "BAD_ACTION") -> list[ServerEvent]:
        log.debug("%s: %s on channel %d: %s", self.label, code, channel, reason)
        self._send(Error(code, reason, channel=channel))
        return [Refused(channel, code, reason)]

    def _handle_frame(self, frame: str | bytes) -> list[ServerEvent]:
        try:
            obj = parse_json(frame)
        except RemoteProtocolError as exc:
            # Not the text: it may quote the frame, and a frame may hold a token.
            log.debug("%s: invalid %d-character message", self.label, len(frame))
            return self._refuse(0, str(exc), "INVALID_MESSAGE")
        try:
            message = from_wire(obj)
        except RemoteProtocolError as exc:
            return self._refuse(obj["channel"], str(exc))  # a known message with bad fields
        events: list[ServerEvent] = [MessageReceived(message)]
        # Not the message itself: its repr is unbounded (and fails on deeply nested values).
        log.debug("%s received %s on channel %d", self.label, _kind(message), obj["channel"])
        if type(message) not in SERVER_ACCEPTS.get(self.state, ()):
            if self.state is ConnectionState.IDLE:
                reason = f"SETUP must come first, not {_kind(message)}"
            else:
                reason = f"a client may not send {_kind(message)}"
            return events + self._refuse(message.channel, reason)
        return events + _HANDLERS[type(message)](self, message)

    def _on_setup(self, message: Setup) -> list[ServerEvent]:
        config = self.config
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
            self._queue(orjson.dumps(obj).decode())
        if first:
            if config.token is None:
                self.authorize()
            else:
                self.state = ConnectionState.AUTHENTICATING
                self._send(AuthState("UNAUTHORIZED"))
        return []

    def _on_auth(self, message: Auth) -> list[ServerEvent]:
        if message.channel != 0:
            return self._refuse(message.channel, "AUTH belongs on channel 0")
        return [AuthRequested(message.token)]

    def _on_keepalive(self, message: Keepalive) -> list[ServerEvent]:
        return []

    def _on_error(self, message: Error) -> list[ServerEvent]:
        log.info(
            "%s: client reported %s on channel %d: %s",
            self.label,
            message.error,
            message.channel,
            message.message,
        )
        return [ClientErrorReceived(message.channel, message.error, message.message)]

    def _on_channel_request(self, message: ChannelRequest) -> list[ServerEvent]:
        number = message.channel
        if number <= 0:
            return self._refuse(number, "channel 0 cannot be requested")
        if self.state is not ConnectionState.AUTHORIZED:
            return self._refuse(number, "the connection is not authorized", "UNAUTHORIZED")
        if number in self.channels or number in self.dom_channels:
            return self._refuse(number, f"channel {number} is already open")
        if message.service == "DOM":
            dom = open_dom_channel(number, message.parameters)
            if isinstance(dom, str):
                return self._refuse(number, dom)
            self.dom_channels[number] = dom
            self._send(ChannelOpened(number, "DOM", dict(message.parameters)))
            return [ChannelRequested(number)]
        if message.service != "FEED":
            return self._refuse(number, f"unsupported service {describe(message.service)}")
        data_format = self.config.data_format_override or "FULL"
        self.channels[number] = ServerChannel(
            number, message.service, dict(message.parameters), data_format=data_format
        )
        parameters = {**message.parameters, "subFormat": "LIST"}
        self._send(ChannelOpened(number, message.service, parameters))
        return [ChannelRequested(number)]

    def _on_channel_cancel(self, message: ChannelCancel) -> list[ServerEvent]:
        # Lenient: cancelling a channel that is already closed just confirms it.
        self.channels.pop(message.channel, None)
        self.dom_channels.pop(message.channel, None)
        self._send(ChannelClosed(message.channel))
        return [ChannelCancelled(message.channel)]

    def _on_dom_setup(self, message: DomSetup) -> list[ServerEvent]:
        channel = self.dom_channels.get(message.channel)
        if channel is None:
            return self._refuse(message.channel, f"channel {message.channel} is not a DOM channel")
        reply = apply_setup(channel, message)
        if isinstance(reply, str):
            return self._refuse(channel.id, reply)
        self._send(reply)
        return [DomSetupReceived(channel.id)]

    def _on_feed_setup(self, message: FeedSetup) -> list[ServerEvent]:
        channel = self.channels.get(message.channel)
        if channel is None:
            return self._refuse(message.channel, f"channel {message.channel} is not open")
        override = self.config.data_format_override
        requested = message.accept_data_format
        if override is not None:
            channel.data_format = override
        elif requested is not None:
            if requested not in DATA_FORMATS:
                return self._refuse(channel.id, f"unknown data format {describe(requested)}")
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
        return [FeedSetupReceived(channel.id)]

    def _on_feed_subscription(self, message: FeedSubscription) -> list[ServerEvent]:
        channel = self.channels.get(message.channel)
        if channel is None:
            return self._refuse(message.channel, f"channel {message.channel} is not open")
        if message.reset:
            channel.subscriptions.clear()
        removed = list(message.remove or ())
        for entry in removed:
            channel.subscriptions.pop(entry.key, None)
        cap = self.config.max_subscriptions
        added, refused = within_cap(self.channels.values(), channel, message.add or (), cap)
        for entry in added:
            channel.subscriptions[entry.key] = entry
        changed = SubscriptionChanged(channel.id, added, removed, bool(message.reset))
        if refused:
            return [changed, *self._over_cap(channel.id, refused)]
        return [changed]

    def _over_cap(self, channel: int, refused: int) -> list[ServerEvent]:
        cap = self.config.max_subscriptions
        message = f"Too many subscriptions: {refused} refused, the limit is {cap} per connection"
        if self.config.subscription_overflow == "refuse":
            return self._refuse(channel, message, "INVALID_MESSAGE")
        log.info("%s: %s; closing", self.label, message)
        self._send(Error("INVALID_MESSAGE", message))
        self._close_after(1011, "too many subscriptions")
        return [Refused(0, "INVALID_MESSAGE", message)]

    def _announce(self, channel: ServerChannel, cls: type[Event]) -> None:
        """FEED_CONFIG with ``eventFields`` for ``cls`` if the client needs it before data."""
        name = cls.EVENT_TYPE
        chose = bool(channel.event_fields.get(name))
        if channel.data_format != "COMPACT" or not (
            self.config.event_fields_in_config or not chose
        ):
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


_KEEPALIVE_FRAME = encode(Keepalive())


def _full_layout(channel: ServerChannel, cls: type[Event]) -> tuple[str, ...] | None:
    fields = channel.event_fields.get(cls.EVENT_TYPE)
    return tuple(fields) if fields else None


def _kind(message: Message) -> str:
    name = getattr(message, "type", None)
    return name if isinstance(name, str) else type(message).__name__.upper()


# What each client message does to the server; whether it is allowed now is SERVER_ACCEPTS' call.
_HANDLERS: dict[type[Any], Callable[[ServerProtocol, Any], list[ServerEvent]]] = {
    Setup: ServerProtocol._on_setup,
    Auth: ServerProtocol._on_auth,
    Keepalive: ServerProtocol._on_keepalive,
    Error: ServerProtocol._on_error,
    ChannelRequest: ServerProtocol._on_channel_request,
    ChannelCancel: ServerProtocol._on_channel_cancel,
    FeedSetup: ServerProtocol._on_feed_setup,
    FeedSubscription: ServerProtocol._on_feed_subscription,
    DomSetup: ServerProtocol._on_dom_setup,
}
