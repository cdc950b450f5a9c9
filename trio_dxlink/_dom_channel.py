"""A client's DOM (depth of market) channels, pure: what they ask for and what their data means.

A DOM channel (protocol reference §5) is opened with ``CHANNEL_REQUEST service "DOM"`` naming a
symbol and its order sources. Each time it reaches OPENED (again after a reconnect, as dxFeed's
JavaScript client does) the client sends ``DOM_SETUP`` with what it would like: depth, aggregation
period, order fields. The server answers with ``DOM_CONFIG`` (merged here into a
:class:`DomConfig`) and then sends ``DOM_SNAPSHOT`` messages, each a whole book.

:func:`read_snapshot` turns one DOM_SNAPSHOT into a :class:`DomSnapshot`: bids best (highest)
first, asks best (lowest) first, each a tuple of :class:`DomLevel`. A snapshot that is not what
the protocol says (a level without a numeric price, ``bids`` that is not an array) raises
``ValueError``; the connection skips it, counts it and goes on, as it does with bad FEED_DATA.
"""

from __future__ import annotations

import math
from typing import Any

import attrs

from . import _messages as m
from ._feed_data import ChannelState
from ._registry import _float_key  # events' NaN-aware equality: one home for the rule
from ._util import describe

__all__ = [
    "DEFAULT_DEPTH",
    "DEFAULT_ORDER_FIELDS",
    "DomChannel",
    "DomConfig",
    "DomLevel",
    "DomSnapshot",
    "merge_config",
    "read_snapshot",
]

DEFAULT_DEPTH = 10
"""Levels per side a DOM channel asks for unless told otherwise (dxFeed's default)."""

DEFAULT_ORDER_FIELDS = ("price", "size")
"""The order fields a DOM channel asks for (dxFeed's default)."""

_SPECIAL_DOUBLES = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


@attrs.frozen
class DomLevel:
    """One level of a depth-of-market side: a price and the size there (NaN when the server
    left it out). NaN equals NaN here, as in events."""

    price: float = attrs.field(eq=_float_key)
    size: float = attrs.field(default=math.nan, eq=_float_key)


@attrs.frozen
class DomSnapshot:
    """One book the server's DOM service sent: a whole book, not an update.

    Attributes:
        symbol: the symbol of the DOM channel.
        sources: the order sources the book was asked for.
        time: when the server took the snapshot, in epoch milliseconds.
        bids: buy levels, best (highest price) first.
        asks: sell levels, best (lowest price) first.
    """

    symbol: str
    sources: tuple[str, ...]
    time: int
    bids: tuple[DomLevel, ...]
    asks: tuple[DomLevel, ...]


@attrs.frozen
class DomConfig:
    """The configuration a DOM channel runs with: the merge of every DOM_CONFIG.

    Attributes:
        aggregation_period: seconds between snapshots the server aims for (NaN: unknown).
        depth_limit: the most levels per side (``None``: not said yet).
        data_format: always ``"FULL"`` in DXLink 1.0.
        order_fields: the fields each level carries.
    """

    aggregation_period: float = attrs.field(default=math.nan, eq=_float_key)
    depth_limit: int | None = None
    data_format: str = "FULL"
    order_fields: tuple[str, ...] = ()


@attrs.define(eq=False)
class DomChannel:
    """One DOM channel of a client connection: what it asks for and where it is."""

    id: int
    symbol: str
    sources: tuple[str, ...]
    depth: int = DEFAULT_DEPTH
    aggregation_period: float | None = None
    order_fields: tuple[str, ...] = DEFAULT_ORDER_FIELDS
    state: ChannelState = ChannelState.PENDING
    config: DomConfig = attrs.field(factory=DomConfig)

    def request(self) -> m.ChannelRequest:
        """The CHANNEL_REQUEST that opens this channel."""
        return m.ChannelRequest(self.id, "DOM", {"symbol": self.symbol, "sources": [*self.sources]})

    def setup(self) -> m.DomSetup:
        """The DOM_SETUP sent each time the channel opens."""
        return m.DomSetup(
            self.id,
            accept_aggregation_period=self.aggregation_period,
            accept_depth_limit=self.depth,
            accept_data_format="FULL",
            accept_order_fields=list(self.order_fields),
        )


def merge_config(old: DomConfig, message: m.DomConfig) -> DomConfig:
    """``old`` with what ``message`` says (absent parts unchanged)."""
    return DomConfig(
        old.aggregation_period
        if message.aggregation_period is None
        else message.aggregation_period,
        old.depth_limit if message.depth_limit is None else message.depth_limit,
        old.data_format if message.data_format is None else message.data_format,
        old.order_fields if message.order_fields is None else tuple(message.order_fields),
    )


def read_snapshot(channel: DomChannel, message: m.DomSnapshot) -> DomSnapshot:
    """The :class:`DomSnapshot` a DOM_SNAPSHOT on ``channel`` carries.

    Raises:
        ValueError: the snapshot is malformed (what is wrong, with a bounded excerpt).
    """
    time = message.time
    if time.__class__ is not int:
        if time.__class__ is float and time.is_integer():
            time = int(time)
        else:
            raise ValueError(f"DOM_SNAPSHOT time is not an integer: {describe(time)}")
    return DomSnapshot(
        channel.symbol,
        channel.sources,
        time,
        _side("bids", message.bids),
        _side("asks", message.asks),
    )


def _side(name: str, value: Any) -> tuple[DomLevel, ...]:
    if value is None:
        return ()  # an empty side may be left out
    if value.__class__ is not list:
        raise ValueError(f"DOM_SNAPSHOT {name} is not an array: {describe(value)}")
    levels = []
    for item in value:
        if item.__class__ is not dict:
            raise ValueError(f"DOM_SNAPSHOT {name} holds a non-object {describe(item)}")
        price = _double(name, "price", item.get("price"))
        if math.isnan(price):
            raise ValueError(f"DOM_SNAPSHOT {name} holds a level without a price: {describe(item)}")
        levels.append(DomLevel(price, _double(name, "size", item.get("size"))))
    return tuple(levels)


def _double(side: str, field: str, value: Any) -> float:
    if value is None:
        return math.nan  # empty fields are left out (§5)
    if value.__class__ in (int, float):
        return float(value)
    if value.__class__ is str and value in _SPECIAL_DOUBLES:
        return _SPECIAL_DOUBLES[value]
    raise ValueError(f"DOM_SNAPSHOT {side} {field} is not a number: {describe(value)}")
