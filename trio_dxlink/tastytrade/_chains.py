"""Option chains from tastytrade's nested chain endpoints, and the helpers to pick from them.

* :func:`get_option_chain` reads ``GET /option-chains/{symbol}/nested`` (equities, ETFs and
  indexes; SPX has two roots, ``SPX`` and ``SPXW``, both kept);
* :func:`get_future_option_chain` reads ``GET /futures-option-chains/{code}/nested``.

Both return ``dict[date, list[OptionContract]]``: the contracts of each expiration, sorted by
strike, then calls before puts, then root. :func:`tasty_monthly` is tastytrade's "monthly
expiration closest to 45 days out"; :func:`monthly_expiration` finds it in a chain and
:func:`nearest_strikes` picks the strikes closest to a price.
"""

from __future__ import annotations

import datetime
import decimal
from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any

import attrs

from .._exceptions import TastytradeError
from .._expirations import tasty_monthly, third_friday
from .._tastytrade_tokens import parse_api_datetime
from ..symbols import occ_to_streamer
from ._session import TastytradeSession, quote_path

__all__ = [
    "OptionContract",
    "get_future_option_chain",
    "get_option_chain",
    "monthly_expiration",
    "nearest_strikes",
    "tasty_monthly",
    "third_friday",
]

Chain = dict[datetime.date, list["OptionContract"]]


@attrs.frozen
class OptionContract:
    """One option of a chain (a call or a put at one strike and expiration).

    Attributes:
        symbol: tastytrade's (OCC) symbol, e.g. ``"SPY   270115C00600000"`` or, for a future
            option, ``"./ESZ4 E3AZ4 241216C5000"``.
        streamer_symbol: the dxFeed symbol to subscribe to (``".SPY270115C600"``).
        root_symbol: the option root (``"SPXW"``; ``"/ES"`` for a future option).
        underlying_symbol: what it is an option on (``"SPX"``; the future, ``"/ESZ4"``).
        option_type: ``"C"`` or ``"P"``.
        strike_price: the strike.
        expiration: the expiration date.
        expiration_type: ``"Regular"`` (the monthly), ``"Weekly"``, ...
        settlement_type: ``"AM"`` or ``"PM"``.
        days_to_expiration: as tastytrade counted it when the chain was read.
        shares_per_contract: the multiplier of an equity option (``None`` for futures).
        option_root_symbol: a future option's own root (``"E3A"``; ``None`` for equities).
        exercise_style: ``"American"``/``"European"`` when the chain says.
        stops_trading_at: when a future option stops trading, when the chain says.
    """

    symbol: str
    streamer_symbol: str
    root_symbol: str
    underlying_symbol: str
    option_type: str
    strike_price: Decimal
    expiration: datetime.date
    expiration_type: str
    settlement_type: str
    days_to_expiration: int
    shares_per_contract: int | None = None
    option_root_symbol: str | None = None
    exercise_style: str | None = None
    stops_trading_at: datetime.datetime | None = None


# --- reading chains ---


async def get_option_chain(session: TastytradeSession, symbol: str) -> Chain:
    """The option chain of an equity, ETF or index (``"SPY"``, ``"SPX"``, ``"BRK/B"``).

    Raises:
        TastytradeError: the API failed (a 404 for an unknown symbol), or the chain is malformed.
    """
    data = await session.get_json(f"/option-chains/{quote_path(symbol)}/nested")
    chain: Chain = {}
    try:
        for item in _list(data, "items"):
            for expiration in _list(item, "expirations"):
                _add_strikes(
                    chain,
                    expiration,
                    root=str(item["root-symbol"]),
                    underlying=str(item["underlying-symbol"]),
                    shares_per_contract=int(item["shares-per-contract"]),
                )
    except (KeyError, TypeError, ValueError, decimal.InvalidOperation) as exc:
        raise _malformed(symbol, exc) from exc
    return _sorted(chain)


async def get_future_option_chain(session: TastytradeSession, symbol: str) -> Chain:
    """The options on a futures product (``"/ES"`` or ``"ES"``), every underlying contract.

    Raises:
        TastytradeError: the API failed, or the chain is malformed.
    """
    code = symbol.removeprefix("/")
    data = await session.get_json(f"/futures-option-chains/{quote_path(code)}/nested")
    chain: Chain = {}
    try:
        for item in _list(data, "option-chains"):
            for expiration in _list(item, "expirations"):
                _add_strikes(
                    chain,
                    expiration,
                    root=str(expiration.get("root-symbol") or item["root-symbol"]),
                    underlying=str(expiration["underlying-symbol"]),
                    option_root=str(expiration["option-root-symbol"]),
                    exercise_style=item.get("exercise-style"),
                    stops_trading_at=parse_api_datetime(expiration.get("stops-trading-at")),
                )
    except (KeyError, TypeError, ValueError, decimal.InvalidOperation) as exc:
        raise _malformed(symbol, exc) from exc
    return _sorted(chain)


def _list(data: Mapping[str, Any], key: str) -> list[Mapping[str, Any]]:
    value = data[key]
    if not isinstance(value, list) or not all(isinstance(entry, Mapping) for entry in value):
        raise TypeError(f"{key!r} is not a list of objects")
    return value


def _add_strikes(
    chain: Chain,
    expiration: Mapping[str, Any],
    *,
    root: str,
    underlying: str,
    shares_per_contract: int | None = None,
    option_root: str | None = None,
    exercise_style: object = None,
    stops_trading_at: float | None = None,
) -> None:
    day = datetime.date.fromisoformat(str(expiration["expiration-date"]))
    stops = (
        None
        if stops_trading_at is None
        else datetime.datetime.fromtimestamp(stops_trading_at, datetime.timezone.utc)
    )
    common = {
        "root_symbol": root,
        "underlying_symbol": underlying,
        "expiration": day,
        "expiration_type": str(expiration["expiration-type"]),
        "settlement_type": str(expiration["settlement-type"]),
        "days_to_expiration": int(expiration["days-to-expiration"]),
        "shares_per_contract": shares_per_contract,
        "option_root_symbol": option_root,
        "exercise_style": None if exercise_style is None else str(exercise_style),
        "stops_trading_at": stops,
    }
    contracts = chain.setdefault(day, [])
    for strike in _list(expiration, "strikes"):
        price = Decimal(str(strike["strike-price"]))  # a string on the wire; numbers work too
        for kind, key in (("C", "call"), ("P", "put")):
            symbol = str(strike[key])
            streamer = strike.get(f"{key}-streamer-symbol") or occ_to_streamer(symbol)
            contracts.append(
                OptionContract(
                    symbol=symbol,
                    streamer_symbol=str(streamer),
                    option_type=kind,
                    strike_price=price,
                    **common,  # type: ignore[arg-type]
                )
            )


def _sorted(chain: Chain) -> Chain:
    return {
        day: sorted(chain[day], key=lambda c: (c.strike_price, c.option_type, c.root_symbol))
        for day in sorted(chain)
    }


def _malformed(symbol: str, exc: BaseException) -> TastytradeError:
    detail = f"missing {exc}" if isinstance(exc, KeyError) else f"{type(exc).__name__}: {exc}"
    return TastytradeError(f"tastytrade's option chain for {symbol!r} is malformed ({detail})")


# --- picking from chains ---


def monthly_expiration(
    chain: Mapping[datetime.date, list[OptionContract]], today: datetime.date | None = None
) -> datetime.date:
    """The expiration of ``chain`` that is tastytrade's monthly (:func:`tasty_monthly`).

    If the chain does not list that date, the ``"Regular"`` (monthly) expiration nearest to
    it, or failing that any expiration nearest to it.

    Raises:
        ValueError: the chain is empty.
    """
    if not chain:
        raise ValueError("the chain has no expirations")
    target = tasty_monthly(today)
    if target in chain:
        return target
    regular = [
        day
        for day, contracts in chain.items()
        if any(c.expiration_type == "Regular" for c in contracts)
    ]
    return min(regular or list(chain), key=lambda day: (abs((day - target).days), day))


def nearest_strikes(
    contracts: Iterable[OptionContract], price: float | Decimal, count: int = 1
) -> list[OptionContract]:
    """The contracts at the ``count`` strikes closest to ``price`` (calls and puts alike),
    sorted by strike; ties go to the lower strike."""
    listed = list(contracts)
    target = Decimal(str(price))
    strikes = sorted({c.strike_price for c in listed}, key=lambda s: (abs(s - target), s))
    chosen = set(strikes[: max(0, count)])
    return sorted(
        (c for c in listed if c.strike_price in chosen),
        key=lambda c: (c.strike_price, c.option_type, c.root_symbol),
    )
