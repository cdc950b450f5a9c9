"""How the local DXLink server behaves: :class:`ServerConfig`."""

from __future__ import annotations

from typing import Any

import attrs

__all__ = ["DATA_FORMATS", "ServerConfig"]

DATA_FORMATS = ("FULL", "COMPACT")
"""The data formats a FEED channel can use."""


def _positive(_: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if not value > 0:
        raise ValueError(f"{attribute.name} must be positive, got {value!r}")


def _number_or_none(_: object, attribute: attrs.Attribute[Any], value: float | None) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
        raise TypeError(f"{attribute.name} must be a number or None, got {value!r}")


def _positive_or_none(_: object, attribute: attrs.Attribute[Any], value: int | None) -> None:
    if value is not None and not value > 0:
        raise ValueError(f"{attribute.name} must be positive or None, got {value!r}")


def _data_format(_: object, attribute: attrs.Attribute[Any], value: str | None) -> None:
    if value is not None and value not in DATA_FORMATS:
        raise ValueError(f"{attribute.name} must be one of {DATA_FORMATS} or None, got {value!r}")


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
        keep_received: how many client messages :attr:`DXLinkServer.received` and each
            connection's ``received`` keep: the newest ones, and up to an eighth more before the
            oldest are forgotten, so a server that runs for days holds a bounded record
            (``None``: keep every message).
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
    keep_received: int | None = attrs.field(default=100_000, validator=_positive_or_none)
