"""The exceptions trio_dxlink raises.

Every exception the library raises on purpose derives from :class:`DXLinkError`::

    DXLinkError
    ├── ProtocolError                 the DXLink conversation went wrong
    │   ├── LocalProtocolError        this program misused the API (a bug on our side of the wire)
    │   └── RemoteProtocolError       the server sent something the protocol does not allow
    ├── ServerError                   the server sent an ERROR message (code + message kept)
    │   ├── ChannelError              ... about one channel only (only its handles see it)
    │   └── SubscriptionRefusedError  ... refusing one request (a server limit); the rest go on
    ├── ConnectionClosedError         the connection ended (socket closed, dead link, gave up)
    │   ├── ConnectError              the server could not be reached or refused the upgrade
    │   │   └── CertificateError          the server's TLS certificate was not trusted (not retried)
    │   ├── KeepaliveTimeoutError     the peer was silent longer than the keepalive timeout
    │   ├── MessageTooBigError        a message exceeded the agreed size (close code 1009)
    │   └── GaveUpError               reconnecting stopped; ``__cause__`` is the last failure
    ├── AuthenticationError           the token was rejected (or none could be obtained)
    ├── SymbolError                   a malformed symbol (also a ``ValueError``)
    ├── TastytradeError               tastytrade's REST API failed (``status_code``, ``code``)
    │   ├── TastytradeAuthenticationError  sign-in or quote token refused (an AuthenticationError
    │   │                                  too: reconnecting will not help)
    │   └── TastytradeRateLimitError  HTTP 429: too many requests; back off and try later
    ├── SubscriptionError             a subscription handle cannot go on
    │   ├── SlowConsumerError         a lossless handle's bounded buffer filled up
    │   ├── PoolFullError             a pool's connections are all full (nothing was subscribed)
    │   ├── DataGapError              (opt-in) the connection was lost; events may be missing
    │   │   └── MalformedDataError        (opt-in) the server sent undecodable data; it was skipped
    │   └── SubscriptionClosedError   the handle was used after its ``async with`` ended
    ├── EventDeclarationError         (also a TypeError) an event type declared wrongly
    └── RecordingError                a recording could not be read or written

Foreign errors (trio-websocket's, httpx's, orjson's, cattrs') are translated into these at one
boundary and chained with ``raise ... from``, so ``except DXLinkError`` is enough for callers.
"""

from __future__ import annotations

from ._util import clip

__all__ = [
    "AuthenticationError",
    "CertificateError",
    "ChannelError",
    "ConnectError",
    "ConnectionClosedError",
    "DataGapError",
    "DXLinkError",
    "EventDeclarationError",
    "RecordingError",
    "GaveUpError",
    "KeepaliveTimeoutError",
    "LocalProtocolError",
    "MalformedDataError",
    "MessageTooBigError",
    "PoolFullError",
    "ProtocolError",
    "RemoteProtocolError",
    "ServerError",
    "SlowConsumerError",
    "SubscriptionClosedError",
    "SubscriptionError",
    "SubscriptionRefusedError",
    "SymbolError",
    "TastytradeAuthenticationError",
    "TastytradeError",
    "TastytradeRateLimitError",
]


class DXLinkError(Exception):
    """Base class of every error trio_dxlink raises on purpose."""


class ProtocolError(DXLinkError):
    """The DXLink conversation broke the protocol's rules."""


class LocalProtocolError(ProtocolError):
    """This side misused the protocol API (for example, subscribing before authorization).

    Seeing one means a bug in the calling code or in trio_dxlink itself.
    """


class RemoteProtocolError(ProtocolError):
    """The peer sent something the protocol does not allow (malformed JSON, a ragged row...)."""


class ServerError(DXLinkError):
    """The server sent an ``ERROR`` message.

    Attributes:
        code: the protocol error code (``"TIMEOUT"``, ``"UNAUTHORIZED"``, ``"BAD_ACTION"``, ...).
        message: the server's free-text explanation.
        channel: the channel the error was about (0 for the whole connection).
    """

    def __init__(self, code: str, message: str, channel: int = 0) -> None:
        super().__init__(f"server error {clip(code)} on channel {channel}: {clip(message)}")
        self.code = code
        self.message = message
        self.channel = channel


class ChannelError(ServerError):
    """The server failed or closed one FEED channel; only that channel's subscriptions see it."""


class SubscriptionRefusedError(ServerError):
    """The server refused one subscription, typically at a limit ("the subscription size for
    event type 'Candle' is too big": about 20 history requests waiting at once on tastytrade).

    Only the request or handle it was about fails with it; the connection and everything else
    on it go on. Requests that need a snapshot are paced (``max_history_requests`` on
    :func:`~trio_dxlink.open_dxlink`) to stay under such limits.
    """


class ConnectionClosedError(DXLinkError):
    """The connection to the DXLink server ended.

    Attributes:
        code: the WebSocket close code, when one was received.
        reason: the close reason, when one was received.
    """

    def __init__(self, message: str, code: int | None = None, reason: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason


class KeepaliveTimeoutError(ConnectionClosedError):
    """Nothing arrived from the peer within the keepalive timeout: the link is dead."""


class GaveUpError(ConnectionClosedError):
    """Reconnecting stopped (attempts or deadline exhausted); ``__cause__`` is the last failure."""


class AuthenticationError(DXLinkError):
    """The server rejected the token, or the session could not supply one."""


class SymbolError(DXLinkError, ValueError):
    """A symbol (candle, option, future...) or one of its parts is malformed.

    Raised by the parsers and constructors of :mod:`trio_dxlink.symbols`. It is also a
    :class:`ValueError`, so ``except ValueError`` keeps working.
    """


class SubscriptionError(DXLinkError):
    """A subscription handle cannot deliver any more events."""


class SlowConsumerError(SubscriptionError):
    """A lossless subscription's bounded buffer was full when new events arrived.

    Only the slow handle fails; the connection and every other handle keep going.
    """


class PoolFullError(SubscriptionError):
    """A pool's connections are all full and ``max_connections`` are open: the new
    subscriptions did not fit, and none of them was made."""


class DataGapError(SubscriptionError):
    """The connection was lost and re-established: events may be missing at this point.

    Raised once per gap, only by handles created with ``notify_gaps=True``, at the position in
    the stream where the gap is. The handle stays usable: keep reading after catching it.
    """


class MalformedDataError(DataGapError):
    """The server sent data of this handle's type that could not be decoded, so it was skipped.

    Like :class:`DataGapError`, raised once per incident, only by handles created with
    ``notify_gaps=True``, at the position in the stream where the data was skipped; the
    handle stays usable. The feed and the handle count skips in their statistics either way.
    """


class SubscriptionClosedError(SubscriptionError):
    """A subscription handle was used after its ``async with`` block ended."""


class MessageTooBigError(ConnectionClosedError):
    """A message exceeded the size the peer accepts (WebSocket close code 1009)."""


class ConnectError(ConnectionClosedError):
    """The server could not be reached, or it refused the WebSocket upgrade.

    Every failure to open the transport is one of these (refused or reset sockets, DNS, an
    HTTP answer instead of an upgrade, bytes that are not HTTP, a timeout), so the reconnect
    loop retries them all alike.

    Attributes:
        status_code: the HTTP status the server answered the upgrade request with, if it
            answered with one (``503`` from a load balancer, say); ``None`` otherwise.
    """

    def __init__(
        self,
        message: str,
        code: int | None = None,
        reason: str | None = None,
        *,
        status_code: int | None = None,
    ) -> None:
        super().__init__(message, code, reason)
        self.status_code = status_code


class CertificateError(ConnectError):
    """The server's TLS certificate could not be verified.

    Not retried: a certificate the client does not trust will not become trusted by waiting.
    Pass an ``ssl.SSLContext`` that trusts it (``ssl_context=`` on :func:`open_dxlink` or the
    connectors).
    """


class EventDeclarationError(DXLinkError, TypeError):
    """An event class declared with :func:`trio_dxlink.events.event_type` breaks a rule.

    For example: it is not a subclass of :class:`~trio_dxlink.Event` (or of
    :class:`~trio_dxlink.IndexedEvent` / :class:`~trio_dxlink.TimeSeriesEvent`), it lacks
    ``event_symbol`` or another field its base class promises, a field has a type the wire
    cannot carry, or its name is already taken. Raised when the class is declared, never later.
    """


class TastytradeError(DXLinkError):
    """tastytrade's REST API (sign-in, quote tokens, option chains) failed or could not be reached.

    The message says what happened and what to do; it never holds a secret.

    Attributes:
        status_code: the HTTP status, if the API answered (``None``: it could not be reached).
        code: the API's error code (``"invalid_grant"``, ``"unauthorized"``, ...), if it gave one.
    """

    def __init__(
        self, message: str, *, status_code: int | None = None, code: str | None = None
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.code = code


class TastytradeAuthenticationError(TastytradeError, AuthenticationError):
    """tastytrade refused to sign in or to hand out a quote token.

    A wrong client secret, a revoked or unknown refresh token (grant), credentials of the
    other environment (production vs. sandbox), or an account that is not entitled to market
    data. Retrying does not help; a feed that meets it ends.
    """


class TastytradeRateLimitError(TastytradeError):
    """tastytrade answered HTTP 429: too many requests. Wait (backing off) and try again."""


class RecordingError(DXLinkError):
    """A recording (``.dxrec``) could not be read or written: not a recording, a bad line, no
    manifest, or compression asked for without the ``zstandard`` package."""
