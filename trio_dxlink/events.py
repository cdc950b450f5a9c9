"""The market events DXLink delivers, as immutable attrs classes.

Each class mirrors one dxLink event type. Field names are the snake_case forms of the dxLink
names (``bidPrice`` → ``bid_price``); :attr:`Event.WIRE_NAMES` maps them back. Doubles are
``float`` (``NaN`` where the server had no value), 64-bit integers and epoch-millisecond times
are ``int``, strings are ``str | None``. Enumerated fields keep the server's string; the
``str``-based enums below (:class:`Side`, :class:`TickDirection`, ...) compare equal to those
strings, so ``event.aggressor_side == Side.BUY`` works and an enum value a newer server adds is
still delivered rather than rejected.

Events are frozen: nobody can change an event another subscriber also holds.

Each class's docstring lists what every field means, with its unit (one table,
``trio_dxlink/_field_docs.py``). The units are the same everywhere: prices in the
instrument's currency; sizes and volumes in shares, or contracts for options and futures;
times as epoch milliseconds, UTC (``*_nano_part``: the nanoseconds within that millisecond);
days (``day_id``, ``expiration``) as days since 1970-01-01; volatilities and rates as
fractions (0.25 is 25 %); ``NaN`` in a double means "unknown", and ``0`` in a time or an id
means "not sent".

Indexed events (:class:`IndexedEvent`: Order, TimeAndSale, Candle, Greeks, ...) carry
``event_flags`` and ``index``; :class:`EventFlag` and the helpers on the class read them. For
time-series events the ``index`` packs the event time and a sequence number
(:func:`time_from_index`, :func:`sequence_from_index`).

dxFeed has more event types than these; :func:`event_type` declares one, so a feed can
subscribe to it (see "Event types trio_dxlink does not ship" in the usage guide).
"""

from __future__ import annotations

import enum
import math
from typing import TYPE_CHECKING

from ._eventbase import (
    Event,
    EventFlag,
    IndexedEvent,
    TimeSeriesEvent,
    index_from_time,
    sequence_from_index,
    time_from_index,
)
from ._exceptions import EventDeclarationError
from ._field_docs import document_fields
from ._registry import event_class, event_type

if TYPE_CHECKING:
    from attrs import frozen as _event
else:
    from ._registry import shipped_event as _event

__all__ = [
    "AnalyticOrder",
    "Candle",
    "Event",
    "EventFlag",
    "EVENT_TYPES",
    "EventDeclarationError",
    "Greeks",
    "IndexedEvent",
    "Order",
    "OptionSale",
    "OrderAction",
    "PriceType",
    "Profile",
    "Quote",
    "Scope",
    "Series",
    "ShortSaleRestriction",
    "Side",
    "SpreadOrder",
    "Summary",
    "TheoPrice",
    "TickDirection",
    "TimeAndSale",
    "TimeAndSaleType",
    "TimeSeriesEvent",
    "Trade",
    "TradeETH",
    "TradingStatus",
    "IcebergType",
    "Underlying",
    "event_class",
    "event_type",
    "index_from_time",
    "sequence_from_index",
    "time_from_index",
]

NAN = math.nan


class Side(str, enum.Enum):
    """``order_side`` / ``aggressor_side`` values."""

    UNDEFINED = "UNDEFINED"
    BUY = "BUY"
    SELL = "SELL"


class Scope(str, enum.Enum):
    """``scope`` of an order."""

    COMPOSITE = "COMPOSITE"
    REGIONAL = "REGIONAL"
    AGGREGATE = "AGGREGATE"
    ORDER = "ORDER"


class OrderAction(str, enum.Enum):
    """``action`` of an order event."""

    UNDEFINED = "UNDEFINED"
    NEW = "NEW"
    REPLACE = "REPLACE"
    MODIFY = "MODIFY"
    DELETE = "DELETE"
    PARTIAL = "PARTIAL"
    EXECUTE = "EXECUTE"
    TRADE = "TRADE"
    BUST = "BUST"


class TimeAndSaleType(str, enum.Enum):
    """``type`` of a TimeAndSale or OptionSale."""

    NEW = "NEW"
    CORRECTION = "CORRECTION"
    CANCEL = "CANCEL"


class TickDirection(str, enum.Enum):
    """``tick_direction`` of a trade."""

    UNDEFINED = "UNDEFINED"
    DOWN = "DOWN"
    ZERO_DOWN = "ZERO_DOWN"
    ZERO = "ZERO"
    ZERO_UP = "ZERO_UP"
    UP = "UP"


class PriceType(str, enum.Enum):
    """``day_close_price_type`` / ``prev_day_close_price_type``."""

    REGULAR = "REGULAR"
    INDICATIVE = "INDICATIVE"
    PRELIMINARY = "PRELIMINARY"
    FINAL = "FINAL"


class ShortSaleRestriction(str, enum.Enum):
    """``short_sale_restriction`` of a profile."""

    UNDEFINED = "UNDEFINED"
    ACTIVE = "ACTIVE"
    INACTIVE = "INACTIVE"


class TradingStatus(str, enum.Enum):
    """``trading_status`` of a profile."""

    UNDEFINED = "UNDEFINED"
    HALTED = "HALTED"
    ACTIVE = "ACTIVE"


class IcebergType(str, enum.Enum):
    """``iceberg_type`` of an analytic order."""

    UNDEFINED = "UNDEFINED"
    NATIVE = "NATIVE"
    SYNTHETIC = "SYNTHETIC"


@_event
class Quote(Event):
    """The best bid and offer for a symbol."""

    event_symbol: str
    event_time: int = 0
    sequence: int = 0
    time_nano_part: int = 0
    bid_time: int = 0
    bid_exchange_code: str | None = None
    bid_price: float = NAN
    bid_size: float = NAN
    ask_time: int = 0
    ask_exchange_code: str | None = None
    ask_price: float = NAN
    ask_size: float = NAN


@_event
class Trade(Event):
    """The last trade of a symbol in the regular session, with day volume."""

    event_symbol: str
    event_time: int = 0
    time: int = 0
    time_nano_part: int = 0
    sequence: int = 0
    exchange_code: str | None = None
    price: float = NAN
    change: float = NAN
    size: float = NAN
    day_id: int = 0
    day_volume: float = NAN
    day_turnover: float = NAN
    tick_direction: str | None = None
    extended_trading_hours: bool = False


@_event
class TradeETH(Event):
    """The last trade of a symbol in extended trading hours (same fields as :class:`Trade`)."""

    event_symbol: str
    event_time: int = 0
    time: int = 0
    time_nano_part: int = 0
    sequence: int = 0
    exchange_code: str | None = None
    price: float = NAN
    change: float = NAN
    size: float = NAN
    day_id: int = 0
    day_volume: float = NAN
    day_turnover: float = NAN
    tick_direction: str | None = None
    extended_trading_hours: bool = False


@_event
class Summary(Event):
    """The day's open/high/low/close, the previous close and open interest."""

    event_symbol: str
    event_time: int = 0
    day_id: int = 0
    day_open_price: float = NAN
    day_high_price: float = NAN
    day_low_price: float = NAN
    day_close_price: float = NAN
    day_close_price_type: str | None = None
    prev_day_id: int = 0
    prev_day_close_price: float = NAN
    prev_day_close_price_type: str | None = None
    prev_day_volume: float = NAN
    open_interest: int = 0


@_event
class Profile(Event):
    """Reference data: description, trading status, limits, 52-week range, dividends."""

    event_symbol: str
    event_time: int = 0
    description: str | None = None
    short_sale_restriction: str | None = None
    trading_status: str | None = None
    status_reason: str | None = None
    halt_start_time: int = 0
    halt_end_time: int = 0
    high_limit_price: float = NAN
    low_limit_price: float = NAN
    high_52_week_price: float = NAN
    low_52_week_price: float = NAN
    beta: float = NAN
    earnings_per_share: float = NAN
    dividend_frequency: float = NAN
    ex_dividend_amount: float = NAN
    ex_dividend_day_id: int = 0
    shares: float = NAN
    free_float: float = NAN


@_event
class Greeks(TimeSeriesEvent):
    """Option greeks and implied volatility."""

    event_symbol: str
    event_time: int = 0
    event_flags: int = 0
    index: int = 0
    time: int = 0
    sequence: int = 0
    price: float = NAN
    volatility: float = NAN
    delta: float = NAN
    gamma: float = NAN
    theta: float = NAN
    rho: float = NAN
    vega: float = NAN


@_event
class TheoPrice(TimeSeriesEvent):
    """The theoretical price of an option from a pricing model."""

    event_symbol: str
    event_time: int = 0
    event_flags: int = 0
    index: int = 0
    time: int = 0
    sequence: int = 0
    price: float = NAN
    underlying_price: float = NAN
    delta: float = NAN
    gamma: float = NAN
    dividend: float = NAN
    interest: float = NAN


@_event
class Underlying(TimeSeriesEvent):
    """Implied volatility and option volume figures of an underlying."""

    event_symbol: str
    event_time: int = 0
    event_flags: int = 0
    index: int = 0
    time: int = 0
    sequence: int = 0
    volatility: float = NAN
    front_volatility: float = NAN
    back_volatility: float = NAN
    call_volume: float = NAN
    put_volume: float = NAN
    option_volume: float = NAN
    put_call_ratio: float = NAN


@_event
class TimeAndSale(TimeSeriesEvent):
    """One trade in the time-and-sales tape."""

    event_symbol: str
    event_time: int = 0
    event_flags: int = 0
    index: int = 0
    time: int = 0
    time_nano_part: int = 0
    sequence: int = 0
    exchange_code: str | None = None
    price: float = NAN
    size: float = NAN
    bid_price: float = NAN
    ask_price: float = NAN
    exchange_sale_conditions: str | None = None
    trade_through_exempt: str | None = None
    aggressor_side: str | None = None
    spread_leg: bool = False
    extended_trading_hours: bool = False
    valid_tick: bool = False
    type: str | None = None
    buyer: str | None = None
    seller: str | None = None


@_event
class Candle(TimeSeriesEvent):
    """One OHLCV bar of a candle symbol such as ``AAPL{=5m}``."""

    event_symbol: str
    event_time: int = 0
    event_flags: int = 0
    index: int = 0
    time: int = 0
    sequence: int = 0
    count: int = 0
    open: float = NAN
    high: float = NAN
    low: float = NAN
    close: float = NAN
    volume: float = NAN
    vwap: float = NAN
    bid_volume: float = NAN
    ask_volume: float = NAN
    imp_volatility: float = NAN
    open_interest: float = NAN


@_event
class Order(IndexedEvent):
    """One order (or price level) of an order book, from the source named in ``source``."""

    event_symbol: str
    event_time: int = 0
    event_flags: int = 0
    index: int = 0
    time: int = 0
    time_nano_part: int = 0
    sequence: int = 0
    source: str | None = None
    action: str | None = None
    action_time: int = 0
    order_id: int = 0
    aux_order_id: int = 0
    price: float = NAN
    size: float = NAN
    executed_size: float = NAN
    count: int = 0
    exchange_code: str | None = None
    order_side: str | None = None
    scope: str | None = None
    trade_id: int = 0
    trade_price: float = NAN
    trade_size: float = NAN
    market_maker: str | None = None


@_event
class SpreadOrder(IndexedEvent):
    """An order on a spread, naming the spread in ``spread_symbol``."""

    event_symbol: str
    event_time: int = 0
    event_flags: int = 0
    index: int = 0
    time: int = 0
    time_nano_part: int = 0
    sequence: int = 0
    source: str | None = None
    action: str | None = None
    action_time: int = 0
    order_id: int = 0
    aux_order_id: int = 0
    price: float = NAN
    size: float = NAN
    executed_size: float = NAN
    count: int = 0
    exchange_code: str | None = None
    order_side: str | None = None
    scope: str | None = None
    trade_id: int = 0
    trade_price: float = NAN
    trade_size: float = NAN
    spread_symbol: str | None = None


@_event
class AnalyticOrder(IndexedEvent):
    """An order with iceberg analytics."""

    event_symbol: str
    event_time: int = 0
    event_flags: int = 0
    index: int = 0
    time: int = 0
    time_nano_part: int = 0
    sequence: int = 0
    source: str | None = None
    action: str | None = None
    action_time: int = 0
    order_id: int = 0
    aux_order_id: int = 0
    price: float = NAN
    size: float = NAN
    executed_size: float = NAN
    count: int = 0
    exchange_code: str | None = None
    order_side: str | None = None
    scope: str | None = None
    trade_id: int = 0
    trade_price: float = NAN
    trade_size: float = NAN
    market_maker: str | None = None
    iceberg_peak_size: float = NAN
    iceberg_hidden_size: float = NAN
    iceberg_executed_size: float = NAN
    iceberg_type: str | None = None


@_event
class OptionSale(IndexedEvent):
    """One option trade with the underlying's state at the time of sale."""

    event_symbol: str
    event_time: int = 0
    event_flags: int = 0
    index: int = 0
    time: int = 0
    time_nano_part: int = 0
    sequence: int = 0
    exchange_code: str | None = None
    price: float = NAN
    size: float = NAN
    bid_price: float = NAN
    ask_price: float = NAN
    exchange_sale_conditions: str | None = None
    trade_through_exempt: str | None = None
    aggressor_side: str | None = None
    spread_leg: bool = False
    extended_trading_hours: bool = False
    valid_tick: bool = False
    type: str | None = None
    underlying_price: float = NAN
    volatility: float = NAN
    delta: float = NAN
    option_symbol: str | None = None


@_event
class Series(IndexedEvent):
    """Volatility and forward-price figures of one option expiration series."""

    event_symbol: str
    event_time: int = 0
    event_flags: int = 0
    index: int = 0
    time: int = 0
    sequence: int = 0
    expiration: int = 0
    volatility: float = NAN
    call_volume: float = NAN
    put_volume: float = NAN
    put_call_ratio: float = NAN
    forward_price: float = NAN
    dividend: float = NAN
    interest: float = NAN


EVENT_TYPES: tuple[type[Event], ...] = (
    Quote,
    Trade,
    TradeETH,
    Summary,
    Profile,
    Greeks,
    TheoPrice,
    Underlying,
    TimeAndSale,
    Candle,
    Order,
    SpreadOrder,
    AnalyticOrder,
    OptionSale,
    Series,
)
"""Every event class trio_dxlink ships, in catalog order (:func:`event_type` declares more)."""

document_fields((Event, IndexedEvent, TimeSeriesEvent, *EVENT_TYPES))  # docstrings only
