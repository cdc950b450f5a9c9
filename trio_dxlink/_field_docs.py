"""What each field of the shipped market events means, and its unit: the one table.

:mod:`trio_dxlink.events` calls :func:`document_fields` once at import, which appends an
``Attributes:`` section rendered from this table to each event class's docstring, so
``help(Quote)`` and the API reference (Sphinx autodoc with napoleon) both show it. The test
``tests/test_api_docs.py`` fails when a field of a shipped event has no entry here, or an entry
names a field that no longer exists.

A field's meaning is looked up along the class's MRO: an entry under the class's own name
(``"Greeks"``), then under its bases (``"TimeSeriesEvent"``, ``"IndexedEvent"``, ``"Event"``),
then :data:`COMMON` (a name that means the same everywhere it occurs). Sources: the protocol
reference (§6: fields, flags, index encoding, enumerations) and dxFeed's event model.
"""

from __future__ import annotations

import inspect
import textwrap
from collections.abc import Iterable

__all__ = ["COMMON", "BY_CLASS", "document_fields", "field_doc", "fields_section"]

# Units, spelled the same way everywhere.
PRICE = "in the instrument's currency; NaN: unknown"
SIZE = "in shares (contracts for options and futures); NaN: unknown"
TIME = "epoch milliseconds, UTC; 0: not sent"
DAY = "days since 1970-01-01 (UTC); 0: not sent"
FRACTION = "a fraction (0.25 is 25 %); NaN: unknown"
VOLATILITY = "a fraction per year (0.25 is 25 %); NaN: unknown"
NANOS = "nanoseconds within the millisecond (0 to 999,999)"
EXCHANGE = "one character (``Q`` is Nasdaq, for example); ``None``, ``''`` or ``'\\x00'``: none"
COUNT = "NaN: unknown"

COMMON: dict[str, str] = {
    "time_nano_part": f"Sub-millisecond part of ``time``, {NANOS}.",
    "sequence": "Sequence number telling apart events of the same millisecond (22 bits).",
    "exchange_code": f"Exchange of the trade, {EXCHANGE}.",
    "price": f"Price of the trade, {PRICE}.",
    "size": f"Size of the trade, {SIZE}.",
    "bid_price": f"Best bid price when the trade happened, {PRICE}.",
    "ask_price": f"Best ask (offer) price when the trade happened, {PRICE}.",
    "exchange_sale_conditions": "Sale conditions as the exchange reports them (its codes).",
    "trade_through_exempt": "Trade-through exemption code (one character; ``'0'`` or none: not "
    "exempt).",
    "aggressor_side": "Side that initiated the trade: ``BUY`` (a buyer took the offer), "
    "``SELL`` or ``UNDEFINED`` (:class:`Side`).",
    "spread_leg": "Whether the trade was one leg of a spread (multi-leg) trade.",
    "extended_trading_hours": "Whether the trade happened outside regular trading hours.",
    "valid_tick": "Whether the trade counts as a valid intraday tick (updates last price, "
    "high/low and volume); a cancellation does not.",
    "type": "``NEW``, ``CORRECTION`` (corrects an earlier sale) or ``CANCEL`` (cancels one) "
    "(:class:`TimeAndSaleType`).",
    "day_id": f"Trading day the day figures belong to, {DAY}.",
    "delta": "Delta: change of the option price per 1 unit rise of the underlying price "
    "(-1 to 1); NaN: unknown.",
    "gamma": "Gamma: change of delta per 1 unit rise of the underlying price; NaN: unknown.",
    "underlying_price": f"Price of the underlying used, {PRICE}.",
    "call_volume": f"Call options traded today, in contracts; {COUNT}.",
    "put_volume": f"Put options traded today, in contracts; {COUNT}.",
    "put_call_ratio": f"``put_volume / call_volume``; {COUNT}.",
    "dividend": f"Implied simple dividend return of the option series, as {FRACTION}.",
    "interest": f"Implied simple interest return of the option series, as {FRACTION}.",
}

_TRADE: dict[str, str] = {
    "time": f"Time of the last trade, {TIME}.",
    "sequence": "Sequence number of the last trade within its millisecond (22 bits).",
    "exchange_code": f"Exchange of the last trade, {EXCHANGE}.",
    "price": f"Price of the last trade, {PRICE}.",
    "change": f"Change of the last trade's price from the previous day's close, {PRICE}.",
    "size": f"Size of the last trade, {SIZE}.",
    "day_volume": f"Volume traded on ``day_id``, {SIZE}.",
    "day_turnover": f"Value traded on ``day_id`` (the sum of price x size), {PRICE}.",
    "tick_direction": "Direction of the last price against the previous different one: "
    "``UP``, ``ZERO_UP`` (unchanged after a rise), ``ZERO``, ``ZERO_DOWN``, ``DOWN`` or "
    "``UNDEFINED`` (:class:`TickDirection`).",
    "extended_trading_hours": "Whether the last trade happened outside regular trading hours.",
}

# The order-book events (Order, SpreadOrder, AnalyticOrder) share their fields.
_ORDER: dict[str, str] = {
    "time": f"Time of the order's last change, {TIME}.",
    "price": f"Price of the order (of the level, for aggregate sources), {PRICE}.",
    "size": "Size of the order still open, in shares (contracts for options and "
    "futures); an order book drops an order whose size is 0 or NaN.",
    "count": "Number of orders making up the entry (aggregate sources); 0: unknown.",
    "exchange_code": f"Exchange of the order, {EXCHANGE}.",
    "source": "Order source: the feed or venue the book comes from (``NTV``, ``DEX``, "
    "``ntv``, ...), as subscribed with ``source=``.",
    "action": "What happened to the order: ``NEW``, ``REPLACE``, ``MODIFY``, ``DELETE``, "
    "``PARTIAL``, ``EXECUTE``, ``TRADE``, ``BUST`` or ``UNDEFINED`` (:class:`OrderAction`; "
    "full-order-view sources only).",
    "action_time": f"Time of the last ``action``, {TIME}.",
    "order_id": "The exchange's id of the order (full-order-view sources); 0: none.",
    "aux_order_id": "A second order id for the action (the counterparty's order of a trade, "
    "the order replaced); 0: none.",
    "executed_size": f"Size of the order executed so far, {SIZE}.",
    "order_side": "``BUY`` (a bid) or ``SELL`` (an ask), or ``UNDEFINED`` (:class:`Side`).",
    "scope": "What the entry stands for: ``ORDER`` (one order), ``AGGREGATE`` (a price level "
    "of the source), ``REGIONAL`` (one exchange's best) or ``COMPOSITE`` (the best across "
    "exchanges) (:class:`Scope`).",
    "trade_id": "Id of the trade of the last ``EXECUTE``/``TRADE`` action; 0: none.",
    "trade_price": f"Price of the last trade of the order, {PRICE}.",
    "trade_size": f"Size of the last trade of the order, {SIZE}.",
    "market_maker": "Market maker or other participant id (MMID) of the order; ``None``: "
    "anonymous.",
}

BY_CLASS: dict[str, dict[str, str]] = {
    "Event": {
        "event_symbol": "The symbol the event is for, as the server sent it (a candle symbol "
        "may come back in dxFeed's normalised spelling).",
        "event_time": "When dxFeed's systems created the event, epoch milliseconds, UTC; "
        "usually 0 (not sent) over DXLink.",
    },
    "IndexedEvent": {
        "event_flags": "Snapshot and transaction bits (:class:`EventFlag`): ``TX_PENDING`` "
        "0x01, ``REMOVE_EVENT`` 0x02, ``SNAPSHOT_BEGIN`` 0x04, ``SNAPSHOT_END`` 0x08, "
        "``SNAPSHOT_SNIP`` 0x10; read them with ``flags`` and the boolean properties.",
        "index": "Key of the event within its symbol and source: an event with the same "
        "``index`` replaces (or, with ``REMOVE_EVENT``, removes) the earlier one. For order "
        "events the source's id sits in the high bits, so it is unique across sources.",
    },
    "TimeSeriesEvent": {
        "index": "Key of the event within its symbol, ordered by time: ``(seconds << 32) | "
        "(milliseconds << 22) | sequence`` of ``time`` (:func:`time_from_index`, "
        ":func:`sequence_from_index`).",
        "time": f"Time the event is for, {TIME}.",
        "sequence": "Sequence number telling apart events of the same millisecond (22 bits, "
        "the low bits of ``index``).",
    },
    "Quote": {
        "sequence": "Sequence number of the quote within its millisecond (22 bits).",
        "time_nano_part": f"Sub-millisecond part of the later of ``bid_time`` and "
        f"``ask_time``, {NANOS}.",
        "bid_time": f"Time of the last change of the bid, {TIME}.",
        "bid_exchange_code": f"Exchange of the best bid, {EXCHANGE}.",
        "bid_price": f"Best (highest) bid price, {PRICE}.",
        "bid_size": f"Size at the best bid, {SIZE} (index symbols such as SPX have none).",
        "ask_time": f"Time of the last change of the ask, {TIME}.",
        "ask_exchange_code": f"Exchange of the best ask, {EXCHANGE}.",
        "ask_price": f"Best (lowest) ask (offer) price, {PRICE}.",
        "ask_size": f"Size at the best ask, {SIZE} (index symbols such as SPX have none).",
    },
    "Trade": _TRADE,
    "TradeETH": _TRADE,
    "Summary": {
        "day_open_price": f"Opening price of ``day_id``, {PRICE}.",
        "day_high_price": f"Highest price of ``day_id``, {PRICE}.",
        "day_low_price": f"Lowest price of ``day_id``, {PRICE}.",
        "day_close_price": f"Closing price of ``day_id`` (so far, during the day), {PRICE}.",
        "day_close_price_type": "How final ``day_close_price`` is: ``REGULAR``, "
        "``INDICATIVE``, ``PRELIMINARY`` or ``FINAL`` (:class:`PriceType`).",
        "prev_day_id": f"The trading day before ``day_id``, {DAY}.",
        "prev_day_close_price": f"Closing price of ``prev_day_id``, {PRICE}.",
        "prev_day_close_price_type": "How final ``prev_day_close_price`` is (:class:`PriceType`).",
        "prev_day_volume": f"Volume traded on ``prev_day_id``, {SIZE}.",
        "open_interest": "Contracts outstanding (options and futures), in contracts; 0: "
        "unknown or not applicable.",
    },
    "Profile": {
        "description": "Description of the instrument (the company's or fund's name).",
        "short_sale_restriction": "``ACTIVE`` while short sales are restricted (SEC rule 201), "
        "``INACTIVE`` or ``UNDEFINED`` (:class:`ShortSaleRestriction`).",
        "trading_status": "``ACTIVE``, ``HALTED`` or ``UNDEFINED`` (:class:`TradingStatus`).",
        "status_reason": "The reason for ``trading_status`` as the exchange gives it (text).",
        "halt_start_time": f"Start of the current trading halt, {TIME}.",
        "halt_end_time": f"End of the current trading halt, {TIME}.",
        "high_limit_price": f"Upper price limit of the trading band (limit up), {PRICE}.",
        "low_limit_price": f"Lower price limit of the trading band (limit down), {PRICE}.",
        "high_52_week_price": f"Highest price of the last 52 weeks, {PRICE}.",
        "low_52_week_price": f"Lowest price of the last 52 weeks, {PRICE}.",
        "beta": "Beta: the price's sensitivity to the market's (no unit); NaN: unknown.",
        "earnings_per_share": f"Earnings per share, {PRICE}.",
        "dividend_frequency": f"Dividend payments per year (4: quarterly); {COUNT}.",
        "ex_dividend_amount": f"Amount per share of the last dividend, {PRICE}.",
        "ex_dividend_day_id": f"Ex-dividend date of the last dividend, {DAY}.",
        "shares": f"Shares outstanding; {COUNT}.",
        "free_float": f"Shares available for public trading (free float); {COUNT}.",
    },
    "Greeks": {
        "time": f"When the greeks were computed, {TIME}.",
        "price": f"Market price of the option the greeks were computed from, {PRICE}.",
        "volatility": f"Implied volatility of the option, as {VOLATILITY}.",
        "theta": "Theta: change of the option price per calendar day that passes, in the "
        "instrument's currency (usually negative); NaN: unknown.",
        "rho": "Rho: change of the option price per percentage point rise of the interest "
        "rate, in the instrument's currency; NaN: unknown.",
        "vega": "Vega: change of the option price per percentage point rise of the "
        "volatility, in the instrument's currency; NaN: unknown.",
    },
    "TheoPrice": {
        "time": f"When the theoretical price was computed, {TIME}.",
        "price": f"Theoretical price of the option from the pricing model, {PRICE}.",
    },
    "Underlying": {
        "time": f"When the figures were computed, {TIME}.",
        "volatility": f"30-day implied volatility of the underlying, from its options, as "
        f"{VOLATILITY}.",
        "front_volatility": f"Implied volatility of the front (nearest) month, as {VOLATILITY}.",
        "back_volatility": f"Implied volatility of the back (next) month, as {VOLATILITY}.",
        "option_volume": f"Options traded today (calls and puts), in contracts; {COUNT}.",
    },
    "TimeAndSale": {
        "time": f"Time of the trade, {TIME}.",
        "buyer": "Buyer's id, where the exchange discloses it; ``None`` otherwise.",
        "seller": "Seller's id, where the exchange discloses it; ``None`` otherwise.",
    },
    "Candle": {
        "time": f"Start of the bar, {TIME}.",
        "count": "Number of trades in the bar; 0: unknown.",
        "open": f"First price of the bar, {PRICE}.",
        "high": f"Highest price of the bar, {PRICE}.",
        "low": f"Lowest price of the bar, {PRICE}.",
        "close": f"Last price of the bar (so far, for the live bar), {PRICE}.",
        "volume": f"Volume traded in the bar, {SIZE}.",
        "vwap": f"Volume-weighted average price of the bar, {PRICE}.",
        "bid_volume": f"Volume traded at the bid (sells) in the bar, {SIZE}.",
        "ask_volume": f"Volume traded at the ask (buys) in the bar, {SIZE}.",
        "imp_volatility": f"Implied volatility at the bar's end, as {VOLATILITY}.",
        "open_interest": "Open interest at the bar's end, in contracts; NaN: unknown.",
    },
    "Order": _ORDER,
    "SpreadOrder": {
        **{name: doc for name, doc in _ORDER.items() if name != "market_maker"},
        "spread_symbol": "Symbol of the spread (a multi-leg strategy) the order is for.",
    },
    "AnalyticOrder": {
        **_ORDER,
        "iceberg_peak_size": f"Displayed (peak) size of the iceberg order, {SIZE}.",
        "iceberg_hidden_size": f"Estimated hidden size of the iceberg order, {SIZE}.",
        "iceberg_executed_size": f"Executed size of the iceberg order so far, {SIZE}.",
        "iceberg_type": "``NATIVE`` (the exchange's own iceberg), ``SYNTHETIC`` (detected by "
        "dxFeed's analytics) or ``UNDEFINED`` (:class:`IcebergType`).",
    },
    "OptionSale": {
        "index": "Key of the sale within its symbol: a sale with the same ``index`` corrects "
        "(or, with ``REMOVE_EVENT``, removes) the earlier one.",
        "time": f"Time of the option trade, {TIME}.",
        "price": f"Price of the option trade, {PRICE}.",
        "size": "Size of the option trade, in contracts; NaN: unknown.",
        "bid_price": f"The option's best bid when it traded, {PRICE}.",
        "ask_price": f"The option's best ask when it traded, {PRICE}.",
        "underlying_price": f"Price of the underlying when the option traded, {PRICE}.",
        "volatility": f"Implied volatility of the option when it traded, as {VOLATILITY}.",
        "delta": "Delta of the option when it traded (-1 to 1); NaN: unknown.",
        "option_symbol": "Streamer symbol of the option traded (``event_symbol`` is the "
        "underlying when subscribed by underlying).",
    },
    "Series": {
        "index": "Key of the series within its symbol: one per expiration.",
        "time": f"When the figures were computed, {TIME}.",
        "expiration": f"Expiration date of the option series, {DAY}.",
        "volatility": f"Implied volatility of the series, as {VOLATILITY}.",
        "call_volume": f"Calls of this expiration traded today, in contracts; {COUNT}.",
        "put_volume": f"Puts of this expiration traded today, in contracts; {COUNT}.",
        "forward_price": f"Implied forward price of the underlying at the expiration, {PRICE}.",
    },
}


def field_doc(cls: type, name: str) -> str | None:
    """What field ``name`` of event class ``cls`` means, with its unit; ``None`` if unknown."""
    for klass in cls.__mro__:
        doc = BY_CLASS.get(klass.__name__, {}).get(name)
        if doc is not None:
            return doc
    return COMMON.get(name)


def _annotations(cls: type) -> dict[str, str]:
    """The fields of ``cls``: its own annotations in declaration order, then its bases'."""
    fields: dict[str, str] = {}
    for klass in cls.__mro__:
        for name, annotation in vars(klass).get("__annotations__", {}).items():
            if not name.isupper():  # EVENT_TYPE, WIRE_NAMES: class constants
                fields.setdefault(name, str(annotation))
    return fields


def fields_section(cls: type) -> str:
    """A napoleon ``Attributes:`` section for ``cls``'s fields (those with a documented
    meaning), indented to sit at the end of a class docstring."""
    lines = ["Attributes:"]
    for name, annotation in _annotations(cls).items():
        doc = field_doc(cls, name)
        if doc is None:
            continue
        entry = f"{name} ({annotation}): {doc}"
        lines += textwrap.wrap(entry, 92, initial_indent="    ", subsequent_indent="        ")
    return "\n".join(lines)


def document_fields(classes: Iterable[type]) -> None:
    """Append :func:`fields_section` to the docstring of each of ``classes`` (once)."""
    for cls in classes:
        doc, section = inspect.cleandoc(cls.__doc__ or ""), fields_section(cls)
        if not doc.endswith(section):
            cls.__doc__ = f"{doc}\n\n{section}\n"
