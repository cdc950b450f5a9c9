"""The DXLink rules both ends of a connection share, whatever their role.

Everything here is pure: no socket, no clock, no task. The client core
(:class:`~trio_dxlink._connection.ClientConnection`) and the local server's core
(:class:`~trio_dxlink.testing._server_core.ServerProtocol`) both build on it, so each rule has
one home:

* :class:`ConnectionState`, the states a connection goes through (each role uses the ones that
  apply to it, as h11's two roles share one set of states);
* the transition tables, one per role: :data:`CLIENT_ACCEPTS` says which server messages a client
  accepts in which state, :data:`SERVER_ACCEPTS` which client messages a server accepts in which
  state. A message class missing from its state's entry is a protocol error (what each role
  does about one is its own business: the client raises, the server answers ERROR);
* keepalive: :func:`sane_keepalive_timeout` (a peer's announced timeout, clamped),
  :func:`keepalive_send_interval` (send KEEPALIVE at half the peer's timeout) and
  :class:`KeepaliveTimers` (the deadline arithmetic, given ``now``).
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping

import attrs

from . import _messages as m

__all__ = [
    "CLIENT_ACCEPTS",
    "DEFAULT_PEER_KEEPALIVE_TIMEOUT",
    "KEEPALIVE_TIMEOUT_RANGE",
    "SERVER_ACCEPTS",
    "ConnectionState",
    "KeepaliveTimers",
    "keepalive_send_interval",
    "sane_keepalive_timeout",
]

KEEPALIVE_TIMEOUT_RANGE = (1.0, 3600.0)
"""The peer keepalive timeouts either side believes, in seconds; others are clamped into it."""

DEFAULT_PEER_KEEPALIVE_TIMEOUT = 60.0
"""The keepalive timeout assumed for a peer whose SETUP announced none (the protocol's default)."""


class ConnectionState(enum.Enum):
    """Where a connection is in its life (the client's or the server's view of it)."""

    IDLE = "idle"
    """Client: nothing sent yet. Server: waiting for the client's SETUP."""
    SETUP = "setup"
    """Client: SETUP sent; waiting for the server's SETUP and AUTH_STATE."""
    AUTHENTICATING = "authenticating"
    """Client: AUTH sent; waiting for AUTHORIZED. Server: SETUP answered with UNAUTHORIZED;
    waiting for an AUTH it accepts."""
    AUTHORIZED = "authorized"
    """Channels may be used."""
    CLOSED = "closed"
    """The transport ended or the connection was closed (a server closing a connection stops
    reading it at once)."""
    ERROR = "error"
    """A protocol error happened; the connection is unusable."""


_S = ConnectionState
_LIVE_CLIENT_STATES = (_S.SETUP, _S.AUTHENTICATING, _S.AUTHORIZED)
_ANY_TIME_FROM_SERVER = frozenset({m.Setup, m.Keepalive, m.AuthState, m.Error})
_CHANNEL_TRAFFIC_FROM_SERVER = frozenset(
    {m.FeedData, m.ChannelOpened, m.ChannelClosed, m.FeedConfig, m.DomConfig, m.DomSnapshot}
)

CLIENT_ACCEPTS: Mapping[ConnectionState, frozenset[type[m.Message]]] = {
    _S.SETUP: _ANY_TIME_FROM_SERVER,
    _S.AUTHENTICATING: _ANY_TIME_FROM_SERVER,
    _S.AUTHORIZED: _ANY_TIME_FROM_SERVER | _CHANNEL_TRAFFIC_FROM_SERVER,
}
"""The client's transition table: the server messages it accepts in each state. Any other
message (and any message in a state that is not listed) is a protocol error."""

_FROM_CLIENT_AFTER_SETUP = frozenset(
    {
        m.Setup,
        m.Auth,
        m.Keepalive,
        m.Error,
        # Requested channels are refused with ERROR UNAUTHORIZED until AUTH is accepted, as
        # tastytrade does; cancelling, FEED_SETUP and FEED_SUBSCRIPTION name channels that
        # cannot be open yet, and are refused as such.
        m.ChannelRequest,
        m.ChannelCancel,
        m.FeedSetup,
        m.FeedSubscription,
        m.DomSetup,
    }
)

SERVER_ACCEPTS: Mapping[ConnectionState, frozenset[type[m.Message]]] = {
    _S.IDLE: frozenset({m.Setup}),
    _S.AUTHENTICATING: _FROM_CLIENT_AFTER_SETUP,
    _S.AUTHORIZED: _FROM_CLIENT_AFTER_SETUP,
}
"""The server's transition table: the client messages it accepts in each state. Any other
message is a protocol error, which a DXLink server answers with ERROR BAD_ACTION."""


def sane_keepalive_timeout(value: float) -> float:
    """A keepalive timeout a peer announced, clamped into :data:`KEEPALIVE_TIMEOUT_RANGE`
    (NaN counts as the longest): a broken peer cannot make this side flood it."""
    low, high = KEEPALIVE_TIMEOUT_RANGE
    return high if math.isnan(value) else min(max(value, low), high)


def keepalive_send_interval(peer_timeout: float | None, limit: float = math.inf) -> float:
    """The longest this side may stay silent: half the keepalive timeout the peer announced
    (made sane first), and never more than ``limit``. Unknown (``None``): ``limit``."""
    if peer_timeout is None:
        return limit
    return min(limit, sane_keepalive_timeout(peer_timeout) / 2)


@attrs.define
class KeepaliveTimers:
    """When this side last sent and last received something, and what follows from that.

    The clock is the caller's: every method takes ``now``.
    """

    last_sent: float = 0.0
    last_received: float = 0.0

    def start(self, now: float) -> None:
        """Both directions start counting now."""
        self.last_sent = self.last_received = now

    def silence(self, now: float) -> float:
        """How long the peer has been silent."""
        return now - self.last_received

    # The checks compare ``now`` with the very deadlines a driver sleeps until, so waking at a
    # deadline always finds it due (``now - last >= interval`` can miss it by a rounding error).

    def peer_expired(self, now: float, timeout: float) -> bool:
        """Whether the peer has been silent for ``timeout`` or longer."""
        return now >= self.receive_deadline(timeout)

    def send_due(self, now: float, interval: float) -> bool:
        """Whether this side has been silent for ``interval`` or longer."""
        return now >= self.send_deadline(interval)

    def send_deadline(self, interval: float) -> float:
        """When this side must next send something (a KEEPALIVE if nothing else)."""
        return self.last_sent + interval

    def receive_deadline(self, timeout: float) -> float:
        """When the peer's silence becomes a keepalive timeout."""
        return self.last_received + timeout
