"""How the local DXLink server behaves: :class:`ServerConfig`."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import attrs

__all__ = ["DATA_FORMATS", "SUBSCRIPTION_OVERFLOWS", "ServerConfig"]

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


SUBSCRIPTION_OVERFLOWS = ("refuse", "close")
"""What the server does with subscriptions past ``max_subscriptions``."""


def _subscription_overflow(_: object, attribute: attrs.Attribute[Any], value: str) -> None:
    if value not in SUBSCRIPTION_OVERFLOWS:
        raise ValueError(f"{attribute.name} must be one of {SUBSCRIPTION_OVERFLOWS}, got {value!r}")


def _symbol_set(symbols: Iterable[str]) -> frozenset[str]:
    if isinstance(symbols, str):
        raise TypeError(f"give a collection of symbols, not the string {symbols!r}")
    return frozenset(symbols)


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
        simulate: make up initial values, history, order books and periodic updates from the
            market (on by default); ``False`` makes a scripted server, whose subscribers get
            only what the test publishes.
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
        max_snapshot_events: history events per snapshot; beyond, the snapshot is snipped
            (its last event flagged SNAPSHOT_SNIP instead of SNAPSHOT_END).
        snapshot_transaction_size: split every snapshot into pieces of this many events, each
            sent in its own FEED_DATA with every event but the piece's last flagged TX_PENDING
            (``None``: one piece, no TX_PENDING).
        normalize_candle_symbols: answer candle subscriptions with the normalised symbol, as a
            real server was seen to (``SPX{=1h}`` is answered as ``SPX{=h}``; see
            :func:`trio_dxlink.symbols.normalize_candle_symbol`); published candles are
            recorded and matched by it too.
        index_as_string: send ``index`` as a decimal string (``"7235129486797176832"``), as a
            real server was seen to, in both data formats.
        max_snapshots_in_flight: the most history snapshots a connection may have waiting to be
            written at once, like tastytrade's cap of about 20 Candle subscriptions; a request
            past it, or a repeat of one still waiting, gets ERROR ``INVALID_MESSAGE``
            ("Subscription size for event type 'Candle' is too big") on its channel and is not
            subscribed; the connection stays up. A slot frees once the snapshot's last frame
            has been written. ``None`` (the default): no cap.
        empty_snapshot_symbols: symbols whose snapshots are always empty (one event flagged
            SNAPSHOT_BEGIN | SNAPSHOT_END | REMOVE_EVENT with NaN fields), as tastytrade's AUTO
            channels sometimes answer candle history. Matched after normalisation when
            ``normalize_candle_symbols`` is on.
        keep_closed_connections: keep closed connections (and their messages) in
            :attr:`DXLinkServer.connections` and :attr:`DXLinkServer.received` for tests to
            inspect. Off by default: a closed connection is forgotten, so a long-running server
            holds only what its live connections need.
        keep_received: how many client messages :attr:`DXLinkServer.received` and each
            connection's ``received`` keep: the newest ones, and up to an eighth more before the
            oldest are forgotten, so a server that runs for days holds a bounded record
            (``None``: keep every message).
        max_subscriptions: the most FEED subscriptions one connection may hold, over all its
            channels, as real servers cap them (users report drops near 22,000 symbols);
            ``None`` (the default): no cap. What happens past it is ``subscription_overflow``'s.
        subscription_overflow: ``"refuse"`` (the default): the subscriptions past the cap in a
            FEED_SUBSCRIPTION are not subscribed, and the channel gets one ERROR
            ``INVALID_MESSAGE`` ("Too many subscriptions: ... limit N"), which the client counts
            as a refusal; the connection stays up. ``"close"``: like a server that drops a
            client asking too much, ERROR ``INVALID_MESSAGE`` on channel 0, then close 1011.
    """

    token: str | None = attrs.field(default=None, repr=False)
    user_id: str = "local-user"
    keepalive_timeout: float = attrs.field(default=60, validator=_positive)
    announce_keepalive_timeout: float | None = attrs.field(default=None, validator=_number_or_none)
    accept_keepalive_timeout: float = attrs.field(default=60, validator=_positive)
    max_message_size: int = attrs.field(default=2**20, validator=_positive)
    simulate: bool = True
    update_interval: float = attrs.field(default=0.1, validator=_positive)
    event_fields_in_config: bool = True
    data_format_override: str | None = attrs.field(default=None, validator=_data_format)
    pairs_per_message: int = attrs.field(default=1, validator=_positive)
    version: str = "1.0-trio_dxlink-local"
    queue_size: int = attrs.field(default=1024, validator=_positive)
    max_events_per_message: int = attrs.field(default=100, validator=_positive)
    max_snapshot_events: int = attrs.field(default=1000, validator=_positive)
    snapshot_transaction_size: int | None = attrs.field(default=None, validator=_positive_or_none)
    normalize_candle_symbols: bool = False
    index_as_string: bool = False
    max_snapshots_in_flight: int | None = attrs.field(default=None, validator=_positive_or_none)
    empty_snapshot_symbols: frozenset[str] = attrs.field(default=frozenset(), converter=_symbol_set)
    keep_closed_connections: bool = False
    keep_received: int | None = attrs.field(default=100_000, validator=_positive_or_none)
    max_subscriptions: int | None = attrs.field(default=None, validator=_positive_or_none)
    subscription_overflow: str = attrs.field(default="refuse", validator=_subscription_overflow)
