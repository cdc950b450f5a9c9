"""The local server's view of one FEED channel of a connection: :class:`ServerChannel`."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, TypeAlias

import attrs

from .._messages import SubscriptionEntry
from ..events import Event

__all__ = ["ServerChannel", "SubscriptionKey", "within_cap"]

_DEFAULT_AGGREGATION_PERIOD = 0.1

SubscriptionKey: TypeAlias = tuple[str, str, "str | None"]
"""A subscription's identity: (type, symbol, source)."""


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


def within_cap(
    channels: Iterable[ServerChannel],
    channel: ServerChannel,
    added: Iterable[SubscriptionEntry],
    cap: int | None,
) -> tuple[list[SubscriptionEntry], int]:
    """The additions to ``channel`` that a cap of ``cap`` subscriptions over all of a
    connection's ``channels`` leaves room for (a repeat of a held subscription takes none), and
    how many new ones it refuses."""
    if cap is None:
        return list(added), 0
    room = cap - sum(len(other.subscriptions) for other in channels)
    kept: list[SubscriptionEntry] = []
    new: set[SubscriptionKey] = set()
    refused = 0
    for entry in added:
        if entry.key in channel.subscriptions or entry.key in new:
            kept.append(entry)
        elif room > 0:
            room -= 1
            new.add(entry.key)
            kept.append(entry)
        else:
            refused += 1
    return kept, refused
