"""The simulated market's option-series events: ``OptionSale`` and ``Series``.

Builders called by :meth:`Market.step <trio_dxlink.testing.Market.step>` (they share its
state, so they live next to it rather than in it, to keep ``_market.py`` readable):

* ``OptionSale`` on an option symbol (``.SPY261218C600``) is a print of that option inside its
  quote; on a plain symbol (``SPY``) it is a print of one of that underlying's listed options
  near the money in its nearest expiration (``option_symbol`` says which), as dxFeed publishes
  an underlying's option sales under the underlying. Either way ``underlying_price``,
  ``volatility`` and ``delta`` are the underlying's state and the option's valuation at the
  time of sale; the option's own day volume grows.
* ``Series`` on a plain symbol is one expiration series of its option chain per event, taking
  the listed expirations in turn (``index`` is the series' expiration day id, so a table of
  them fills up); ``forward_price`` is the underlying carried at the market's rate to that
  expiration, the call/put volumes grow. An option symbol's ``Series`` describes its
  underlying's series.
"""

from __future__ import annotations

import datetime
import math
from typing import TYPE_CHECKING

from .._expirations import new_york_today
from ..events import OptionSale, Series
from ..symbols import OptionSymbol
from ._chain_rules import expiration_dates, strike_text, strikes
from ._instrument import DAY_MS, YEAR_MS, cents
from ._pricing import RATE

if TYPE_CHECKING:
    from ._market import Market

__all__ = ["option_sale", "series"]

_NEAR_THE_MONEY = 2  # an underlying's sales are of strikes this many steps from the money


def _listed_root(underlying: str) -> str:
    """The root of ``underlying``'s weekly options as streamer symbols spell them."""
    return "SPXW" if underlying == "SPX" else underlying.replace("/", "")


def _near_money_option(market: Market, underlying: str, now: int) -> str:
    """One of ``underlying``'s options near the money in the nearest listed expiration,
    drawn from its instrument's random stream (defined on the market, so it is priced)."""
    inst = market._state(underlying, now)
    today = new_york_today(now / 1000)
    day, _ = expiration_dates(today, True)[0]
    grid = strikes(inst.mid)
    centre = len(grid) // 2
    strike = grid[centre + inst.rng.randint(-_NEAR_THE_MONEY, _NEAR_THE_MONEY)]
    kind = inst.rng.choice("CP")
    root = _listed_root(underlying)
    name = f".{root}{day:%y%m%d}{kind}{strike_text(strike)}"
    if name not in market._options:
        market.define_option(name, OptionSymbol(root, day, kind, strike), underlying=underlying)
    return name


def option_sale(market: Market, symbol: str, now: int) -> OptionSale:
    """The next ``OptionSale`` of ``symbol`` (an option, or an underlying: module docstring)."""
    option = market.option(symbol)
    option_symbol = symbol if option is not None else _near_money_option(market, symbol, now)
    option = market.option(option_symbol)
    assert option is not None  # defined just above
    underlying = market.underlying(option_symbol, option)
    _, price, size, bid, ask = market._print(option_symbol, now)
    valuation = market._valuation(option_symbol, option, now)
    spot = market._state(underlying, now)
    event_time, index = market._stamp("OptionSale", symbol, now)
    return OptionSale(
        event_symbol=symbol,
        index=index,
        time=event_time,
        sequence=index & 0x3FFFFF,
        exchange_code="C",
        price=price,
        size=size,
        bid_price=bid,
        ask_price=ask,
        aggressor_side="BUY" if price >= (bid + ask) / 2 else "SELL",
        valid_tick=True,
        type="NEW",
        underlying_price=cents(spot.mid),
        volatility=spot.volatility,
        delta=round(valuation.delta, 6),
        option_symbol=option_symbol,
    )


def series(market: Market, symbol: str, now: int) -> Series:
    """The next ``Series`` of ``symbol``'s option chain (module docstring)."""
    option = market.option(symbol)
    underlying = symbol if option is None else market.underlying(symbol, option)
    inst = market._state(underlying, now)
    listed = expiration_dates(new_york_today(now / 1000), underlying != "SPX")
    turn = market._series_turns.get(symbol, 0)
    market._series_turns[symbol] = turn + 1
    day, _ = listed[turn % len(listed)]
    midnight = datetime.datetime.combine(day, datetime.time(tzinfo=datetime.timezone.utc))
    expiry_day_id = int(midnight.timestamp() * 1000) // DAY_MS
    years = max((int(midnight.timestamp() * 1000) + DAY_MS - now) / YEAR_MS, 0.0)
    inst.call_volume += inst.rng.randint(0, 50) * 10
    inst.put_volume += inst.rng.randint(0, 50) * 10
    event_time, _ = market._stamp("Series", symbol, now)
    # The volatility term structure: a little higher further out.
    volatility = round(inst.volatility * (1 + 0.1 * min(years, 1.0)), 4)
    return Series(
        event_symbol=symbol,
        index=expiry_day_id,
        time=event_time,
        sequence=turn & 0x3FFFFF,
        expiration=expiry_day_id,
        volatility=volatility,
        call_volume=inst.call_volume,
        put_volume=inst.put_volume,
        put_call_ratio=inst.put_volume / inst.call_volume if inst.call_volume else math.nan,
        forward_price=round(inst.mid * math.exp(RATE * years), 4),
        dividend=0.0,
        interest=RATE,
    )
