"""Where the simulated market starts well-known symbols: plausible recent prices.

A symbol listed in :data:`REFERENCE_PRICES` starts its random walk at that price (so ``SPY``
is near 600, as a user expects, and its option chain's strikes are where real ones are); any
other symbol starts at a price drawn from the market's seed (10 to 500). The figures are round
numbers close to where these traded in 2025, not quotes: the walk moves away from them.
"""

from __future__ import annotations

__all__ = ["REFERENCE_PRICES"]

REFERENCE_PRICES: dict[str, float] = {
    # index ETFs and indices
    "SPY": 600.0,
    "QQQ": 520.0,
    "IWM": 220.0,
    "DIA": 430.0,
    "SPX": 6000.0,
    "NDX": 21000.0,
    "VIX": 16.0,
    # large caps
    "AAPL": 230.0,
    "MSFT": 420.0,
    "NVDA": 130.0,
    "AMZN": 200.0,
    "GOOGL": 170.0,
    "META": 580.0,
    "TSLA": 250.0,
    "AMD": 120.0,
    "NFLX": 900.0,
    "JPM": 240.0,
    "BRK/B": 470.0,
    "IBM": 230.0,
    # futures (dxFeed spelling of the continuous symbol)
    "/ES": 6000.0,
    "/NQ": 21000.0,
    "/CL": 70.0,
    "/GC": 2700.0,
}
"""Starting prices of well-known symbols (see the module docstring)."""
