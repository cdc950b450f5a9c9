"""The ``stream`` command's live table (drawn with rich): rows, columns, marks and status line.

:class:`EventTable` keeps the rows (pure: events in, a rich renderable out, no I/O):

* one row per symbol, holding its latest event; for time-series events (Candle, TimeAndSale,
  Greeks, ...) the event with the newest ``time``, so a history snapshot (sent newest first)
  leaves its newest bar on show; for order events one row per order (symbol, source, index),
  removed when the order is; for Series one row per expiration;
* the columns are chosen per event type, with units in the headers (prices are in the
  instrument's currency, sizes in shares or contracts, volatilities in percent, theta per
  calendar day, vega and rho per percentage point); times are local: ``HH:MM:SS.mmm`` for
  today, ``YYYY-MM-DD HH:MM:SS`` for other days;
* a price that went up since that row's previous event is shown green with ``▲``, down red with
  ``▼`` (the mark stays until the price moves again).

The status line under the table is :class:`~trio_dxlink._cli_common.StatusLine`; the stream's
counters are :data:`SUBSCRIPTION_COUNTERS`. :func:`price_text` and :func:`size_text` are how
prices and sizes are shown (the ``book`` ladder shows them so too).
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable, Hashable, Iterable
from typing import Any

import attrs
from rich import box
from rich.table import Table
from rich.text import Text

from ._arguments import datetime_of
from ._cli_common import Counter
from .events import (
    AnalyticOrder,
    Candle,
    Event,
    Greeks,
    OptionSale,
    Order,
    Profile,
    Quote,
    Series,
    SpreadOrder,
    Summary,
    TheoPrice,
    TimeAndSale,
    TimeSeriesEvent,
    Trade,
    TradeETH,
    Underlying,
)

__all__ = [
    "SUBSCRIPTION_COUNTERS",
    "Column",
    "EventTable",
    "columns_for",
    "local_time",
    "price_text",
    "size_text",
]

_REMOVE_EVENT = 0x02


def price_text(value: Any) -> str:
    """A price with thousands separators and 2 to 4 decimals (``-`` for NaN or none)."""
    if not isinstance(value, (int, float)) or math.isnan(value):
        return "-"
    text = f"{value:,.4f}".rstrip("0")
    whole, _, decimals = text.partition(".")
    return f"{whole}.{decimals.ljust(2, '0')}"


def size_text(value: Any) -> str:
    """A size with thousands separators, decimals only when it has some (``-`` for NaN)."""
    if not isinstance(value, (int, float)) or math.isnan(value):
        return "-"
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.2f}"


def _ratio(value: Any) -> str:
    return "-" if not isinstance(value, (int, float)) or math.isnan(value) else f"{value:.4f}"


def _percent(value: Any) -> str:
    return "-" if not isinstance(value, (int, float)) or math.isnan(value) else f"{value * 100:.2f}"


def _text(value: Any) -> str:
    return "-" if value is None or value == "" else str(value)


def local_time(ms: Any, today: dt.date | None = None) -> str:
    """An epoch-ms time as local time: ``HH:MM:SS.mmm`` today, else date and time."""
    if not isinstance(ms, int) or ms <= 0:
        return "-"
    moment = datetime_of(ms).astimezone()
    if moment.date() == (today or dt.date.today()):
        return moment.strftime("%H:%M:%S.") + f"{moment.microsecond // 1000:03d}"
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def _day(value: Any) -> str:
    if not isinstance(value, int) or value <= 0:
        return "-"
    return (dt.date(1970, 1, 1) + dt.timedelta(days=value)).isoformat()


@attrs.frozen
class Column:
    """One column: its header (with the unit), how a value is read and shown, and whether
    changes are marked (prices)."""

    header: str
    read: Callable[[Any], Any]
    show: Callable[[Any], str]
    marked: bool = False
    left: bool = False


def _col(field: str, header: str, show: Callable[[Any], str], **kw: bool) -> Column:
    return Column(header, lambda event: getattr(event, field), show, **kw)


def _when(field: str = "time", header: str = "time (local)") -> Column:
    return _col(field, header, local_time)


def _quote_time(event: Quote) -> int:
    return max(event.bid_time, event.ask_time)


_TRADE = [
    _col("price", "price", price_text, marked=True),
    _col("change", "change", price_text),
    _col("size", "size", size_text),
    _col("day_volume", "day volume", size_text),
    _col("exchange_code", "exch", _text),
    _col("tick_direction", "tick", _text),
    _when(),
]
_ORDER_HEAD = [
    _col("source", "source", _text, left=True),
    _col("order_side", "side", _text),
    _col("price", "price", price_text, marked=True),
    _col("size", "size", size_text),
    _col("count", "orders", size_text),
    _col("exchange_code", "exch", _text),
]

_COLUMNS: dict[type[Event], list[Column]] = {
    Quote: [
        _col("bid_size", "bid size", size_text),
        _col("bid_price", "bid", price_text, marked=True),
        _col("ask_price", "ask", price_text, marked=True),
        _col("ask_size", "ask size", size_text),
        _col("bid_exchange_code", "bid exch", _text),
        _col("ask_exchange_code", "ask exch", _text),
        Column("time (local)", _quote_time, local_time),
    ],
    Trade: _TRADE,
    TradeETH: _TRADE,
    Summary: [
        _col("day_open_price", "open", price_text),
        _col("day_high_price", "high", price_text, marked=True),
        _col("day_low_price", "low", price_text, marked=True),
        _col("day_close_price", "close", price_text, marked=True),
        _col("prev_day_close_price", "prev close", price_text),
        _col("prev_day_volume", "prev volume", size_text),
        _col("open_interest", "open interest", size_text),
        _col("day_id", "day", _day),
    ],
    Profile: [
        _col("description", "description", _text, left=True),
        _col("trading_status", "status", _text),
        _col("short_sale_restriction", "short sale", _text),
        _col("high_52_week_price", "52w high", price_text),
        _col("low_52_week_price", "52w low", price_text),
        _col("beta", "beta", _ratio),
        _col("earnings_per_share", "EPS", price_text),
        _col("shares", "shares", size_text),
    ],
    Greeks: [
        _col("price", "price", price_text, marked=True),
        _col("volatility", "IV %", _percent),
        _col("delta", "delta", _ratio),
        _col("gamma", "gamma", _ratio),
        _col("theta", "theta /day", _ratio),
        _col("vega", "vega /pt", _ratio),
        _col("rho", "rho /pt", _ratio),
        _when(),
    ],
    TheoPrice: [
        _col("price", "theo price", price_text, marked=True),
        _col("underlying_price", "underlying", price_text, marked=True),
        _col("delta", "delta", _ratio),
        _col("gamma", "gamma", _ratio),
        _col("dividend", "dividend %", _percent),
        _col("interest", "interest %", _percent),
        _when(),
    ],
    Underlying: [
        _col("volatility", "IV %", _percent),
        _col("front_volatility", "front IV %", _percent),
        _col("back_volatility", "back IV %", _percent),
        _col("call_volume", "call volume", size_text),
        _col("put_volume", "put volume", size_text),
        _col("put_call_ratio", "put/call", _ratio),
        _when(),
    ],
    TimeAndSale: [
        _when(),
        _col("price", "price", price_text, marked=True),
        _col("size", "size", size_text),
        _col("bid_price", "bid", price_text),
        _col("ask_price", "ask", price_text),
        _col("aggressor_side", "aggressor", _text),
        _col("exchange_code", "exch", _text),
        _col("type", "kind", _text),
    ],
    Candle: [
        _when("time", "bar start (local)"),
        _col("open", "open", price_text),
        _col("high", "high", price_text),
        _col("low", "low", price_text),
        _col("close", "close", price_text, marked=True),
        _col("volume", "volume", size_text),
        _col("vwap", "VWAP", price_text),
        _col("count", "trades", size_text),
    ],
    Order: [*_ORDER_HEAD, _col("market_maker", "market maker", _text), _when()],
    SpreadOrder: [*_ORDER_HEAD, _col("spread_symbol", "spread", _text, left=True), _when()],
    AnalyticOrder: [
        *_ORDER_HEAD,
        _col("iceberg_peak_size", "iceberg peak", size_text),
        _col("iceberg_hidden_size", "iceberg hidden", size_text),
        _col("iceberg_type", "iceberg", _text),
        _when(),
    ],
    OptionSale: [
        _when(),
        _col("option_symbol", "option", _text, left=True),
        _col("price", "price", price_text, marked=True),
        _col("size", "size", size_text),
        _col("aggressor_side", "aggressor", _text),
        _col("underlying_price", "underlying", price_text),
        _col("volatility", "IV %", _percent),
        _col("delta", "delta", _ratio),
    ],
    Series: [
        _col("expiration", "expiration", _day),
        _col("volatility", "IV %", _percent),
        _col("forward_price", "forward", price_text, marked=True),
        _col("call_volume", "call volume", size_text),
        _col("put_volume", "put volume", size_text),
        _col("put_call_ratio", "put/call", _ratio),
        _col("interest", "interest %", _percent),
        _when(),
    ],
}

_HIDDEN = {"event_symbol", "event_time", "sequence", "time_nano_part", "event_flags", "index"}


def columns_for(event_type: type[Event]) -> list[Column]:
    """The table's columns for ``event_type`` (after the symbol column); a type declared by a
    user gets one column per field."""
    for cls in event_type.__mro__:
        if cls in _COLUMNS:
            return _COLUMNS[cls]
    fields = attrs.fields(event_type)  # type: ignore[arg-type]
    return [_col(f.name, f.name.replace("_", " "), _text) for f in fields if f.name not in _HIDDEN]


SUBSCRIPTION_COUNTERS = (
    Counter("gaps", lambda stats: stats.gaps),
    Counter("dropped", lambda stats: stats.dropped, "red"),
)
"""The status line's counters for a subscription handle (its ``statistics()``)."""

_ORDER_TYPES = (Order, SpreadOrder, AnalyticOrder)


class EventTable:
    """The rows of the live table, and the table drawn from them (see the module docstring)."""

    def __init__(self, event_type: type[Event]) -> None:
        self.event_type = event_type
        self.columns = columns_for(event_type)
        self.rows: dict[Hashable, Event] = {}
        self._marks: dict[tuple[Hashable, int], int] = {}
        self._per_order = issubclass(event_type, _ORDER_TYPES)
        self._per_index = self._per_order or issubclass(event_type, Series)
        self._newest = issubclass(event_type, TimeSeriesEvent)

    def _key(self, event: Event) -> Hashable:
        if self._per_order:
            return (event.event_symbol, getattr(event, "source", None), getattr(event, "index", 0))
        if self._per_index:
            return (event.event_symbol, getattr(event, "index", 0))
        return event.event_symbol

    def add(self, event: Event) -> None:
        """Take one event into its row (marking moved prices)."""
        key = self._key(event)
        if self._per_index and (
            getattr(event, "event_flags", 0) & _REMOVE_EVENT
            or (self._per_order and not getattr(event, "size", 0) > 0)
        ):
            self.rows.pop(key, None)
            return
        previous = self.rows.get(key)
        if previous is not None:
            if self._newest and getattr(event, "time", 0) < getattr(previous, "time", 0):
                return  # history arrives newest first: keep the newest on show
            for i, column in enumerate(self.columns):
                if column.marked:
                    old, new = column.read(previous), column.read(event)
                    moved = isinstance(old, float) and isinstance(new, float) and new != old
                    if moved and not (math.isnan(old) or math.isnan(new)):
                        self._marks[key, i] = 1 if new > old else -1
        self.rows[key] = event

    def add_all(self, events: Iterable[Event]) -> None:
        for event in events:
            self.add(event)

    def _sorted_keys(self) -> list[Hashable]:
        def order(key: Hashable) -> tuple[Any, ...]:
            event = self.rows[key]
            if not self._per_order:
                return (str(key),)
            price = getattr(event, "price", math.nan)
            buy = getattr(event, "order_side", None) == "BUY"
            rank = -price if buy else price
            return (event.event_symbol, str(getattr(event, "source", "")), not buy, rank)

        return sorted(self.rows, key=order)

    def render(self, title: str, max_rows: int) -> Table:
        """The table: a header, then at most ``max_rows`` rows (a last line says how many more
        there are)."""
        table = Table(
            title=title,
            title_justify="left",
            box=box.SIMPLE_HEAD,
            header_style="bold",
            show_edge=False,
            pad_edge=False,
            expand=False,
        )
        table.add_column("symbol", no_wrap=True)
        for column in self.columns:
            table.add_column(column.header, justify="left" if column.left else "right")
        keys = self._sorted_keys()
        shown = keys if len(keys) <= max_rows else keys[: max(max_rows - 1, 0)]
        for key in shown:
            event = self.rows[key]
            cells: list[Text | str] = [event.event_symbol]
            for i, column in enumerate(self.columns):
                value = column.show(column.read(event))
                mark = self._marks.get((key, i)) if column.marked else None
                if mark is None:
                    cells.append(Text(value + " ") if column.marked else value)
                else:
                    arrow, style = ("▲", "green") if mark > 0 else ("▼", "red")
                    cells.append(Text(value + arrow, style=style))
            table.add_row(*cells)
        if len(shown) < len(keys):
            table.add_row(Text(f"… {len(keys) - len(shown)} more rows", style="dim"))
        return table
