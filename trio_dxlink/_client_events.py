"""What a :class:`~trio_dxlink._connection.ClientConnection` reports: its events.

``receive_message`` returns a list of these, in stream order. They are plain frozen values; the
feed (``_client.py``) reacts to them.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import attrs

from .events import Event

if TYPE_CHECKING:
    from ._dom_channel import DomConfig, DomSnapshot

__all__ = [
    "Authorized",
    "AuthRejected",
    "ChannelClosed",
    "ChannelOpened",
    "ConfigChanged",
    "ConnectionEvent",
    "DataSkipped",
    "DomConfigChanged",
    "DomSnapshotReceived",
    "FeedConfig",
    "FeedEvents",
    "ServerErrorReceived",
    "SetupReceived",
]


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
class DomConfigChanged:
    """DOM_CONFIG changed the configuration of a DOM channel."""

    channel: int
    config: DomConfig


@attrs.frozen
class DomSnapshotReceived:
    """A DOM channel received a book (DOM_SNAPSHOT)."""

    channel: int
    snapshot: DomSnapshot


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
    | DomConfigChanged
    | DomSnapshotReceived
    | ServerErrorReceived
)


@attrs.frozen
class FeedConfig:
    """The effective configuration of a FEED channel (the merge of every FEED_CONFIG)."""

    data_format: str = "FULL"
    aggregation_period: float = math.nan
    event_fields: dict[str, tuple[str, ...]] = attrs.field(factory=dict)
