"""Which options the simulated market lists: strikes near the money, real expiration dates.

Pure rules shared by :meth:`Market.option_chain <trio_dxlink.testing.Market.option_chain>` and
the tastytrade fake's nested chains (``_tastytrade_chains.py``):

* **strikes** are centred on the underlying's current price, ten a side, with a step that
  suits its size (0.5 below 100, 1 below 200, 2.5 below 500, 5 below 1000, ...);
* **expirations** are the next three monthlies (third Fridays, moved to the Thursday before
  when NYSE is closed: :func:`trio_dxlink._expirations.third_friday`) and, for roots that have
  them, every Friday for the next ten weeks (a Friday whose monthly moved to Thursday is not
  listed again).
"""

from __future__ import annotations

import datetime
from decimal import Decimal

from .._expirations import third_friday

__all__ = ["HORIZON_DAYS", "STRIKES_EACH_SIDE", "expiration_dates", "strike_text", "strikes"]

HORIZON_DAYS = 70
"""Weeklies are listed this far out."""

STRIKES_EACH_SIDE = 10


def strike_text(strike: Decimal) -> str:
    """A strike as streamer symbols spell it (``500``, ``502.5``)."""
    return f"{strike.normalize():f}"


def strikes(mid: float) -> list[Decimal]:
    """Strikes around ``mid`` with a step that suits its size (1 for 100, 5 for 1000, ...)."""
    step = Decimal("0.5")
    for candidate in ("0.5", "1", "2.5", "5", "10", "25", "50", "100"):
        step = Decimal(candidate)
        if step * 200 >= Decimal(str(mid)):
            break
    centre = (Decimal(str(mid)) / step).to_integral_value() * step
    listed = (centre + step * k for k in range(-STRIKES_EACH_SIDE, STRIKES_EACH_SIDE + 1))
    return [strike for strike in listed if strike > 0]


def _fridays(today: datetime.date, days: int) -> list[datetime.date]:
    first = today + datetime.timedelta(days=(4 - today.weekday()) % 7)
    return [first + datetime.timedelta(weeks=k) for k in range(days // 7 + 1)]


def _monthlies(today: datetime.date, count: int) -> list[datetime.date]:
    out: list[datetime.date] = []
    year, month = today.year, today.month
    while len(out) < count:
        day = third_friday(year, month)
        if day >= today:
            out.append(day)
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    return out


def expiration_dates(today: datetime.date, weeklies: bool) -> list[tuple[datetime.date, bool]]:
    """(date, is the monthly) for every listed expiration from ``today`` on, in order."""
    monthly = set(_monthlies(today, 3))
    days = set(monthly)
    if weeklies:
        moved = {day + datetime.timedelta(days=1) for day in monthly if day.weekday() == 3}
        days.update(day for day in _fridays(today, HORIZON_DAYS) if day not in moved)
    return [(day, day in monthly) for day in sorted(days)]
