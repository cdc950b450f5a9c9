"""The local server's DOM (depth of market) service, pure: its channels and messages (§5).

A client opens a DOM channel with ``CHANNEL_REQUEST service "DOM"`` and parameters
``{"symbol": ..., "sources": [...]}`` (:func:`open_dom_channel` checks them). Nothing flows until
its ``DOM_SETUP``: :func:`apply_setup` takes what the client would like (depth, aggregation period,
order fields; anything absent keeps the server's default) and returns the ``DOM_CONFIG`` that
answers it, with all four fields. Then the driver sends books with :func:`snapshot_message`: the
levels of the channel's sources, at most ``depth_limit`` a side (0: no limit), each level only
with the order fields in force. Empty fields are left out.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import attrs

from .._messages import DomConfig, DomSetup, DomSnapshot
from .._util import describe

__all__ = [
    "DEFAULT_DOM_AGGREGATION_PERIOD",
    "DEFAULT_DOM_DEPTH",
    "DOM_ORDER_FIELDS",
    "DomServerChannel",
    "apply_setup",
    "open_dom_channel",
    "snapshot_message",
]

DEFAULT_DOM_DEPTH = 10
"""Levels a side a DOM channel gets unless its DOM_SETUP asks otherwise."""

DEFAULT_DOM_AGGREGATION_PERIOD = 0.1
"""The aggregation period DOM_CONFIG reports unless DOM_SETUP asks otherwise (echoed only)."""

DOM_ORDER_FIELDS = ("price", "size")
"""The order fields this server can put in a DOM_SNAPSHOT level (and its default)."""

Level = tuple[float, float]
"""A price level: (price, size)."""


@attrs.define
class DomServerChannel:
    """The server's view of one open DOM channel.

    Attributes:
        id: the channel number.
        symbol: the symbol the book is of.
        sources: the order sources it is built from.
        parameters: the CHANNEL_REQUEST parameters, as sent.
        set_up: whether DOM_SETUP arrived (no snapshot goes out before).
        depth_limit: levels a side (0: no limit).
        aggregation_period: what DOM_CONFIG reported (echoed, not applied).
        order_fields: the fields each level carries.
    """

    id: int
    symbol: str
    sources: tuple[str, ...]
    parameters: dict[str, Any]
    set_up: bool = False
    depth_limit: int = DEFAULT_DOM_DEPTH
    aggregation_period: float = DEFAULT_DOM_AGGREGATION_PERIOD
    order_fields: tuple[str, ...] = DOM_ORDER_FIELDS


def open_dom_channel(number: int, parameters: dict[str, Any]) -> DomServerChannel | str:
    """A DOM channel opened with these CHANNEL_REQUEST parameters, or why it cannot be."""
    symbol = parameters.get("symbol")
    sources = parameters.get("sources")
    if not isinstance(symbol, str) or not symbol:
        return f"a DOM channel needs a 'symbol' string, got {describe(symbol)}"
    if (
        not isinstance(sources, list)
        or not sources
        or not all(isinstance(s, str) and s for s in sources)
    ):
        return f"a DOM channel needs a non-empty 'sources' list of strings, got {describe(sources)}"
    return DomServerChannel(number, symbol, tuple(sources), dict(parameters))


def apply_setup(channel: DomServerChannel, setup: DomSetup) -> DomConfig | str:
    """Take a DOM_SETUP; the DOM_CONFIG that answers it, or why it is refused."""
    if setup.accept_data_format not in (None, "FULL"):
        return f"unsupported DOM data format {describe(setup.accept_data_format)}"
    depth = setup.accept_depth_limit
    if depth is not None and depth < 0:
        return f"acceptDepthLimit must not be negative, got {depth}"
    period = setup.accept_aggregation_period
    if period is not None and not (math.isfinite(period) and period >= 0):
        return f"acceptAggregationPeriod must be a non-negative number, got {describe(period)}"
    if depth is not None:
        channel.depth_limit = depth
    if period is not None:
        channel.aggregation_period = period
    if setup.accept_order_fields:
        known = tuple(f for f in setup.accept_order_fields if f in DOM_ORDER_FIELDS)
        channel.order_fields = known or DOM_ORDER_FIELDS
    channel.set_up = True
    return DomConfig(
        channel.id,
        aggregation_period=channel.aggregation_period,
        depth_limit=channel.depth_limit,
        data_format="FULL",
        order_fields=list(channel.order_fields),
    )


def snapshot_message(
    channel: DomServerChannel, time: int, bids: Sequence[Level], asks: Sequence[Level]
) -> DomSnapshot:
    """The DOM_SNAPSHOT of a book (``bids`` best first, ``asks`` best first), cut to the
    channel's depth, each level with the channel's order fields (NaN ones left out)."""
    limit = channel.depth_limit or None
    return DomSnapshot(
        channel.id,
        time,
        [_level(channel, level) for level in bids[:limit]],
        [_level(channel, level) for level in asks[:limit]],
    )


def _level(channel: DomServerChannel, level: Level) -> dict[str, float]:
    price, size = level
    values = {"price": price, "size": size}
    return {name: values[name] for name in channel.order_fields if not math.isnan(values[name])}
