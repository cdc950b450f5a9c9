"""Nested option chains for the local tastytrade fake, made from the simulated market.

Strikes are centred on the underlying's current mid in the :class:`Market`, and every streamer
symbol listed is taught to the market (:meth:`Market.define_option`) with its real underlying,
so Greeks, TheoPrice and Quotes streamed for it are priced from that underlying: ``.SPXW...``
from ``SPX``, ``./EW3Z24C5000:XCME`` from ``/ESZ24:XCME``.

Shapes follow tastytrade's replies: decimal strings, OCC symbols with roots padded to six
characters, ``.ROOTYYMMDD[C|P]STRIKE`` streamer symbols; futures with one-digit-year symbols and
two-digit-year streamer symbols with the exchange.
"""

from __future__ import annotations

import datetime
from decimal import Decimal
from typing import Any

from .._expirations import third_friday
from ._chain_rules import expiration_dates, strike_text, strikes
from ._market import Market, OptionSymbol

__all__ = ["equity_chain", "futures_chain"]

_MONTH_CODES = "FGHJKMNQUVXZ"
_QUARTER_MONTHS = (3, 6, 9, 12)
_EXCHANGES = {"CL": "XNYM", "NG": "XNYM", "GC": "XCEC", "SI": "XCEC"}
_TWO_ROOTS = {"SPX": (("SPX", "AM", False), ("SPXW", "PM", True))}
"""Underlyings with more than one option root: (root, settlement, has weeklies)."""


def _decimal_text(value: Decimal) -> str:
    text = strike_text(value)
    return text if "." in text else text + ".0"


def equity_chain(market: Market, symbol: str, today: datetime.date) -> dict[str, Any]:
    """The ``data`` of ``/option-chains/{symbol}/nested``: one item per root."""
    mid = market.mid(symbol)
    listed = strikes(mid)
    items = []
    # An option root is letters and digits: BRK/B's options are BRKB.
    plain_root = ((symbol.replace("/", ""), "PM", True),)
    for root, settlement, weeklies in _TWO_ROOTS.get(symbol, plain_root):
        expirations = []
        for day, is_monthly in expiration_dates(today, weeklies):
            rows = []
            for strike in listed:
                row: dict[str, str] = {"strike-price": _decimal_text(strike)}
                for kind, key in (("C", "call"), ("P", "put")):
                    yymmdd = day.strftime("%y%m%d")
                    occ = f"{root:<6}{yymmdd}{kind}{int(strike * 1000):08d}"
                    streamer = f".{root}{yymmdd}{kind}{strike_text(strike)}"
                    row[key] = occ
                    row[f"{key}-streamer-symbol"] = streamer
                    market.define_option(
                        streamer, OptionSymbol(root, day, kind, strike), underlying=symbol
                    )
                rows.append(row)
            expirations.append(
                {
                    "expiration-type": "Regular" if is_monthly else "Weekly",
                    "expiration-date": day.isoformat(),
                    "days-to-expiration": (day - today).days,
                    "settlement-type": settlement,
                    "strikes": rows,
                }
            )
        items.append(
            {
                "underlying-symbol": symbol,
                "root-symbol": root,
                "option-chain-type": "Standard",
                "shares-per-contract": 100,
                "tick-sizes": [{"value": "0.01", "threshold": "3.0"}, {"value": "0.05"}],
                "deliverables": [
                    {
                        "id": 1,
                        "root-symbol": root,
                        "deliverable-type": "Shares",
                        "description": f"100 shares of {symbol}",
                        "amount": "100.0",
                        "symbol": symbol,
                        "instrument-type": "Index" if symbol in _TWO_ROOTS else "Equity",
                        "percent": "100",
                    }
                ],
                "expirations": expirations,
            }
        )
    return {"items": items}


def _close_at(day: datetime.date, hour: int = 21) -> str:
    return f"{day.isoformat()}T{hour:02d}:00:00.000+00:00"


def futures_chain(
    market: Market, code: str, today: datetime.date, *, streamer_symbols: bool = True
) -> dict[str, Any]:
    """The ``data`` of ``/futures-option-chains/{code}/nested``: the next two quarterly
    futures of ``code`` and the options on them (the quarterly and the weekly Fridays)."""
    exchange = _EXCHANGES.get(code, "XCME")
    futures: list[tuple[datetime.date, str, str]] = []  # (expiry, symbol, streamer symbol)
    year, month = today.year, today.month
    while len(futures) < 2:
        if month in _QUARTER_MONTHS and third_friday(year, month) >= today:
            letter = _MONTH_CODES[month - 1]
            futures.append(
                (
                    third_friday(year, month),
                    f"/{code}{letter}{year % 10}",
                    f"/{code}{letter}{year % 100:02d}:{exchange}",
                )
            )
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    listed = []
    for index, (expiry, symbol, streamer) in enumerate(futures):
        entry = {
            "symbol": symbol,
            "root-symbol": f"/{code}",
            "expiration-date": expiry.isoformat(),
            "days-to-expiration": (expiry - today).days,
            "active-month": index == 0,
            "next-active-month": index == 1,
            "stops-trading-at": _close_at(expiry, 14),
            "expires-at": _close_at(expiry, 14),
        }
        if streamer_symbols:
            entry["streamer-symbol"] = streamer
        listed.append(entry)
    expirations = []
    days = {day for day, _ in expiration_dates(today, True)} | {f[0] for f in futures}
    for day in sorted(d for d in days if d <= futures[-1][0]):
        expiry, future, future_streamer = next(f for f in futures if f[0] >= day)
        quarterly = day == expiry
        root = code if quarterly else f"EW{min(4, (day.day - 1) // 7 + 1)}"
        letter = _MONTH_CODES[day.month - 1]
        contract = f"{root}{letter}{day.year % 10}"
        rows = []
        for strike in strikes(market.mid(future_streamer)):
            row = {"strike-price": _decimal_text(strike)}
            for kind, key in (("C", "call"), ("P", "put")):
                text = strike_text(strike)
                streamer = f"./{root}{letter}{day.year % 100:02d}{kind}{text}:{exchange}"
                row[key] = f".{future} {contract} {day.strftime('%y%m%d')}{kind}{text}"
                row[f"{key}-streamer-symbol"] = streamer
                market.define_option(
                    streamer,
                    OptionSymbol(root, day, kind, strike),
                    underlying=future_streamer,
                )
            rows.append(row)
        expirations.append(
            {
                "underlying-symbol": future,
                "root-symbol": f"/{code}",
                "option-root-symbol": root,
                "option-contract-symbol": contract,
                "asset": root,
                "expiration-date": day.isoformat(),
                "days-to-expiration": (day - today).days,
                "expiration-type": "Regular" if quarterly else "Weekly",
                "settlement-type": "AM" if quarterly else "PM",
                "notional-value": "0.5",
                "display-factor": "0.01",
                "strike-factor": "1.0",
                "stops-trading-at": _close_at(day),
                "expires-at": _close_at(day),
                "tick-sizes": [{"value": "0.05", "threshold": "5.0"}, {"value": "0.25"}],
                "strikes": rows,
            }
        )
    chain = {
        "underlying-symbol": f"/{code}",
        "root-symbol": f"/{code}",
        "exercise-style": "American",
        "expirations": expirations,
    }
    return {"futures": listed, "option-chains": [chain]}
