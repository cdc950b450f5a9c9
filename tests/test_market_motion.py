"""The simulated market moves at a rate a person can see (issue 13): over ten seconds of virtual
time, SPY's quotes change many times and stay near SPY's reference price."""

from __future__ import annotations

import itertools
import math
import statistics

import trio
import trio.testing

from trio_dxlink import Quote, open_dxlink
from trio_dxlink.testing import Market, ServerConfig, open_dxlink_server
from trio_dxlink.testing._instrument import TRADING_YEAR_MS, YEAR_MS
from trio_dxlink.testing._reference import REFERENCE_PRICES

EPOCH = 1_750_000_000.0  # a wall-clock second for virtual time 0


def changes(values: list[float]) -> int:
    return sum(1 for before, after in itertools.pairwise(values) if after != before)


async def test_spys_quotes_move_several_times_in_ten_seconds_near_the_reference(
    autojump_clock: trio.testing.MockClock,
) -> None:
    market = Market(seed=0, clock=lambda: EPOCH + trio.current_time())
    config = ServerConfig(simulate=True, update_interval=0.1)
    quotes: list[Quote] = []
    async with (
        open_dxlink_server(config=config, market=market, in_memory=True) as server,
        open_dxlink(server.url, connector=server.connector()) as feed,
        feed.subscribe(Quote, ["SPY"]) as rx,
    ):
        first = await rx.receive()
        end = trio.current_time() + 10.0
        with trio.move_on_at(end):
            async for quote in rx:
                quotes.append(quote)
        assert trio.current_time() >= end  # the ten seconds were virtual, not an early stop
    quotes.insert(0, first)
    assert len(quotes) >= 50  # a quote per update (0.1 s)
    bids = [q.bid_price for q in quotes]
    asks = [q.ask_price for q in quotes]
    assert changes(bids) >= 10, bids
    assert changes(asks) >= 10, asks
    # at least once every two seconds: no ten-second stretch of one price
    for n in range(0, len(bids) - 20, 20):
        assert len(set(bids[n : n + 20])) > 1, bids[n : n + 20]
    reference = REFERENCE_PRICES["SPY"]
    pairs = list(zip(bids, asks, strict=True))
    assert all(0.99 * reference < b < a < 1.01 * reference for b, a in pairs)
    assert all(a - b <= 0.002 * reference for b, a in pairs)  # a tight spread


def test_the_walk_runs_in_trading_time() -> None:
    """Annualised volatility is per trading year (252 sessions of 6.5 h), so an hour of the
    simulated market moves as a trading hour does."""
    assert TRADING_YEAR_MS == 252 * 6.5 * 3_600_000
    clock = [EPOCH]
    market = Market(seed=5, clock=lambda: clock[0])
    start = market.mid("SPY")
    moves = []
    for _ in range(2000):
        clock[0] += 1.0
        moves.append(market.mid("SPY"))
    # One-second log moves have the spread of the volatility over a trading second.
    logs = [math.log(b / a) for a, b in itertools.pairwise([start, *moves])]
    measured = statistics.pstdev(logs) * math.sqrt(TRADING_YEAR_MS / 1000)
    volatility = market._instruments["SPY"].volatility
    assert 0.9 * volatility < measured < 1.1 * volatility, (measured, volatility)
    assert YEAR_MS > TRADING_YEAR_MS
