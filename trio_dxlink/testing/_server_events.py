"""What the server's core (:class:`~trio_dxlink.testing._server_core.ServerProtocol`) hands out:
the items of its outbox and the events it reports."""

from __future__ import annotations

from typing import TypeAlias

import attrs

from .._messages import Message, SubscriptionEntry

__all__ = [
    "AuthRequested",
    "ChannelCancelled",
    "ChannelRequested",
    "ClientErrorReceived",
    "ClientTimedOut",
    "Close",
    "DomSetupReceived",
    "FeedSetupReceived",
    "HandlingFailed",
    "MessageReceived",
    "Outgoing",
    "Refused",
    "ServerEvent",
    "SubscriptionChanged",
]


@attrs.frozen
class Close:
    """Outbox item: close the WebSocket with this code (after everything queued before it)."""

    code: int
    reason: str


Outgoing: TypeAlias = "str | Close"
"""What :meth:`ServerProtocol.data_to_send` hands out: a frame's text, or a :class:`Close`."""


@attrs.frozen
class MessageReceived:
    """A client frame decoded into this message (reported first, whatever follows)."""

    message: Message


@attrs.frozen
class AuthRequested:
    """The client sent AUTH: the driver must now call :meth:`ServerProtocol.authorize` or
    :meth:`ServerProtocol.reject_token`."""

    token: str = attrs.field(repr=False)


@attrs.frozen
class ChannelRequested:
    """A channel was opened (CHANNEL_OPENED is queued)."""

    channel: int


@attrs.frozen
class ChannelCancelled:
    """The client cancelled a channel (CHANNEL_CLOSED is queued)."""

    channel: int


@attrs.frozen
class FeedSetupReceived:
    """FEED_SETUP changed a channel's configuration (FEED_CONFIG is queued)."""

    channel: int


@attrs.frozen
class DomSetupReceived:
    """DOM_SETUP configured a DOM channel (DOM_CONFIG is queued): its books may now go out."""

    channel: int


@attrs.frozen
class SubscriptionChanged:
    """FEED_SUBSCRIPTION changed a channel's subscriptions (in the order reset, remove, add)."""

    channel: int
    added: list[SubscriptionEntry]
    removed: list[SubscriptionEntry]
    reset: bool


@attrs.frozen
class ClientErrorReceived:
    """The client sent ERROR."""

    channel: int
    code: str
    message: str


@attrs.frozen
class Refused:
    """The client's frame was refused with ERROR ``code`` (INVALID_MESSAGE, BAD_ACTION or
    UNAUTHORIZED); the connection goes on."""

    channel: int
    code: str
    reason: str


@attrs.frozen
class ClientTimedOut:
    """The client was silent for the server's keepalive timeout: ERROR TIMEOUT and a close are
    queued."""

    silence: float


@attrs.frozen
class HandlingFailed:
    """The server failed on a client's message: ERROR UNKNOWN and a close 1011 are queued."""

    reason: str


ServerEvent: TypeAlias = (
    "MessageReceived | AuthRequested | ChannelRequested | ChannelCancelled | FeedSetupReceived"
    " | DomSetupReceived | SubscriptionChanged | ClientErrorReceived | Refused | ClientTimedOut"
    " | HandlingFailed"
)
