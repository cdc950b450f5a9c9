"""What the simulated market reads from a symbol: is it an option, a candle's period, its lot."""

from __future__ import annotations

import functools

from ..symbols import CandleSymbol, OptionSymbol, SymbolError
from ._instrument import DAY_MS

__all__ = ["bar_start", "candle_period_ms", "lot", "parse_option_symbol"]

_MINUTE_MS = 60_000
_WEEK_MS = 7 * DAY_MS
_FIRST_MONDAY_MS = 4 * DAY_MS  # 1970-01-05, where weekly candles are aligned


@functools.lru_cache(maxsize=4096)
def parse_option_symbol(symbol: str) -> OptionSymbol | None:
    """:meth:`OptionSymbol.parse <trio_dxlink.symbols.OptionSymbol.parse>`, or ``None`` if
    ``symbol`` is not an option's streamer symbol (``.SPY270115C600``)."""
    try:
        return OptionSymbol.parse(symbol)
    except SymbolError:
        return None


@functools.lru_cache(maxsize=4096)
def candle_period_ms(symbol: str) -> int:
    """The bar length of a candle symbol (``AAPL{=5m}`` → 300000).

    One minute if the symbol does not parse or its period has no fixed length (ticks, months;
    see :attr:`CandlePeriod.milliseconds <trio_dxlink.symbols.CandlePeriod.milliseconds>`).
    """
    try:
        period = CandleSymbol.parse(symbol).period
    except SymbolError:
        return _MINUTE_MS
    length = None if period is None else period.milliseconds
    return _MINUTE_MS if length is None else length


def lot(symbol: str) -> int:
    """Trade sizes come in lots: 1 contract for options, 100 shares otherwise."""
    return 1 if parse_option_symbol(symbol) else 100


def bar_start(time_ms: int, period_ms: int) -> int:
    if period_ms % _WEEK_MS == 0:
        return (time_ms - _FIRST_MONDAY_MS) // period_ms * period_ms + _FIRST_MONDAY_MS
    return time_ms // period_ms * period_ms
