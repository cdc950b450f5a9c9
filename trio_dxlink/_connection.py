"""The sans-I/O DXLink client connection.

:class:`ClientConnection` is a pure state machine: it is handed the text of each frame the server
sent (:meth:`~ClientConnection.receive_message`) and the current time, and it returns what
happened as a list of events; what it wants sent waits in an outbox
(:meth:`~ClientConnection.data_to_send`). It owns no socket, no clock and no task, so the same
code serves any transport, and tests drive it synchronously.

The handshake follows the strict order tastytrade requires::

    SETUP ─► (server SETUP, AUTH_STATE UNAUTHORIZED) ─► AUTH ─► (AUTH_STATE AUTHORIZED) ─► channels

Channels are FEED channels with odd ids. A channel requested before authorization waits in the
outbox's queue; once ``CHANNEL_OPENED`` arrives the connection sends ``FEED_SETUP`` for the event
types the channel needs and then every subscription the channel holds, in chunks under a byte
budget. Subscriptions are kept per channel as a set keyed by (type, symbol, source), so a
connection can always say exactly what it has subscribed.

Keepalive is time-driven but the clock is the caller's: :meth:`~ClientConnection.next_deadline`
says when to call :meth:`~ClientConnection.handle_timers`, which queues a ``KEEPALIVE`` when
nothing has been sent for a while and raises :class:`~trio_dxlink.KeepaliveTimeoutError` when the
server has been silent longer than the keepalive timeout this client advertised.

Errors: :class:`~trio_dxlink.LocalProtocolError` for calls the current state does not allow,
:class:`~trio_dxlink.RemoteProtocolError` for server messages the protocol does not allow. After
either, or after the connection is closed, the connection refuses further use.

Bad *data* is not a protocol error. A frame that is not JSON (or not a message envelope), a
FEED_DATA whose rows or objects cannot be decoded (ragged rows, a string where a number belongs,
an array where an object belongs), or COMPACT data laid out by an unusable field list is
skipped: what could be decoded from the same frame is still returned, the rest is counted in
:class:`Statistics`, logged at a bounded rate with a bounded excerpt, and reported as a
:class:`DataSkipped` event in stream order. Only violations of the conversation itself
(handshake order, channel states, malformed control messages) end a connection. A server's
keepalive timeout outside :data:`KEEPALIVE_TIMEOUT_RANGE` is clamped into it and logged.
"""

from __future__ import annotations

import enum
import logging
import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import attrs
import orjson

from . import _messages as m
from ._codec import RowDecoder, compile_row_decoder, decode_full
from ._exceptions import KeepaliveTimeoutError, LocalProtocolError, RemoteProtocolError
from ._util import LogLimiter, describe
from .events import Event, event_class

__all__ = [
    "Authorized",
    "AuthRejected",
    "ChannelClosed",
    "ChannelOpened",
    "ClientConnection",
    "ConfigChanged",
    "ConnectionEvent",
    "ConnectionState",
    "DataSkipped",
    "FeedChannel",
    "FeedConfig",
    "FeedEvents",
    "ServerErrorReceived",
    "SetupReceived",
    "chunk_subscription",
]

log = logging.getLogger("trio_dxlink")

PROTOCOL_VERSION = "0.1-DXF-JS/0.3.0"
"""What SETUP announces: the version string tastytrade's own web platform sends."""

DEFAULT_SUBSCRIPTION_BUDGET = 8192
"""Largest FEED_SUBSCRIPTION frame, in bytes, before it is split (the JS client's figure)."""

KEEPALIVE_TIMEOUT_RANGE = (1.0, 3600.0)
"""The peer keepalive timeouts either side believes, in seconds; others are clamped into it."""


def sane_keepalive_timeout(value: float) -> float:
    """A keepalive timeout a peer announced, clamped into :data:`KEEPALIVE_TIMEOUT_RANGE`
    (NaN counts as the longest): a broken peer cannot make this side flood it."""
    low, high = KEEPALIVE_TIMEOUT_RANGE
    return high if math.isnan(value) else min(max(value, low), high)


class ConnectionState(enum.Enum):
    """Where a :class:`ClientConnection` is in its life."""

    IDLE = "idle"  #: nothing sent yet
    SETUP = "setup"  #: SETUP sent; waiting for the server's SETUP and AUTH_STATE
    AUTHENTICATING = "authenticating"  #: AUTH sent; waiting for AUTHORIZED
    AUTHORIZED = "authorized"  #: channels may be used
    CLOSED = "closed"  #: the transport ended or the connection was closed
    ERROR = "error"  #: a protocol error happened; the connection is unusable


class ChannelState(enum.Enum):
    """Where one FEED channel is in its life."""

    PENDING = "pending"  #: created, CHANNEL_REQUEST not yet sent (waiting for authorization)
    REQUESTED = "requested"  #: CHANNEL_REQUEST sent
    OPENED = "opened"  #: CHANNEL_OPENED received
    CLOSED = "closed"  #: cancelled by us or closed by the server


# --- events the connection reports ---


@attrs.frozen
class SetupReceived:
    """The server's SETUP arrived."""

    version: str
    keepalive_timeout: float | None


@attrs.frozen
class Authorized:
    """The server authorized the connection: channels may now be used."""

    user_id: str | None


@attrs.frozen
class AuthRejected:
    """The server refused the token (AUTH_STATE UNAUTHORIZED after AUTH, or while authorized)."""

    had_token: bool


@attrs.frozen
class ChannelOpened:
    """A FEED channel opened; its subscriptions have been (re)sent."""

    channel: int
    parameters: dict[str, Any]


@attrs.frozen
class ChannelClosed:
    """A channel closed. ``requested`` is True when this answers our own CHANNEL_CANCEL."""

    channel: int
    requested: bool


@attrs.frozen
class ConfigChanged:
    """FEED_CONFIG changed the effective configuration of a channel."""

    channel: int
    config: FeedConfig


@attrs.frozen
class FeedEvents:
    """Events of one type that arrived on a channel, in arrival order."""

    channel: int
    event_type: type[Event]
    events: list[Event]
    symbols: list[str]
    """``events``' symbols, in the same order."""


@attrs.frozen
class DataSkipped:
    """Data from the server could not be decoded and was skipped (the connection goes on).

    Attributes:
        channel: the channel the data arrived on (``None`` when the frame was not readable
            enough to say).
        event_type: the dxLink event type of the skipped data, when known.
        events: how many events (COMPACT rows, FULL objects) were skipped, when known, else 0.
        reason: what was wrong, with a bounded excerpt of the bad value.
    """

    channel: int | None
    event_type: str | None
    events: int
    reason: str


@attrs.frozen
class ServerErrorReceived:
    """The server sent ERROR (``channel`` 0: about the whole connection)."""

    channel: int
    code: str
    message: str


ConnectionEvent = (
    SetupReceived
    | Authorized
    | AuthRejected
    | ChannelOpened
    | ChannelClosed
    | ConfigChanged
    | FeedEvents
    | DataSkipped
    | ServerErrorReceived
)


@attrs.frozen
class FeedConfig:
    """The effective configuration of a FEED channel (the merge of every FEED_CONFIG)."""

    data_format: str = "FULL"
    aggregation_period: float = math.nan
    event_fields: dict[str, tuple[str, ...]] = attrs.field(factory=dict)


@attrs.define(eq=False)
class FeedChannel:
    """One FEED channel: its state, what it asked for, what the server said, what it holds."""

    id: int
    contract: str
    state: ChannelState = ChannelState.PENDING
    accept_data_format: str = "COMPACT"
    accept_aggregation_period: float | None = None
    requested_fields: dict[str, tuple[str, ...]] = attrs.field(factory=dict)
    config: FeedConfig = attrs.field(factory=FeedConfig)
    subscriptions: dict[tuple[str, str, str | None], m.SubscriptionEntry] = attrs.field(
        factory=dict
    )
    decoders: dict[str, tuple[RowDecoder, int, int]] = attrs.field(factory=dict)
    """Per event type: the row decoder, the eventSymbol column and the row width."""

    def layout(self, event_type: str) -> tuple[str, ...] | None:
        """The COMPACT field order for ``event_type``: the server's, else what we asked for."""
        return self.config.event_fields.get(event_type) or self.requested_fields.get(event_type)


@attrs.define
class Statistics:
    """Counters a connection keeps; every skip it makes is counted here and logged."""

    messages_received: int = 0
    events_received: int = 0
    unknown_messages: int = 0
    skipped_unknown_channel: int = 0
    skipped_unknown_event_type: int = 0
    malformed_messages: int = 0
    """Frames that were not valid JSON messages, or whose data was (partly) undecodable."""
    events_skipped: int = 0
    """COMPACT rows and FULL objects skipped because they could not be decoded."""


def chunk_subscription(
    channel: int,
    *,
    add: Sequence[m.SubscriptionEntry] = (),
    remove: Sequence[m.SubscriptionEntry] = (),
    reset: bool = False,
    budget: int = DEFAULT_SUBSCRIPTION_BUDGET,
) -> list[m.FeedSubscription]:
    """Split a subscription change into FEED_SUBSCRIPTION messages each under ``budget`` bytes.

    ``reset`` goes on the first message only; removes go before adds, as the protocol orders
    them within a message. An empty change with ``reset`` gives one reset-only message.
    """
    envelope = len(m.encode(m.FeedSubscription(channel, add=[], remove=[], reset=reset or None)))
    out: list[m.FeedSubscription] = []
    cur_add: list[m.SubscriptionEntry] = []
    cur_remove: list[m.SubscriptionEntry] = []
    size = envelope
    first = True

    def flush() -> None:
        nonlocal cur_add, cur_remove, size, first
        out.append(
            m.FeedSubscription(
                channel,
                add=cur_add or None,
                remove=cur_remove or None,
                reset=True if (reset and first) else None,
            )
        )
        first = False
        cur_add, cur_remove, size = [], [], envelope

    tagged = [(True, e) for e in remove] + [(False, e) for e in add]
    for is_remove, entry in tagged:
        item = len(orjson.dumps(m.to_wire_entry(entry))) + 1
        if envelope + item > budget:
            raise LocalProtocolError(
                f"subscription entry {entry.symbol!r} alone exceeds the {budget}-byte budget"
            )
        if size + item > budget:
            flush()
        (cur_remove if is_remove else cur_add).append(entry)
        size += item
    if cur_add or cur_remove or (reset and first):
        flush()
    return out


class ClientConnection:
    """The client side of one DXLink connection, as a pure state machine.

    Args:
        token: the AUTH token, or ``None`` for servers that need none.
        keepalive_timeout: seconds of server silence after which this client calls the link
            dead; advertised to the server in SETUP.
        accept_keepalive_timeout: the keepalive timeout this client asks the server to use.
        keepalive_interval: the longest this client stays silent; capped at half the server's
            keepalive timeout once that is known.
        subscription_budget: the byte budget for each FEED_SUBSCRIPTION frame.
        version: the SETUP version string.
    """

    def __init__(
        self,
        token: str | None = None,
        *,
        keepalive_timeout: float = 60.0,
        accept_keepalive_timeout: float = 60.0,
        keepalive_interval: float = 30.0,
        subscription_budget: int = DEFAULT_SUBSCRIPTION_BUDGET,
        version: str = PROTOCOL_VERSION,
    ) -> None:
        self._token = token
        self.keepalive_timeout = keepalive_timeout
        self.accept_keepalive_timeout = accept_keepalive_timeout
        self._keepalive_interval = keepalive_interval
        self.subscription_budget = subscription_budget
        self.version = version
        self.state = ConnectionState.IDLE
        self.server_version: str | None = None
        self.server_keepalive_timeout: float | None = None
        self.user_id: str | None = None
        self.channels: dict[int, FeedChannel] = {}
        self.statistics = Statistics()
        self._next_channel = 1
        self._outbox: list[str] = []
        self._got_server_setup = False
        self._auth_sent = False
        self._last_sent = 0.0
        self._last_received = 0.0
        self._now = 0.0  # the time of the frame being handled (for rate-limited logs)
        self._skip_log = LogLimiter(log)

    def __repr__(self) -> str:
        return (
            f"<ClientConnection state={self.state.value} channels={len(self.channels)}"
            f" token={'set' if self._token else 'none'}>"
        )

    # --- driving the handshake ---

    def start(self, now: float) -> None:
        """Queue SETUP; the clock starts now for both keepalive directions."""
        self._require(ConnectionState.IDLE, "start")
        self._queue(
            m.Setup(
                self.version,
                keepalive_timeout=self.keepalive_timeout,
                accept_keepalive_timeout=self.accept_keepalive_timeout,
            )
        )
        self.state = ConnectionState.SETUP
        self._last_sent = self._last_received = now

    def set_token(self, token: str | None) -> None:
        """Replace the token used by the next AUTH (for a refreshed token)."""
        self._token = token

    def reauthenticate(self, token: str) -> None:
        """Send AUTH again on a live connection with a fresh token."""
        if self.state not in (ConnectionState.AUTHORIZED, ConnectionState.AUTHENTICATING):
            raise LocalProtocolError(f"cannot re-authenticate in state {self.state.value}")
        self._token = token
        self._queue(m.Auth(token))
        self._auth_sent = True

    @property
    def authorized(self) -> bool:
        """Whether channels may be used now."""
        return self.state is ConnectionState.AUTHORIZED

    # --- channels and subscriptions ---

    def open_channel(
        self,
        *,
        contract: str = "AUTO",
        accept_data_format: str = "COMPACT",
        accept_aggregation_period: float | None = None,
    ) -> int:
        """Create a FEED channel and return its (odd) id; it is requested once authorized."""
        self._require_usable("open a channel")
        cid = self._next_channel
        self._next_channel += 2
        channel = FeedChannel(
            cid,
            contract,
            accept_data_format=accept_data_format,
            accept_aggregation_period=accept_aggregation_period,
        )
        self.channels[cid] = channel
        if self.authorized:
            self._request(channel)
        return cid

    def close_channel(self, channel_id: int) -> None:
        """Cancel a channel; its subscriptions are forgotten."""
        channel = self._channel(channel_id)
        if channel.state in (ChannelState.REQUESTED, ChannelState.OPENED):
            self._queue(m.ChannelCancel(channel_id))
        else:
            del self.channels[channel_id]  # never requested: no CHANNEL_CLOSED will come
        channel.state = ChannelState.CLOSED
        channel.subscriptions.clear()

    def subscribe(
        self,
        channel_id: int,
        entries: Iterable[m.SubscriptionEntry],
        *,
        fields: dict[str, Sequence[str]] | None = None,
    ) -> None:
        """Add subscriptions to a channel (sent now if it is open, else when it opens).

        Re-adding an identity replaces it (a new ``from_time`` counts). ``fields`` overrides the
        dxLink field list requested for an event type; by default a type requests every field
        its class knows. FEED_SETUP for a type the channel has not used yet goes out first.
        """
        channel = self._live_channel(channel_id)
        entries = list(entries)
        for entry in entries:
            try:
                event_class(entry.type)  # unknown types are refused before any change
            except KeyError as exc:
                raise LocalProtocolError(f"cannot subscribe: {exc.args[0]}") from None
        new = []
        for entry in entries:
            if channel.subscriptions.get(entry.key) != entry:
                channel.subscriptions[entry.key] = entry
                new.append(entry)
        if not new:
            return
        new_types = {e.type for e in new} - channel.requested_fields.keys()
        for name in sorted(new_types):
            wanted = (fields or {}).get(name)
            if wanted and "eventSymbol" not in wanted:
                raise LocalProtocolError(f"the field list for {name} must include eventSymbol")
            channel.requested_fields[name] = (
                tuple(wanted) if wanted else event_class(name).wire_fields()
            )
        if channel.state is ChannelState.OPENED:
            if new_types:
                self._feed_setup(channel, sorted(new_types))
            self._send_subscription(channel, add=new)

    def unsubscribe(self, channel_id: int, entries: Iterable[m.SubscriptionEntry]) -> None:
        """Remove subscriptions from a channel (identities it does not hold are ignored)."""
        channel = self._live_channel(channel_id)
        gone = [channel.subscriptions.pop(e.key) for e in entries if e.key in channel.subscriptions]
        if gone and channel.state is ChannelState.OPENED:
            self._send_subscription(channel, remove=gone)

    # --- input ---

    def receive_message(self, frame: str | bytes, now: float) -> list[ConnectionEvent]:
        """Handle one frame from the server; return what happened.

        Raises:
            RemoteProtocolError: the frame breaks the protocol (the connection is then unusable).
        """
        if self.state in (ConnectionState.CLOSED, ConnectionState.ERROR):
            raise LocalProtocolError(f"connection is {self.state.value}; cannot receive")
        self._last_received = now
        self._now = now
        self.statistics.messages_received += 1
        try:
            obj = m.parse_json(frame)
        except RemoteProtocolError as exc:
            self.statistics.malformed_messages += 1
            return [self._skipped(None, None, 0, str(exc))]
        try:
            if obj["type"] == "FEED_DATA":
                # The hot path skips building a FeedData message; the table still says in
                # which states FEED_DATA is allowed.
                if (self.state, m.FeedData) not in _HANDLERS:
                    raise RemoteProtocolError(f"unexpected FEED_DATA in state {self.state.value}")
                data = obj.get("data")
                if data.__class__ is not list:
                    self.statistics.malformed_messages += 1
                    reason = f"FEED_DATA without a 'data' array: {describe(data)}"
                    return [self._skipped(obj["channel"], None, 0, reason)]
                return self._on_feed_data(obj["channel"], data)
            return self._dispatch(m.from_wire(obj))
        except RemoteProtocolError:
            self.state = ConnectionState.ERROR
            raise

    def connection_closed(self) -> None:
        """The transport ended (end of stream is an input, not an error)."""
        self.state = ConnectionState.CLOSED
        for channel in self.channels.values():
            channel.state = ChannelState.CLOSED

    # --- output and time ---

    def data_to_send(self, now: float) -> list[str]:
        """Take the frames waiting to be sent (and note that something was sent now)."""
        out, self._outbox = self._outbox, []
        if out:
            self._last_sent = now
        return out

    @property
    def wants_to_send(self) -> bool:
        """Whether frames are waiting in the outbox."""
        return bool(self._outbox)

    @property
    def keepalive_interval(self) -> float:
        """The longest this side stays silent: the configured interval, at most half the
        server's keepalive timeout."""
        if self.server_keepalive_timeout:
            return min(self._keepalive_interval, self.server_keepalive_timeout / 2)
        return self._keepalive_interval

    def next_deadline(self) -> float:
        """When :meth:`handle_timers` next has something to do."""
        return min(
            self._last_sent + self.keepalive_interval,
            self._last_received + self.keepalive_timeout,
        )

    def handle_timers(self, now: float) -> None:
        """Queue KEEPALIVE if this side has been quiet; fail if the server has.

        Raises:
            KeepaliveTimeoutError: nothing arrived for longer than ``keepalive_timeout``.
        """
        if self.state in (ConnectionState.CLOSED, ConnectionState.ERROR, ConnectionState.IDLE):
            return
        silent = now - self._last_received
        if silent >= self.keepalive_timeout:
            self.state = ConnectionState.ERROR
            raise KeepaliveTimeoutError(
                f"no message from the server for {silent:.1f} s"
                f" (keepalive timeout {self.keepalive_timeout:g} s)"
            )
        if now - self._last_sent >= self.keepalive_interval and not self._outbox:
            self._queue(m.Keepalive())

    # --- internals ---

    def _require(self, state: ConnectionState, what: str) -> None:
        if self.state is not state:
            raise LocalProtocolError(f"cannot {what} in state {self.state.value}")

    def _require_usable(self, what: str) -> None:
        if self.state in (ConnectionState.CLOSED, ConnectionState.ERROR):
            raise LocalProtocolError(f"cannot {what}: connection is {self.state.value}")

    def _channel(self, channel_id: int) -> FeedChannel:
        try:
            return self.channels[channel_id]
        except KeyError:
            raise LocalProtocolError(f"no channel {channel_id}") from None

    def _live_channel(self, channel_id: int) -> FeedChannel:
        self._require_usable("use a channel")
        channel = self._channel(channel_id)
        if channel.state is ChannelState.CLOSED:
            raise LocalProtocolError(f"channel {channel_id} is closed")
        return channel

    def _queue(self, message: m.Message) -> None:
        self._outbox.append(m.encode(message))

    def _request(self, channel: FeedChannel) -> None:
        self._queue(m.ChannelRequest(channel.id, "FEED", {"contract": channel.contract}))
        channel.state = ChannelState.REQUESTED

    def _feed_setup(self, channel: FeedChannel, types: Sequence[str]) -> None:
        self._queue(
            m.FeedSetup(
                channel.id,
                accept_aggregation_period=channel.accept_aggregation_period,
                accept_data_format=channel.accept_data_format,
                accept_event_fields={t: list(channel.requested_fields[t]) for t in types},
            )
        )

    def _send_subscription(
        self,
        channel: FeedChannel,
        *,
        add: Sequence[m.SubscriptionEntry] = (),
        remove: Sequence[m.SubscriptionEntry] = (),
        reset: bool = False,
    ) -> None:
        for message in chunk_subscription(
            channel.id, add=add, remove=remove, reset=reset, budget=self.subscription_budget
        ):
            self._queue(message)

    def _dispatch(self, message: m.Message) -> list[ConnectionEvent]:
        handler = _HANDLERS.get((self.state, type(message)))
        if handler is None:
            if isinstance(message, m.UnknownMessage):
                self.statistics.unknown_messages += 1
                log.warning(
                    "skipping unknown %s message on channel %d", message.type, message.channel
                )
                return []
            raise RemoteProtocolError(
                f"unexpected {type(message).__name__} message in state {self.state.value}"
            )
        return handler(self, message)

    def _on_setup(self, message: m.Setup) -> list[ConnectionEvent]:
        self.server_version = message.version
        timeout = message.keepalive_timeout
        if timeout is not None:
            sane = sane_keepalive_timeout(timeout)
            if sane != timeout:
                log.warning(
                    "the server announced a keepalive timeout of %s s; using %g s instead",
                    describe(timeout),
                    sane,
                )
                timeout = sane
        self.server_keepalive_timeout = timeout
        self._got_server_setup = True
        return [SetupReceived(message.version, timeout)]

    def _on_keepalive(self, message: m.Keepalive) -> list[ConnectionEvent]:
        return []

    def _on_auth_state(self, message: m.AuthState) -> list[ConnectionEvent]:
        if message.state == "AUTHORIZED":
            was = self.state
            self.state = ConnectionState.AUTHORIZED
            self.user_id = message.user_id
            if was is ConnectionState.AUTHORIZED:
                return []  # a refreshed token was accepted
            for channel in self.channels.values():
                if channel.state is ChannelState.PENDING:
                    self._request(channel)
            return [Authorized(message.user_id)]
        if message.state != "UNAUTHORIZED":
            raise RemoteProtocolError(f"unknown AUTH_STATE state {message.state!r}")
        if self.state is ConnectionState.SETUP and not self._auth_sent:
            if self._token is None:
                return [AuthRejected(had_token=False)]
            self._queue(m.Auth(self._token))
            self._auth_sent = True
            self.state = ConnectionState.AUTHENTICATING
            return []
        # A rejection (after AUTH, or of a live connection's token): no longer authorized; a
        # fresh token may be offered with reauthenticate().
        self.state = ConnectionState.AUTHENTICATING
        return [AuthRejected(had_token=self._token is not None)]

    def _on_error(self, message: m.Error) -> list[ConnectionEvent]:
        return [ServerErrorReceived(message.channel, message.error, message.message)]

    def _on_channel_opened(self, message: m.ChannelOpened) -> list[ConnectionEvent]:
        channel = self.channels.get(message.channel)
        if channel is not None and channel.state is ChannelState.CLOSED:
            return []  # we cancelled it before this crossed on the wire; CHANNEL_CLOSED follows
        if channel is None or channel.state is not ChannelState.REQUESTED:
            raise RemoteProtocolError(f"CHANNEL_OPENED for channel {message.channel} not requested")
        if message.service != "FEED":
            raise RemoteProtocolError(f"channel {message.channel} opened as {message.service!r}")
        channel.state = ChannelState.OPENED
        if channel.requested_fields:
            self._feed_setup(channel, sorted(channel.requested_fields))
        if channel.subscriptions:
            self._send_subscription(channel, add=list(channel.subscriptions.values()), reset=True)
        return [ChannelOpened(message.channel, message.parameters)]

    def _on_channel_closed(self, message: m.ChannelClosed) -> list[ConnectionEvent]:
        channel = self.channels.get(message.channel)
        if channel is None:
            raise RemoteProtocolError(f"CHANNEL_CLOSED for unknown channel {message.channel}")
        requested = channel.state is ChannelState.CLOSED
        channel.state = ChannelState.CLOSED
        channel.decoders.clear()
        if requested:
            del self.channels[message.channel]
        return [ChannelClosed(message.channel, requested)]

    def _on_feed_config(self, message: m.FeedConfig) -> list[ConnectionEvent]:
        channel = self.channels.get(message.channel)
        if channel is None or channel.state is ChannelState.CLOSED:
            self.statistics.skipped_unknown_channel += 1
            log.warning("skipping FEED_CONFIG for channel %d, which is not open", message.channel)
            return []
        old = channel.config
        fields = dict(old.event_fields)
        for name, names in (message.event_fields or {}).items():
            fields[name] = tuple(names)
            channel.decoders.pop(name, None)
        fmt = message.data_format if message.data_format is not None else old.data_format
        if fmt not in ("FULL", "COMPACT"):
            raise RemoteProtocolError(f"unknown data format {fmt!r} on channel {channel.id}")
        period = old.aggregation_period
        if message.aggregation_period is not None:
            period = message.aggregation_period
        channel.config = FeedConfig(fmt, period, fields)
        return [ConfigChanged(channel.id, channel.config)]

    def _on_feed_data(self, channel_id: int, data: list[Any]) -> list[ConnectionEvent]:
        channel = self.channels.get(channel_id)
        if channel is None or channel.state is not ChannelState.OPENED:
            self.statistics.skipped_unknown_channel += 1
            self._skip_log.warning(
                self._now, "skipping FEED_DATA for channel %d, which is not open", channel_id
            )
            return []
        if not data:
            return []
        if data[0].__class__ is str:
            return self._decode_compact(channel, data)
        return self._decode_full(channel, data)

    def _skipped(
        self, channel: int | None, event_type: str | None, events: int, reason: str
    ) -> DataSkipped:
        """Count, log (rate-limited) and report data that could not be decoded."""
        self.statistics.events_skipped += events
        where = f" on channel {channel}" if channel is not None else ""
        self._skip_log.warning(self._now, "skipping malformed data%s: %s", where, reason)
        return DataSkipped(channel, event_type, events, reason)

    def _decode_compact(self, channel: FeedChannel, data: list[Any]) -> list[ConnectionEvent]:
        out: list[ConnectionEvent] = []
        malformed = False
        for i in range(0, len(data), 2):
            name = data[i]
            values = data[i + 1] if i + 1 < len(data) else None
            if name.__class__ is not str or values.__class__ is not list:
                # The pairs are out of step from here on: the rest of the frame is unreadable.
                malformed = True
                out.append(
                    self._skipped(
                        channel.id,
                        name if name.__class__ is str else None,
                        0,
                        f"COMPACT FEED_DATA item {i} is not a type name followed by a value"
                        f" array: {describe(data[i : i + 2])}",
                    )
                )
                break
            plan = channel.decoders.get(name)
            if plan is None:
                try:
                    plan = self._decoder(channel, name)
                except RemoteProtocolError as exc:  # an unusable field list
                    malformed = True
                    width = len(channel.layout(name) or ()) or 1
                    rows = -(-len(values) // width)
                    out.append(self._skipped(channel.id, name, rows, str(exc)))
                    continue
                if plan is None:
                    continue
            decoder, symbol_column, width = plan
            try:
                events = decoder(values)
            except RemoteProtocolError as exc:
                malformed = True
                events = self._salvage(channel, name, plan, values, str(exc), out)
                symbols = [e.event_symbol for e in events]
            else:
                # The decoder checked every symbol, so the column is the events' symbols.
                symbols = values[symbol_column::width]
            if events:
                self.statistics.events_received += len(events)
                out.append(FeedEvents(channel.id, type(events[0]), events, symbols))
        if malformed:
            self.statistics.malformed_messages += 1
        return out

    def _salvage(
        self,
        channel: FeedChannel,
        name: str,
        plan: tuple[RowDecoder, int, int],
        values: list[Any],
        reason: str,
        out: list[ConnectionEvent],
    ) -> list[Event]:
        """The rows of a value array that decode, one at a time; the others are skipped.

        A ragged array (not a whole number of rows) cannot be split into rows, so all of it
        is skipped. The skip is reported (in ``out``) before the rows that decoded.
        """
        decoder, _, width = plan
        rows = len(values) // width
        if len(values) % width:
            out.append(self._skipped(channel.id, name, -(-len(values) // width), reason))
            return []
        events: list[Event] = []
        bad = 0
        for start in range(0, rows * width, width):
            try:
                events.extend(decoder(values[start : start + width]))
            except RemoteProtocolError:
                bad += 1
        out.append(self._skipped(channel.id, name, bad, f"{bad} of {rows} rows: {reason}"))
        return events

    def _decoder(self, channel: FeedChannel, name: str) -> tuple[RowDecoder, int, int] | None:
        try:
            cls = event_class(name)
        except KeyError:
            self.statistics.skipped_unknown_event_type += 1
            self._skip_log.warning(
                self._now, "skipping FEED_DATA of unknown event type %s", describe(name)
            )
            return None
        layout = channel.layout(name)
        if layout is None:
            self.statistics.skipped_unknown_event_type += 1
            self._skip_log.warning(
                self._now,
                "skipping COMPACT %s data on channel %d: no field list was requested or reported",
                name,
                channel.id,
            )
            return None
        plan = (compile_row_decoder(cls, layout), layout.index("eventSymbol"), len(layout))
        channel.decoders[name] = plan
        return plan

    def _decode_full(self, channel: FeedChannel, data: list[Any]) -> list[ConnectionEvent]:
        out: list[ConnectionEvent] = []  # one group per run of same-type events, in order
        last: FeedEvents | None = None
        malformed = False
        for obj in data:
            if obj.__class__ is not dict:
                reason = f"FULL FEED_DATA holds a non-object {describe(obj)}"
                out.append(self._skipped(channel.id, None, 1, reason))
                malformed, last = True, None
                continue
            name = obj.get("eventType")
            if name.__class__ is not str:
                reason = f"FULL event without an eventType: {describe(obj)}"
                out.append(self._skipped(channel.id, None, 1, reason))
                malformed, last = True, None
                continue
            try:
                cls = event_class(name)
            except KeyError:
                self.statistics.skipped_unknown_event_type += 1
                self._skip_log.warning(
                    self._now, "skipping FEED_DATA of unknown event type %s", describe(name)
                )
                continue
            try:
                event = decode_full(cls, obj)
            except RemoteProtocolError as exc:
                out.append(self._skipped(channel.id, name, 1, str(exc)))
                malformed, last = True, None
                continue
            if last is not None and last.event_type is cls:
                last.events.append(event)
                last.symbols.append(event.event_symbol)
            else:
                last = FeedEvents(channel.id, cls, [event], [event.event_symbol])
                out.append(last)
            self.statistics.events_received += 1
        if malformed:
            self.statistics.malformed_messages += 1
        return out


_S = ConnectionState
# The transition table: (state, message class) -> handler. A missing entry is a protocol error.
_HANDLERS: dict[
    tuple[ConnectionState, type], Callable[[ClientConnection, Any], list[ConnectionEvent]]
] = {}
for _state in (_S.SETUP, _S.AUTHENTICATING, _S.AUTHORIZED):
    _HANDLERS[_state, m.Setup] = ClientConnection._on_setup
    _HANDLERS[_state, m.Keepalive] = ClientConnection._on_keepalive
    _HANDLERS[_state, m.AuthState] = ClientConnection._on_auth_state
    _HANDLERS[_state, m.Error] = ClientConnection._on_error
for _message, _handler in (
    (m.FeedData, lambda conn, msg: conn._on_feed_data(msg.channel, msg.data)),
    (m.ChannelOpened, ClientConnection._on_channel_opened),
    (m.ChannelClosed, ClientConnection._on_channel_closed),
    (m.FeedConfig, ClientConnection._on_feed_config),
):
    _HANDLERS[_S.AUTHORIZED, _message] = _handler
del _state, _message, _handler
