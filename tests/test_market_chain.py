"""The simulated market's well-known prices and option chains (pure: no server, no trio)."""

from __future__ import annotations

import datetime
import math

from trio_dxlink._expirations import third_friday
from trio_dxlink.symbols import OptionSymbol
from trio_dxlink.testing import Market

NOW = datetime.datetime(2025, 4, 7, 15, 0, tzinfo=datetime.timezone.utc)  # a Monday


def market() -> Market:
    return Market(seed=3, clock=NOW.timestamp)


def test_well_known_symbols_start_near_their_reference_price() -> None:
    sim = market()
    assert 590 < sim.mid("SPY") < 610
    assert 5900 < sim.mid("SPX") < 6100
    assert 225 < sim.mid("AAPL") < 235
    other = sim.mid("ZZZQ")  # not listed: drawn from the seed
    assert 10 <= other <= 500


def test_the_chain_lists_near_the_money_strikes_on_real_expirations() -> None:
    sim = market()
    spot = sim.mid("SPY")
    chain = sim.option_chain("SPY")
    options = [OptionSymbol.parse(symbol) for symbol in chain]
    expirations = sorted({o.expiration for o in options})
    today = NOW.date()
    assert expirations[0] == datetime.date(2025, 4, 11)  # the coming Friday
    # April 2025's monthly moved to Thursday the 17th (Good Friday): listed, the Friday not
    assert third_friday(2025, 4) in expirations
    assert datetime.date(2025, 4, 18) not in expirations
    assert all(day >= today for day in expirations)
    strikes = sorted({float(o.strike) for o in options})
    assert len(strikes) == 21
    assert strikes[0] < spot < strikes[-1]
    assert all(abs(strike - spot) <= 0.1 * spot for strike in strikes)  # 5 apart near 600


def test_every_listed_option_has_sensible_greeks() -> None:
    sim = market()
    chain = sim.option_chain("SPY")
    for symbol in chain[:84]:  # the nearest expiration, both kinds
        greeks = sim.step("Greeks", symbol)
        option = OptionSymbol.parse(symbol)
        assert math.isfinite(greeks.price)
        assert greeks.price >= 0
        assert 0 <= abs(greeks.delta) <= 1
        assert (greeks.delta >= 0) == option.is_call
        assert greeks.volatility > 0


def test_spx_lists_its_pm_weeklies_on_spx_prices() -> None:
    sim = market()
    chain = sim.option_chain("SPX")
    roots = {OptionSymbol.parse(symbol).root for symbol in chain}
    assert roots == {"SPX", "SPXW"}
    weekly = next(symbol for symbol in chain if symbol.startswith(".SPXW"))
    assert sim.underlying(weekly, OptionSymbol.parse(weekly)) == "SPX"
    assert sim.step("Greeks", weekly).price > 0
