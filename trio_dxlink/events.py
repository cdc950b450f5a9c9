"""The market events DXLink delivers, as immutable attrs classes.

Each class mirrors one dxLink event type. Field names are the snake_case forms of the dxLink
names (``bidPrice`` → ``bid_price``); :attr:`Event.WIRE_NAMES` maps them back. Doubles are
``float`` (``NaN`` where the server had no value), 64-bit integers and epoch-millisecond times
are ``int``, strings are ``str | None``. Enumerated fields keep the server's string; the
``str``-based enums below (:class:`Side`, :class:`TickDirection`, ...) compare equal to those
strings, so ``event.aggressor_side == Side.BUY`` works and an enum value a newer server adds is
still delivered rather than rejected.

Events are frozen: nobody can change an event another subscriber also holds.

Indexed events (:class:`IndexedEvent`: Order, TimeAndSale, Candle, Greeks, ...) carry
``event_flags`` and ``index``; :class:`EventFlag` and the helpers on the class read them. For
time-series events the ``index`` packs the event time and a sequence number
(:func:`time_from_index`, :func:`sequence_from_index`).
"""

from __future__ import annotations

import enum
import math
from typing import TYPE_CHECKING, Any, ClassVar

import attrs

__all__ = [
    "AnalyticOrder",
    "Candle",
    "Event",
    "EventFlag",
    "EVENT_TYPES",
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
    "sequence_from_index",
    "time_from_index",
]

NAN = math.nan


class EventFlag(enum.IntFlag):
    """Bits of ``event_flags`` on indexed events (see the protocol reference, §6.4)."""

    TX_PENDING = 0x01
    REMOVE_EVENT = 0x02
    SNAPSHOT_BEGIN = 0x04
    SNAPSHOT_END = 0x08
    SNAPSHOT_SNIP = 0x10
    SNAPSHOT_MODE = 0x40
    REMOVE_SYMBOL = 0x80


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


def time_from_index(index: int) -> int:
    """The epoch-millisecond time packed into a time-series event's ``index``."""
    return (index >> 32) * 1000 + ((index >> 22) & 0x3FF)


def sequence_from_index(index: int) -> int:
    """The 22-bit sequence number packed into a time-series event's ``index``."""
    return index & 0x3FFFFF


def index_from_time(time_ms: int, sequence: int = 0) -> int:
    """Pack an epoch-millisecond time and a sequence into a time-series ``index``."""
    if not 0 <= sequence <= 0x3FFFFF:
        raise ValueError(f"sequence {sequence} does not fit in 22 bits")
    seconds, millis = divmod(time_ms, 1000)
    return (seconds << 32) | (millis << 22) | sequence


class Event:
    """Base class of every market event.

    Class attributes:
        EVENT_TYPE: the dxLink event type name (``"Quote"``).
        WIRE_NAMES: dxLink field name for each attribute, in declaration order.
    """

    __slots__ = ()

    EVENT_TYPE: ClassVar[str]
    WIRE_NAMES: ClassVar[dict[str, str]]

    event_symbol: str
    event_time: int

    @classmethod
    def wire_fields(cls) -> tuple[str, ...]:
        """The dxLink field names to request for this type in FEED_SETUP, in order."""
        return tuple(cls.WIRE_NAMES.values())


class IndexedEvent(Event):
    """An event that lives in a collection keyed by ``index`` (orders, time series).

    ``event_flags`` tells how the event relates to snapshots and transactions.
    """

    __slots__ = ()

    event_flags: int
    index: int

    @property
    def flags(self) -> EventFlag:
        """``event_flags`` as an :class:`EventFlag`."""
        return EventFlag(self.event_flags & 0xFF)

    @property
    def tx_pending(self) -> bool:
        """A transaction spanning several events is still in progress."""
        return bool(self.event_flags & EventFlag.TX_PENDING)

    @property
    def remove_event(self) -> bool:
        """This event deletes the entry with the same ``index``."""
        return bool(self.event_flags & EventFlag.REMOVE_EVENT)

    @property
    def snapshot_begin(self) -> bool:
        """This event starts a new snapshot."""
        return bool(self.event_flags & EventFlag.SNAPSHOT_BEGIN)

    @property
    def snapshot_end(self) -> bool:
        """This event ends a snapshot (all data sent)."""
        return bool(self.event_flags & EventFlag.SNAPSHOT_END)

    @property
    def snapshot_snip(self) -> bool:
        """This event ends a snapshot that was cut short by a data limit."""
        return bool(self.event_flags & EventFlag.SNAPSHOT_SNIP)


class TimeSeriesEvent(IndexedEvent):
    """An indexed event whose ``index`` encodes its time (Candle, TimeAndSale, Greeks, ...)."""

    __slots__ = ()

    time: int
    sequence: int

    @property
    def index_time(self) -> int:
        """The epoch-millisecond time encoded in ``index``."""
        return time_from_index(self.index)

    @property
    def index_sequence(self) -> int:
        """The sequence number encoded in ``index``."""
        return sequence_from_index(self.index)


_WIRE_OVERRIDES = {
    "vwap": "VWAP",
    "high_52_week_price": "high52WeekPrice",
    "low_52_week_price": "low52WeekPrice",
}


def _camel(name: str) -> str:
    if name in _WIRE_OVERRIDES:
        return _WIRE_OVERRIDES[name]
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


_REGISTRY: dict[str, type[Event]] = {}


class _NaN:
    """Stands in for NaN when events are compared, so that equal-looking events are equal."""

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _NaN)

    def __hash__(self) -> int:
        return 0x7FF8


_NAN_KEY = _NaN()


def _float_key(value: float) -> object:
    return _NAN_KEY if value != value else value


if TYPE_CHECKING:
    from attrs import frozen as _event
else:

    def _event(cls: type[Any]) -> type[Any]:
        """Make ``cls`` a frozen, slotted attrs class whose slots live in a private base.

        ``Quote`` ends up as ``Quote(_QuoteFields(Event))``: ``_QuoteFields`` holds the slots and
        nothing else, ``Quote`` adds attrs' frozen methods and no storage. Both share one memory
        layout, so the COMPACT decoder (``trio_dxlink._codec``) can fill a ``_QuoteFields`` with
        plain attribute stores and re-label it a ``Quote`` cheaply. Users only ever see
        ``Quote``, which behaves exactly like any frozen attrs class.
        """
        names = tuple(cls.__annotations__)
        for name, annotation in cls.__annotations__.items():
            if annotation == "float":  # NaN-aware equality and hashing for doubles
                setattr(cls, name, attrs.field(default=getattr(cls, name), eq=_float_key))
        storage = type(f"_{cls.__name__}Fields", cls.__bases__, {"__slots__": names})
        storage.__module__ = cls.__module__
        body = {k: v for k, v in cls.__dict__.items() if k not in ("__dict__", "__weakref__")}
        rebuilt = type(cls)(cls.__name__, (storage,), body)
        return attrs.frozen(slots=True, weakref_slot=False)(rebuilt)


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
"""Every event class trio_dxlink knows, in catalog order."""

for _cls in EVENT_TYPES:
    _cls.EVENT_TYPE = _cls.__name__
    _cls.WIRE_NAMES = {f.name: _camel(f.name) for f in attrs.fields(_cls)}  # type: ignore[arg-type]
    _REGISTRY[_cls.__name__] = _cls
del _cls


def event_class(name: str) -> type[Event]:
    """The event class for a dxLink event type name (``"Quote"`` → :class:`Quote`).

    Raises:
        KeyError: the name is not an event type trio_dxlink knows.
    """
    try:
        return _REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(_REGISTRY))
        raise KeyError(f"unknown event type {name!r}; known types: {known}") from None
