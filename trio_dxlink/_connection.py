"""The sans-I/O DXLink client connection.

:class:`ClientConnection` is a pure state machine: it is handed the text of each frame the server
sent (:meth:`~ClientConnection.receive_message`) and the current time, and it returns what
happened as a list of events; what it wants sent waits in an outbox
(:meth:`~ClientConnection.data_to_send`). It owns no socket, no clock and no task, so the same
code serves any transport, and tests drive it synchronously.

The handshake follows the strict order tastytrade requires::

    SETUP ─► (server SETUP, AUTH_STATE UNAUTHORIZED) ─► AUTH ─► (AUTH_STATE AUTHORIZED) ─► channels

Channels have odd ids; one requested before authorization waits in the outbox's queue. Once a
FEED channel's ``CHANNEL_OPENED`` arrives the connection sends ``FEED_SETUP`` for the types it
needs, then every subscription it holds (a set keyed by (type, symbol, source)) in chunks under a
byte budget. A DOM channel sends DOM_SETUP each time it opens, merges DOM_CONFIG and reads each
DOM_SNAPSHOT into a book (a bad one is skipped like bad data).

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

Where things live: states, the table (``CLIENT_ACCEPTS``) and keepalive rules in ``_protocol.py``
(shared with the server); events in ``_client_events.py``; FEED channels, FEED_DATA decoding and
chunking in ``_feed_data.py``; DOM channels in ``_dom_channel.py``. Their names are re-exported.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from . import _messages as m
from ._client_events import (
    Authorized,
    AuthRejected,
    ChannelClosed,
    ChannelOpened,
    ConfigChanged,
    ConnectionEvent,
    DataSkipped,
    DomConfigChanged,
    DomSnapshotReceived,
    FeedConfig,
    FeedEvents,
    ServerErrorReceived,
    SetupReceived,
)
from ._dom_channel import DomChannel, merge_config, read_snapshot
from ._exceptions import KeepaliveTimeoutError, LocalProtocolError, RemoteProtocolError
from ._feed_data import (
    DEFAULT_SUBSCRIPTION_BUDGET,
    ChannelState,
    FeedChannel,
    FeedDataDecoder,
    Statistics,
    chunk_subscription,
)
from ._protocol import (
    CLIENT_ACCEPTS,
    KEEPALIVE_TIMEOUT_RANGE,
    ConnectionState,
    KeepaliveTimers,
    keepalive_send_interval,
    sane_keepalive_timeout,
)
from ._util import describe
from .events import event_class

__all__ = [
    "Authorized",
    "AuthRejected",
    "ChannelClosed",
    "ChannelOpened",
    "ClientConnection",
    "ConfigChanged",
    "ConnectionEvent",
    "ConnectionState",
    "DEFAULT_SUBSCRIPTION_BUDGET",
    "DataSkipped",
    "DomChannel",
    "DomConfigChanged",
    "DomSnapshotReceived",
    "FeedChannel",
    "FeedConfig",
    "FeedEvents",
    "ServerErrorReceived",
    "SetupReceived",
    "KEEPALIVE_TIMEOUT_RANGE",
    "ChannelState",
    "Statistics",
    "chunk_subscription",
    "sane_keepalive_timeout",
]

log = logging.getLogger("trio_dxlink")

PROTOCOL_VERSION = "0.1-DXF-JS/0.3.0"
"""What SETUP announces: the version string tastytrade's own web platform sends."""


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
        self.dom_channels: dict[int, DomChannel] = {}
        self.statistics = Statistics()
        self._next_channel = 1
        self._outbox: list[str] = []
        self._got_server_setup = False
        self._auth_sent = False
        self._timers = KeepaliveTimers()
        self._feed = FeedDataDecoder(self.statistics)

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
        self._timers.start(now)

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

    def open_dom_channel(
        self,
        symbol: str,
        sources: Sequence[str],
        *,
        depth: int,
        aggregation_period: float | None = None,
    ) -> int:
        """Create a DOM channel for ``symbol``'s book from ``sources``; return its (odd) id. It is
        requested once authorized, and sends DOM_SETUP (asking for ``depth`` levels a side)
        each time it opens."""
        self._require_usable("open a channel")
        cid = self._next_channel
        self._next_channel += 2
        channel = DomChannel(cid, symbol, tuple(sources), depth, aggregation_period)
        self.dom_channels[cid] = channel
        if self.authorized:
            self._request(channel)
        return cid

    def close_channel(self, channel_id: int) -> None:
        """Cancel a channel (FEED or DOM); its subscriptions are forgotten."""
        channels: dict[int, Any] = self.dom_channels
        if channel_id not in channels:
            channels = self.channels
            self._channel(channel_id).subscriptions.clear()
        channel = channels[channel_id]
        if channel.state in (ChannelState.REQUESTED, ChannelState.OPENED):
            self._queue(m.ChannelCancel(channel_id))
        else:
            del channels[channel_id]  # never requested: no CHANNEL_CLOSED will come
        channel.state = ChannelState.CLOSED

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
        self._timers.last_received = now
        self.statistics.messages_received += 1
        try:
            obj = m.parse_json(frame)
        except RemoteProtocolError as exc:
            self.statistics.malformed_messages += 1
            return [self._feed.skipped(None, None, 0, str(exc), now)]
        try:
            if obj["type"] == "FEED_DATA":
                # The hot path skips building a FeedData message; the table still says in
                # which states FEED_DATA is allowed.
                if m.FeedData not in CLIENT_ACCEPTS.get(self.state, ()):
                    raise RemoteProtocolError(f"unexpected FEED_DATA in state {self.state.value}")
                channel_id = obj["channel"]
                channel = self.channels.get(channel_id)
                return self._feed.decode(channel, channel_id, obj.get("data"), now)
            return self._dispatch(m.from_wire(obj))
        except RemoteProtocolError:
            self.state = ConnectionState.ERROR
            raise

    def connection_closed(self) -> None:
        """The transport ended (end of stream is an input, not an error)."""
        self.state = ConnectionState.CLOSED
        for channel in self._all_channels():
            channel.state = ChannelState.CLOSED

    # --- output and time ---

    def data_to_send(self, now: float) -> list[str]:
        """Take the frames waiting to be sent (and note that something was sent now)."""
        out, self._outbox = self._outbox, []
        if out:
            self._timers.last_sent = now
        return out

    @property
    def wants_to_send(self) -> bool:
        """Whether frames are waiting in the outbox."""
        return bool(self._outbox)

    @property
    def keepalive_interval(self) -> float:
        """The longest this side stays silent: the configured interval, at most half the
        server's keepalive timeout."""
        return keepalive_send_interval(self.server_keepalive_timeout, self._keepalive_interval)

    def next_deadline(self) -> float:
        """When :meth:`handle_timers` next has something to do."""
        return min(
            self._timers.send_deadline(self.keepalive_interval),
            self._timers.receive_deadline(self.keepalive_timeout),
        )

    def handle_timers(self, now: float) -> None:
        """Queue KEEPALIVE if this side has been quiet; fail if the server has.

        Raises:
            KeepaliveTimeoutError: nothing arrived for longer than ``keepalive_timeout``.
        """
        if self.state in (ConnectionState.CLOSED, ConnectionState.ERROR, ConnectionState.IDLE):
            return
        silent = self._timers.silence(now)
        if self._timers.peer_expired(now, self.keepalive_timeout):
            self.state = ConnectionState.ERROR
            raise KeepaliveTimeoutError(
                f"no message from the server for {silent:.1f} s"
                f" (keepalive timeout {self.keepalive_timeout:g} s)"
            )
        if self._timers.send_due(now, self.keepalive_interval) and not self._outbox:
            self._queue(m.Keepalive())

    # --- internals ---

    def _all_channels(self) -> list[FeedChannel | DomChannel]:
        return [*self.channels.values(), *self.dom_channels.values()]

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

    def _request(self, channel: FeedChannel | DomChannel) -> None:
        if isinstance(channel, DomChannel):
            self._queue(channel.request())
        else:
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
        handler = _HANDLERS.get(type(message))
        if handler is None or type(message) not in CLIENT_ACCEPTS.get(self.state, ()):
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
            for channel in self._all_channels():
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
        dom = self.dom_channels.get(message.channel)
        if dom is not None and dom.state is ChannelState.REQUESTED:
            if message.service != "DOM":
                raise RemoteProtocolError(f"channel {dom.id} opened as {message.service!r}")
            dom.state = ChannelState.OPENED
            self._queue(dom.setup())  # every time it opens, as dxFeed's JS client does
            return [ChannelOpened(dom.id, message.parameters)]
        channel = self.channels.get(message.channel) or dom
        if channel is not None and channel.state is ChannelState.CLOSED:
            return []  # we cancelled it before this crossed on the wire; CHANNEL_CLOSED follows
        if not isinstance(channel, FeedChannel) or channel.state is not ChannelState.REQUESTED:
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
        channels: dict[int, Any] = self.dom_channels
        channels = channels if message.channel in channels else self.channels
        channel = channels.get(message.channel)
        if channel is None:
            raise RemoteProtocolError(f"CHANNEL_CLOSED for unknown channel {message.channel}")
        requested = channel.state is ChannelState.CLOSED
        channel.state = ChannelState.CLOSED
        if isinstance(channel, FeedChannel):
            channel.decoders.clear()
        if requested:
            del channels[message.channel]
        return [ChannelClosed(message.channel, requested)]

    def _open_dom(self, channel_id: int, what: str) -> DomChannel | None:
        channel = self.dom_channels.get(channel_id)
        if channel is not None and channel.state is ChannelState.OPENED:
            return channel
        self.statistics.skipped_unknown_channel += 1
        log.warning("skipping %s for channel %d, not an open DOM channel", what, channel_id)
        return None

    def _on_dom_config(self, message: m.DomConfig) -> list[ConnectionEvent]:
        channel = self._open_dom(message.channel, "DOM_CONFIG")
        if channel is None:
            return []
        channel.config = merge_config(channel.config, message)
        return [DomConfigChanged(channel.id, channel.config)]

    def _on_dom_snapshot(self, message: m.DomSnapshot) -> list[ConnectionEvent]:
        channel = self._open_dom(message.channel, "DOM_SNAPSHOT")
        if channel is None:
            return []
        try:
            snapshot = read_snapshot(channel, message)
        except ValueError as exc:
            self.statistics.malformed_messages += 1
            return [self._feed.skipped(channel.id, "DOM_SNAPSHOT", 1, str(exc))]
        return [DomSnapshotReceived(channel.id, snapshot)]

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


# What each server message does to a client; whether it is allowed now is CLIENT_ACCEPTS' call.
_HANDLERS: dict[type, Callable[[ClientConnection, Any], list[ConnectionEvent]]] = {
    m.Setup: ClientConnection._on_setup,
    m.Keepalive: ClientConnection._on_keepalive,
    m.AuthState: ClientConnection._on_auth_state,
    m.Error: ClientConnection._on_error,
    m.ChannelOpened: ClientConnection._on_channel_opened,
    m.ChannelClosed: ClientConnection._on_channel_closed,
    m.FeedConfig: ClientConnection._on_feed_config,
    m.DomConfig: ClientConnection._on_dom_config,
    m.DomSnapshot: ClientConnection._on_dom_snapshot,
}
# FEED_DATA never comes this way: receive_message decodes it on its hot path (the table still
# says in which states it is allowed).
