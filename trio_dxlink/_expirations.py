"""Option expiration dates as tastytrade reckons them: third Fridays and "the monthly".

Pure date arithmetic shared by :mod:`trio_dxlink.tastytrade` (which picks expirations from a
chain) and the local tastytrade fake (which lists them). The exchange calendar is reduced to
what can move a third Friday: Good Friday and Juneteenth (from 2022), when NYSE is closed and
the expiration moves to the Thursday before.
"""

from __future__ import annotations

import datetime
from zoneinfo import ZoneInfo

__all__ = ["new_york_today", "tasty_monthly", "third_friday"]

_NEW_YORK = ZoneInfo("America/New_York")


def new_york_today(now: float | None = None) -> datetime.date:
    """The date in New York at epoch seconds ``now`` (default: now)."""
    moment = (
        datetime.datetime.now(_NEW_YORK)
        if now is None
        else (datetime.datetime.fromtimestamp(now, _NEW_YORK))
    )
    return moment.date()


def _nyse_closed(day: datetime.date) -> bool:
    """Whether NYSE is closed on a Friday in the third week: Good Friday, or Juneteenth."""
    if day.year >= 2022 and (day.month, day.day) == (6, 19):
        return True
    return day == _easter(day.year) - datetime.timedelta(days=2)


def _easter(year: int) -> datetime.date:
    """Western Easter Sunday (the anonymous Gregorian algorithm)."""
    a, b, c = year % 19, year // 100, year % 100
    d, e = divmod(b, 4)
    g = (8 * b + 13) // 25
    h = (19 * a + b - d - g + 15) % 30
    i, k = divmod(c, 4)
    x = (32 + 2 * e + 2 * i - h - k) % 7
    m = (a + 11 * h + 22 * x) // 451
    month, day = divmod(h + x - 7 * m + 114, 31)
    return datetime.date(year, month, day + 1)


def third_friday(year: int, month: int) -> datetime.date:
    """The monthly expiration: the month's third Friday, or the trading day before it when
    the exchange is closed that day (Good Friday: April 2025 → 2025-04-17)."""
    day = datetime.date(year, month, 15)
    day += datetime.timedelta(days=(4 - day.weekday()) % 7)
    while _nyse_closed(day):
        day -= datetime.timedelta(days=1)
    return day


def tasty_monthly(today: datetime.date | None = None) -> datetime.date:
    """tastytrade's "monthly" expiration: the monthly closest to 45 days after ``today``.

    The candidates are the monthlies of the months 28 and 56 days out; the earlier wins when
    it is strictly closer to day 45 (``today``: default, the date in New York now).
    """
    if today is None:
        today = new_york_today()
    first = today + datetime.timedelta(days=28)
    second = today + datetime.timedelta(days=56)
    early = third_friday(first.year, first.month)
    late = third_friday(second.year, second.month)
    target = today + datetime.timedelta(days=45)
    return early if (target - early).days < (late - target).days else late
