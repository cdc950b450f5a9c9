"""What the simulated market remembers about one symbol, and how its price moves."""

from __future__ import annotations

import math
import random

import attrs

__all__ = ["DAY_MS", "TRADING_YEAR_MS", "YEAR_MS", "Instrument", "cents"]

DAY_MS = 86_400_000
YEAR_MS = 365 * DAY_MS
"""A calendar year: what an option's time to expiry is measured in."""

TRADING_YEAR_MS = 252 * 6 * 3_600_000 + 252 * 30 * 60_000
"""A year of trading time (252 sessions of 6.5 hours): what an annualised volatility is quoted
in, and the clock the price walk runs on. The simulated market trades around the clock, so
each hour of it moves as a trading hour does (SPY's bid changes several times a second, as a
real one does), not as a calendar-year average with nights and weekends spread in would."""


def cents(price: float) -> float:
    """``price`` rounded to a cent."""
    return round(price, 2)


@attrs.define
class Instrument:
    """One symbol's state: its random walk, its trading day so far, its counters."""

    rng: random.Random
    mid: float
    volatility: float  # annualised, also the implied volatility of its options
    walked_at: int  # ms: the walk's position in time
    day_id: int
    prev_close: float
    day_open: float
    day_high: float
    day_low: float
    last_price: float = math.nan
    last_tick: str = "ZERO"
    day_volume: float = 0.0
    day_turnover: float = 0.0
    prev_day_volume: float = 0.0
    sequence: int = 0
    call_volume: float = 0.0
    put_volume: float = 0.0

    @classmethod
    def seeded(cls, rng: random.Random, now: int, *, mid: float | None, lot: int) -> Instrument:
        """A new instrument at ``mid`` (or a price drawn from ``rng``) at time ``now``; its
        reference data (previous close, volatility, volume in ``lot`` units) drawn from ``rng``.
        """
        seeded = cents(math.exp(rng.uniform(math.log(10), math.log(500))))
        price = seeded if mid is None else mid
        prev_close = max(0.01, cents(price * (1 + rng.gauss(0, 0.01))))
        return cls(
            rng=rng,
            mid=price,
            volatility=round(rng.uniform(0.15, 0.45), 4),
            walked_at=now,
            day_id=now // DAY_MS,
            prev_close=prev_close,
            day_open=cents(price),
            day_high=cents(max(price, prev_close)),
            day_low=cents(min(price, prev_close)),
            prev_day_volume=float(rng.randint(1_000, 50_000) * lot),
        )

    def walk(self, now: int) -> None:
        """Move the mid along its random walk to time ``now``."""
        elapsed = now - self.walked_at
        if elapsed > 0:
            sigma = self.volatility * math.sqrt(elapsed / TRADING_YEAR_MS)
            self.mid = max(0.01, self.mid * math.exp(self.rng.gauss(0.0, sigma)))
            self.walked_at = now

    def roll(self, now: int) -> None:
        """Start a new trading day when ``now`` is past the instrument's day."""
        day = now // DAY_MS
        if day > self.day_id:
            last = self.last_price if math.isfinite(self.last_price) else self.mid
            self.prev_close = cents(last)
            self.prev_day_volume = self.day_volume
            self.day_id = day
            self.day_open = self.day_high = self.day_low = cents(self.mid)
            self.day_volume = self.day_turnover = 0.0
            self.last_price = math.nan
