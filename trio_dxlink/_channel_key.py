"""Which FEED channel a subscription travels on: its event type, field list and period (pure).

By default every subscription of one event type shares one channel, which asks the server for
every field the type has, at the feed's ``aggregation_period``. A subscription may ask for
fewer fields (``fields=[...]``, a projection: the fields left out keep their defaults) or a
slower or faster period (``aggregation_period=``); each distinct (type, fields, period) is then
a channel of its own, with its own FEED_SETUP, so its holders get exactly what they asked for.
A :class:`ChannelKey` names such a channel; the feed's desired state, the router and each
connection's channels are keyed by it, and a reconnect opens one channel per key again.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import NamedTuple

from .events import Event, IndexedEvent, TimeSeriesEvent

__all__ = ["ChannelKey", "channel_key_for", "subscription_channel"]


class ChannelKey(NamedTuple):
    """The identity of one FEED channel of a feed."""

    event_type: str
    """The dxLink event type name (``"Quote"``)."""
    fields: tuple[str, ...] | None = None
    """The dxLink field names asked for, in the type's order; ``None``: every field."""
    aggregation_period: float | None = None
    """Seconds; ``None``: the feed's own ``aggregation_period``."""


def _always(event_type: type[Event]) -> list[str]:
    """The fields every projection keeps: what routing and order books need."""
    kept = ["event_symbol"]
    if issubclass(event_type, IndexedEvent):
        kept += ["event_flags", "index"]
        if "source" in event_type.WIRE_NAMES:
            kept.append("source")
    if issubclass(event_type, TimeSeriesEvent):
        kept.append("time")
    return kept


def channel_key_for(
    event_type: type[Event],
    fields: Iterable[str] | None = None,
    aggregation_period: float | None = None,
) -> ChannelKey:
    """The channel a subscription with these options travels on.

    ``fields`` names event fields either as Python attributes (``"bid_price"``) or as dxLink
    spells them (``"bidPrice"``); ``event_symbol`` is always added, and so are the fields
    indexed events are routed and assembled by (``event_flags``, ``index``, ``source``,
    ``time``).

    Raises:
        ValueError: a field the event type does not have, an empty field list, or a period
            that is not a positive finite number.
    """
    name = event_type.EVENT_TYPE
    projected: tuple[str, ...] | None = None
    if fields is not None:
        if isinstance(fields, str):
            raise ValueError(f"fields must be a list of field names, not the string {fields!r}")
        wire_of = event_type.WIRE_NAMES
        attribute_of = {wire: attribute for attribute, wire in wire_of.items()}
        wanted = set(_always(event_type))
        asked = list(fields)
        if not asked:
            raise ValueError("fields must name at least one field (or be None for all)")
        for field in asked:
            attribute = field if field in wire_of else attribute_of.get(field)
            if attribute is None:
                raise ValueError(f"{event_type.__name__} has no field {field!r}")
            wanted.add(attribute)
        projected = tuple(wire for attribute, wire in wire_of.items() if attribute in wanted)
        if len(projected) == len(wire_of):
            projected = None  # every field: the type's ordinary channel
    if aggregation_period is not None:
        if (
            isinstance(aggregation_period, bool)
            or not isinstance(aggregation_period, int | float)
            or not math.isfinite(aggregation_period)
            or aggregation_period <= 0
        ):
            raise ValueError(
                f"aggregation_period must be a positive number of seconds,"
                f" not {aggregation_period!r}"
            )
        aggregation_period = float(aggregation_period)
    return ChannelKey(name, projected, aggregation_period)


def subscription_channel(
    event_type: type[Event],
    *,
    history: bool,
    source: str | None,
    fields: Iterable[str] | None,
    aggregation_period: float | None,
) -> ChannelKey:
    """Check the options of ``feed.subscribe`` and return the channel the subscription uses.

    ``history``: whether a ``from_time`` was given (such a subscription travels on a history
    lane of its own, with every field at the feed's period).

    Raises:
        ValueError: an option the event type does not take (``from_time`` for a type that is
            not a time series, ``source`` for one that is not an order type, ``fields`` or
            ``aggregation_period`` together with ``from_time``) or a bad field list or period
            (:func:`channel_key_for`).
    """
    if history and not issubclass(event_type, TimeSeriesEvent):
        raise ValueError(
            f"from_time is for time-series events (Candle, TimeAndSale, Greeks, ...),"
            f" not {event_type.__name__}"
        )
    if source is not None and (
        not issubclass(event_type, IndexedEvent) or issubclass(event_type, TimeSeriesEvent)
    ):
        raise ValueError(
            f"source is for order-book events (Order, SpreadOrder, ...), not {event_type.__name__}"
        )
    key = channel_key_for(event_type, fields, aggregation_period)
    if history and key != ChannelKey(key.event_type):
        raise ValueError("fields and aggregation_period cannot be combined with from_time")
    return key
