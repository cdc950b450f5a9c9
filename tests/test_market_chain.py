"""The simulated market's well-known prices and option chains (pure: no server, no trio)."""

from __future__ import annotations

import datetime
import math

from trio_dxlink._expirations import third_friday
from trio_dxlink.events import OptionSale, Series
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


def test_option_sales_of_an_underlying_print_its_near_the_money_options() -> None:
    sim = market()
    spot = sim.mid("SPY")
    sales = [sim.step("OptionSale", "SPY") for _ in range(20)]
    assert all(isinstance(sale, OptionSale) for sale in sales)
    for sale in sales:
        assert isinstance(sale, OptionSale)
        assert sale.option_symbol is not None
        option = OptionSymbol.parse(sale.option_symbol)
        assert option.root == "SPY"
        assert option.expiration == datetime.date(2025, 4, 11)  # the nearest expiration
        assert abs(float(option.strike) - spot) <= 15
        assert sale.bid_price <= sale.price <= sale.ask_price
        assert sale.underlying_price == round(spot, 2)
        assert (0 < sale.delta < 1) if option.is_call else (-1 < sale.delta < 0)
        assert sale.event_symbol == "SPY"
    assert len({sale.index for sale in sales}) == 20
    assert sim.option(sales[0].option_symbol) is not None  # type: ignore[attr-defined, arg-type]
    # An option symbol's own sales are of that option.
    sale = sim.step("OptionSale", ".SPY250417C600")
    assert isinstance(sale, OptionSale)
    assert sale.option_symbol == ".SPY250417C600"
    assert 0.2 < sale.delta < 0.8


def test_series_take_the_listed_expirations_in_turn() -> None:
    sim = market()
    spot = sim.mid("SPY")
    expirations = sorted({o.expiration for o in map(OptionSymbol.parse, sim.option_chain("SPY"))})
    events = [sim.step("Series", "SPY") for _ in range(len(expirations) + 1)]
    assert all(isinstance(event, Series) for event in events)
    epoch = datetime.date(1970, 1, 1)
    days = [epoch + datetime.timedelta(days=event.expiration) for event in events]  # type: ignore[attr-defined]
    assert days == [*expirations, expirations[0]]  # then round again
    assert [event.index for event in events] == [event.expiration for event in events]  # type: ignore[attr-defined]
    forwards = [event.forward_price for event in events[:-1]]  # type: ignore[attr-defined]
    assert forwards == sorted(forwards)  # carried further for later expirations
    assert spot < forwards[0] < spot * 1.02
    last = events[-1]
    assert isinstance(last, Series)
    assert last.put_call_ratio == last.put_volume / last.call_volume
