"""A small, deterministic simulated market for the local DXLink server.

:class:`Market` makes up plausible, internally consistent data for *any* symbol:

* every plain symbol has a mid price that follows a random walk in wall-clock time, seeded from
  the market's ``seed`` and the symbol (``zlib.crc32``, never Python's randomised ``hash``);
* ``Quote`` brackets the mid (``bid < ask``), ``Trade`` and ``TimeAndSale`` print between bid and
  ask and add to the day's volume, ``Summary`` reports the day's open/high/low/last consistently
  with those prints, ``Profile`` holds fixed reference data;
* option symbols such as ``.SPY270115C600`` are priced with Black-Scholes from their underlying's
  mid (``TheoPrice``, ``Greeks``, and ``Quote`` around the theoretical price); the underlying is
  the option's root;
* ``OptionSale`` and ``Series`` (an option's prints, an underlying's expiration series) are
  built in ``_option_events.py``;
* candle symbols such as ``AAPL{=5m}`` or ``AAPL{=1d,tho=true}`` get OHLC bars of that period:
  :meth:`Market.history` builds them backwards from the live bar, :meth:`Market.step` updates the
  live bar.

The walk moves with the injected ``clock`` (seconds since the epoch, ``time.time`` by default):
two updates at the same instant see the same mid, so a ``Trade`` always prints inside the
``Quote`` of the same instant. The same seed and the same clock readings give the same events.

Events the server publishes are recorded here too (:meth:`Market.update`): the latest value per
(type, symbol) and, for time-series types, a bounded history keyed by ``index``.
"""

from __future__ import annotations

import datetime
import math
import random
import time
import zlib
from collections.abc import Callable

import attrs

from .._expirations import new_york_today
from ..events import (
    Candle,
    Event,
    Greeks,
    Profile,
    Quote,
    Summary,
    TheoPrice,
    TimeAndSale,
    TimeSeriesEvent,
    Trade,
    TradeETH,
    Underlying,
    index_from_time,
)
from ..symbols import OptionSymbol, base_symbol
from ._chain_rules import expiration_dates, strike_text, strikes
from ._instrument import TRADING_YEAR_MS, YEAR_MS, Instrument, cents
from ._market_symbols import bar_start, candle_period_ms, lot, parse_option_symbol
from ._option_events import option_sale, series
from ._pricing import RATE, Valuation, black_scholes
from ._reference import REFERENCE_PRICES

__all__ = [
    "SIMULATED_TYPES",
    "Market",
    "OptionSymbol",
    "candle_period_ms",
    "parse_option_symbol",
]

_SECOND_MS = 1000
_MINUTE_MS = 60 * _SECOND_MS
_EXPIRY_CLOSE_MS = 21 * 3_600_000  # options expire at 16:00 New York, about 21:00 UTC
_SERIES_LIMIT = 10_000  # time-series events kept per (type, symbol)

SIMULATED_TYPES: frozenset[str] = frozenset(
    {
        "Quote",
        "Trade",
        "TradeETH",
        "Summary",
        "Profile",
        "Greeks",
        "TheoPrice",
        "Underlying",
        "TimeAndSale",
        "Candle",
        "OptionSale",
        "Series",
    }
)
"""Event types :meth:`Market.step` can simulate."""


class Market:
    """A deterministic simulated market for any symbol (see the module docstring).

    Args:
        seed: makes every symbol's walk different; the same seed gives the same market.
        clock: wall-clock seconds since the epoch for event timestamps and the walk
            (``time.time`` by default); pin it for fully deterministic tests.
    """

    def __init__(self, seed: int = 0, clock: Callable[[], float] = time.time) -> None:
        self.seed = seed
        self.clock = clock
        self._instruments: dict[str, Instrument] = {}
        self._latest: dict[tuple[str, str], Event] = {}
        self._series: dict[tuple[str, str], dict[int, TimeSeriesEvent]] = {}
        self._stamps: dict[tuple[str, str], tuple[int, int]] = {}
        self._options: dict[str, OptionSymbol] = {}
        self._underlyings: dict[str, str] = {}
        self._series_turns: dict[str, int] = {}  # which expiration a symbol's next Series is

    def __repr__(self) -> str:
        return f"Market(seed={self.seed}, symbols={len(self._instruments)})"

    # --- public API ---

    def now_ms(self) -> int:
        """The clock's current time in epoch milliseconds."""
        return int(self.clock() * 1000)

    def mid(self, symbol: str) -> float:
        """The current mid price of ``symbol`` (the theoretical price for an option)."""
        now = self.now_ms()
        return self._state(symbol, now).mid

    def set_mid(self, symbol: str, price: float) -> None:
        """Move the mid price of a plain (non-option, non-candle) symbol to ``price``."""
        if not price > 0:
            raise ValueError(f"price must be positive, got {price!r}")
        if self.option(symbol) is not None or "{" in symbol:
            raise ValueError(f"{symbol!r} is priced from its underlying; set that one's mid")
        self._instrument(symbol, self.now_ms(), mid=price).mid = price

    def define_option(self, symbol: str, option: OptionSymbol, *, underlying: str) -> None:
        """Price ``symbol`` as ``option`` on ``underlying`` (the symbol whose mid it follows).

        For symbols whose root is not the underlying (``.SPXW...`` options are on ``SPX``) or
        that are not equity-option symbols at all (a future option such as
        ``./E3AZ24C5000:XCME`` on ``/ESZ24:XCME``).
        """
        self._options[symbol] = option
        self._underlyings[symbol] = underlying

    def option(self, symbol: str) -> OptionSymbol | None:
        """How ``symbol`` is priced as an option (``None``: it is not one)."""
        defined = self._options.get(symbol)
        return defined if defined is not None else parse_option_symbol(symbol)

    def underlying(self, symbol: str, option: OptionSymbol) -> str:
        """The symbol whose price the option ``symbol`` follows (its root unless defined)."""
        return self._underlyings.get(symbol, option.root)

    def latest(self, event_type: str, symbol: str) -> Event | None:
        """The last event recorded for (type, symbol), published or simulated; else ``None``."""
        return self._latest.get((event_type, symbol))

    def update(self, event: Event) -> None:
        """Record a published event: it becomes the latest value, and joins the history.

        A time-series event is stored by ``index`` (a ``REMOVE_EVENT`` one deletes that
        index). A ``Quote`` with finite prices on a plain symbol also moves its mid.
        """
        key = (event.EVENT_TYPE, event.event_symbol)
        if isinstance(event, TimeSeriesEvent):
            series = self._series.setdefault(key, {})
            if event.remove_event:
                series.pop(event.index, None)
            else:
                series[event.index] = event
                if len(series) > _SERIES_LIMIT:
                    del series[min(series)]
        self._latest[key] = event
        if (
            isinstance(event, Quote)
            and math.isfinite(event.bid_price)
            and math.isfinite(event.ask_price)
            and event.bid_price > 0
            and self.option(event.event_symbol) is None
            and "{" not in event.event_symbol
        ):
            self._instrument(event.event_symbol, self.now_ms()).mid = (
                event.bid_price + event.ask_price
            ) / 2

    def series(self, event_type: str, symbol: str, from_time_ms: int = 0) -> list[TimeSeriesEvent]:
        """Recorded time-series events of (type, symbol) with ``time >= from_time_ms``, oldest
        first."""
        series = self._series.get((event_type, symbol), {})
        return [series[i] for i in sorted(series) if series[i].time >= from_time_ms]

    def step(self, event_type: str, symbol: str) -> Event:
        """Simulate the next update of (type, symbol), record it and return it.

        Raises:
            ValueError: ``event_type`` is not in :data:`SIMULATED_TYPES`.
        """
        builder = _BUILDERS.get(event_type)
        if builder is None:
            raise ValueError(f"the market cannot simulate {event_type!r} events")
        event = builder(self, symbol, self.now_ms())
        self.update(event)
        return event

    def option_chain(self, symbol: str, *, today: datetime.date | None = None) -> list[str]:
        """The streamer symbols of ``symbol``'s listed options, nearest expiration first.

        Strikes near ``symbol``'s current price; expirations from ``today`` (default: the
        date in New York by the market's clock) on real calendar rules: the next three
        monthlies and ten weeks of Fridays (``_chain_rules.py``). Any option symbol is priced
        (these are just the ones a real chain would list): ``SPY`` near 600 gives
        ``.SPY<yymmdd>C600`` with sensible Greeks. ``SPX`` lists ``SPXW`` weeklies too.
        """
        if today is None:
            today = new_york_today(self.clock())
        listed = []
        roots = (("SPX", False), ("SPXW", True)) if symbol == "SPX" else ((symbol, True),)
        grid = strikes(self.mid(symbol))
        for root, weeklies in roots:
            for day, _ in expiration_dates(today, weeklies):
                for strike in grid:
                    for kind in "CP":
                        name = f".{root.replace('/', '')}{day:%y%m%d}{kind}{strike_text(strike)}"
                        option = OptionSymbol(root.replace("/", ""), day, kind, strike)
                        self.define_option(name, option, underlying=symbol)
                        listed.append(name)
        return listed

    def history(
        self, symbol: str, from_time_ms: int, now_ms: int, *, limit: int | None = None
    ) -> list[Candle]:
        """Candle bars of ``symbol`` starting at or after ``from_time_ms`` up to the live bar at
        ``now_ms``, oldest first.

        Bars are built backwards from the live bar (each bar closes where the next one opens) and
        recorded, so asking again returns the same bars. ``limit`` keeps only the newest bars.
        """
        period = candle_period_ms(symbol)
        live = self._live_candle(symbol, now_ms)
        stored = self._series.setdefault(("Candle", symbol), {})
        bars: list[Candle] = []
        newer = live
        if live.time >= from_time_ms:
            bars.append(live)
        start = live.time - period
        while start >= from_time_ms and (limit is None or len(bars) < limit):
            bar = stored.get(index_from_time(start))
            if not isinstance(bar, Candle):
                bar = self._make_bar(symbol, start, period, close=newer.open)
                self.update(bar)
            bars.append(bar)
            newer = bar
            start -= period
        bars.reverse()
        return bars

    # --- state ---

    def _rng(self, *parts: object) -> random.Random:
        text = ":".join(str(part) for part in (self.seed, *parts))
        return random.Random(zlib.crc32(text.encode()))

    def _instrument(self, symbol: str, now: int, mid: float | None = None) -> Instrument:
        """The state of ``symbol``, created on first use (at ``mid``, or a seeded price)."""
        inst = self._instruments.get(symbol)
        if inst is None:
            rng = self._rng("instrument", symbol)
            if mid is None:
                mid = REFERENCE_PRICES.get(symbol)
            inst = Instrument.seeded(rng, now, mid=mid, lot=lot(symbol))
            self._instruments[symbol] = inst
        return inst

    def _state(self, symbol: str, now: int) -> Instrument:
        """The instrument of ``symbol`` with its mid brought to ``now``.

        A candle symbol follows its base symbol; an option has its own state (volume, day range)
        whose mid is the Black-Scholes price from its underlying.
        """
        option = self.option(symbol)
        if option is None:
            inst = self._instrument(base_symbol(symbol), now)
            inst.walk(now)
            inst.roll(now)
            inst.day_high = max(inst.day_high, cents(inst.mid))
            inst.day_low = min(inst.day_low, cents(inst.mid))
            return inst
        theo = self._valuation(symbol, option, now).price
        inst = self._instrument(symbol, now, mid=theo)
        inst.mid = theo
        inst.walked_at = now
        inst.roll(now)
        return inst

    def _valuation(self, symbol: str, option: OptionSymbol, now: int) -> Valuation:
        underlying = self._instrument(self.underlying(symbol, option), now)
        underlying.walk(now)
        midnight = datetime.time(tzinfo=datetime.timezone.utc)
        expiry = datetime.datetime.combine(option.expiration, midnight)
        expiry_ms = int(expiry.timestamp() * 1000) + _EXPIRY_CLOSE_MS
        years = (expiry_ms - now) / YEAR_MS
        return black_scholes(
            underlying.mid, float(option.strike), years, underlying.volatility, option.is_call
        )

    def _stamp(self, event_type: str, symbol: str, now: int) -> tuple[int, int]:
        """A (time, index) for a new time-series event, unique per (type, symbol)."""
        key = (event_type, symbol)
        last_time, last_sequence = self._stamps.get(key, (-1, 0))
        sequence = last_sequence + 1 if now == last_time else 0
        self._stamps[key] = (now, sequence)
        return now, index_from_time(now, sequence & 0x3FFFFF)

    # --- builders ---

    def _bid_ask(self, symbol: str, inst: Instrument) -> tuple[float, float]:
        wide = self.option(symbol) is not None
        half = max(0.01, cents(inst.mid * (0.02 if wide else 0.0001)))
        bid = max(0.0, cents(inst.mid - half))
        ask = max(cents(inst.mid + half), bid + 0.01)
        return bid, cents(ask)

    def _quote(self, symbol: str, now: int) -> Quote:
        inst = self._state(symbol, now)
        bid, ask = self._bid_ask(symbol, inst)
        inst.sequence += 1
        return Quote(
            event_symbol=symbol,
            sequence=inst.sequence,
            bid_time=now // 1000 * 1000,
            bid_exchange_code="Q",
            bid_price=bid,
            bid_size=float(inst.rng.randint(1, 50) * 100),
            ask_time=now // 1000 * 1000,
            ask_exchange_code="Q",
            ask_price=ask,
            ask_size=float(inst.rng.randint(1, 50) * 100),
        )

    def _print(self, symbol: str, now: int) -> tuple[Instrument, float, float, float, float]:
        """A trade print inside the current bid/ask: (state, price, size, bid, ask)."""
        inst = self._state(symbol, now)
        bid, ask = self._bid_ask(symbol, inst)
        price = min(max(cents(inst.rng.uniform(bid, ask)), bid), ask)
        size = float(inst.rng.randint(1, 20) * lot(symbol))
        if math.isfinite(inst.last_price) and price != inst.last_price:
            inst.last_tick = "UP" if price > inst.last_price else "DOWN"
        inst.last_price = price
        inst.day_volume += size
        inst.day_turnover += price * size
        inst.day_high = max(inst.day_high, price)
        inst.day_low = min(inst.day_low, price)
        inst.sequence += 1
        return inst, price, size, bid, ask

    def _trade(self, symbol: str, now: int, cls: type[Trade] | type[TradeETH] = Trade) -> Event:
        inst, price, size, _, _ = self._print(symbol, now)
        return cls(
            event_symbol=symbol,
            time=now,
            sequence=inst.sequence,
            exchange_code="Q",
            price=price,
            change=cents(price - inst.prev_close),
            size=size,
            day_id=inst.day_id,
            day_volume=inst.day_volume,
            day_turnover=round(inst.day_turnover, 2),
            tick_direction=inst.last_tick,
            extended_trading_hours=cls is TradeETH,
        )

    def _trade_eth(self, symbol: str, now: int) -> Event:
        return self._trade(symbol, now, TradeETH)

    def _time_and_sale(self, symbol: str, now: int) -> TimeAndSale:
        _, price, size, bid, ask = self._print(symbol, now)
        event_time, index = self._stamp("TimeAndSale", symbol, now)
        return TimeAndSale(
            event_symbol=symbol,
            index=index,
            time=event_time,
            sequence=index & 0x3FFFFF,
            exchange_code="Q",
            price=price,
            size=size,
            bid_price=bid,
            ask_price=ask,
            aggressor_side="BUY" if price >= (bid + ask) / 2 else "SELL",
            valid_tick=True,
            type="NEW",
        )

    def _summary(self, symbol: str, now: int) -> Summary:
        inst = self._state(symbol, now)
        option = self.option(symbol)
        return Summary(
            event_symbol=symbol,
            day_id=inst.day_id,
            day_open_price=inst.day_open,
            day_high_price=inst.day_high,
            day_low_price=inst.day_low,
            day_close_price=inst.last_price,
            day_close_price_type="REGULAR",
            prev_day_id=inst.day_id - 1,
            prev_day_close_price=inst.prev_close,
            prev_day_close_price_type="FINAL",
            prev_day_volume=inst.prev_day_volume,
            open_interest=self._rng("oi", symbol).randint(100, 50_000) if option else 0,
        )

    def _profile(self, symbol: str, now: int) -> Profile:
        inst = self._state(symbol, now)
        rng = self._rng("profile", symbol)
        option = self.option(symbol)
        if option is not None:
            kind = "Call" if option.is_call else "Put"
            description = f"{option.root} {option.expiration.isoformat()} {option.strike:f} {kind}"
        else:
            description = f"{base_symbol(symbol)} Simulated Instrument"
        return Profile(
            event_symbol=symbol,
            description=description,
            short_sale_restriction="INACTIVE",
            trading_status="ACTIVE",
            high_limit_price=cents(inst.mid * 1.1),
            low_limit_price=cents(inst.mid * 0.9),
            high_52_week_price=cents(max(inst.mid, inst.day_high) * rng.uniform(1.05, 1.6)),
            low_52_week_price=cents(min(inst.mid, inst.day_low) * rng.uniform(0.5, 0.95)),
            beta=round(rng.uniform(0.5, 1.8), 2),
            earnings_per_share=round(rng.uniform(-2.0, 12.0), 2),
            dividend_frequency=4.0,
            ex_dividend_amount=round(rng.uniform(0.0, 1.5), 2),
            ex_dividend_day_id=inst.day_id - rng.randint(1, 90),
            shares=float(rng.randint(10, 5_000) * 1_000_000),
            free_float=float(rng.randint(5, 4_000) * 1_000_000),
        )

    def _option_figures(self, symbol: str, now: int) -> tuple[float, Valuation]:
        """(underlying price, valuation); a non-option is valued as the underlying itself."""
        option = self.option(symbol)
        if option is not None:
            return (
                self._state(self.underlying(symbol, option), now).mid,
                self._valuation(symbol, option, now),
            )
        inst = self._state(symbol, now)
        return inst.mid, Valuation(inst.mid, 1.0, 0.0, 0.0, 0.0, 0.0)

    def _greeks(self, symbol: str, now: int) -> Greeks:
        _, value = self._option_figures(symbol, now)
        option = self.option(symbol)
        vol = self._state(self.underlying(symbol, option) if option else symbol, now).volatility
        event_time, index = self._stamp("Greeks", symbol, now)
        return Greeks(
            event_symbol=symbol,
            index=index,
            time=event_time,
            sequence=index & 0x3FFFFF,
            price=round(value.price, 4),
            volatility=vol,
            delta=round(value.delta, 6),
            gamma=round(value.gamma, 6),
            theta=round(value.theta, 6),
            rho=round(value.rho, 6),
            vega=round(value.vega, 6),
        )

    def _theo_price(self, symbol: str, now: int) -> TheoPrice:
        spot, value = self._option_figures(symbol, now)
        event_time, index = self._stamp("TheoPrice", symbol, now)
        return TheoPrice(
            event_symbol=symbol,
            index=index,
            time=event_time,
            sequence=index & 0x3FFFFF,
            price=round(value.price, 4),
            underlying_price=round(spot, 4),
            delta=round(value.delta, 6),
            gamma=round(value.gamma, 6),
            dividend=0.0,
            interest=RATE,
        )

    def _underlying(self, symbol: str, now: int) -> Underlying:
        inst = self._state(symbol, now)
        inst.call_volume += inst.rng.randint(0, 50) * 10
        inst.put_volume += inst.rng.randint(0, 50) * 10
        event_time, index = self._stamp("Underlying", symbol, now)
        total = inst.call_volume + inst.put_volume
        return Underlying(
            event_symbol=symbol,
            index=index,
            time=event_time,
            sequence=index & 0x3FFFFF,
            volatility=inst.volatility,
            front_volatility=round(inst.volatility * 0.95, 4),
            back_volatility=round(inst.volatility * 1.05, 4),
            call_volume=inst.call_volume,
            put_volume=inst.put_volume,
            option_volume=total,
            put_call_ratio=inst.put_volume / inst.call_volume if inst.call_volume else math.nan,
        )

    def _make_bar(self, symbol: str, start: int, period: int, *, close: float) -> Candle:
        """A finished bar starting at ``start`` that closes at ``close``."""
        rng = self._rng("candle", symbol, start)
        vol = self._instrument(base_symbol(symbol), start).volatility
        sigma = vol * math.sqrt(period / TRADING_YEAR_MS)  # as the live walk moves
        open_ = max(0.01, cents(close * math.exp(-rng.gauss(0.0, sigma))))
        high = max(open_, close, cents(max(open_, close) * (1 + abs(rng.gauss(0, sigma / 2)))))
        low = min(open_, close, cents(min(open_, close) * (1 - abs(rng.gauss(0, sigma / 2)))))
        low = max(low, 0.01)
        volume = float(rng.randint(1, 500) * 100)
        bid_volume = float(round(volume * rng.uniform(0.3, 0.7)))
        return Candle(
            event_symbol=symbol,
            index=index_from_time(start),
            time=start,
            count=rng.randint(1, 200),
            open=open_,
            high=high,
            low=low,
            close=close,
            volume=volume,
            vwap=round((high + low + close) / 3, 4),
            bid_volume=bid_volume,
            ask_volume=volume - bid_volume,
        )

    def _live_candle(self, symbol: str, now: int) -> Candle:
        """The bar of ``symbol`` covering ``now``, made (and recorded) if it does not exist."""
        period = candle_period_ms(symbol)
        start = bar_start(now, period)
        bar = self._series.get(("Candle", symbol), {}).get(index_from_time(start))
        if isinstance(bar, Candle):
            return bar
        close = cents(self._state(symbol, now).mid)
        bar = self._make_bar(symbol, start, period, close=close)
        self.update(bar)
        return bar

    def _candle(self, symbol: str, now: int) -> Candle:
        period = candle_period_ms(symbol)
        start = bar_start(now, period)
        stored = self._series.get(("Candle", symbol), {})
        price = cents(self._state(symbol, now).mid)
        inst = self._instrument(base_symbol(symbol), now)
        lot = float(inst.rng.randint(1, 20) * 100)
        bar = stored.get(index_from_time(start))
        if isinstance(bar, Candle):
            volume = bar.volume + lot
            return attrs.evolve(
                bar,
                event_flags=0,
                close=price,
                high=max(bar.high, price),
                low=min(bar.low, price),
                count=bar.count + 1,
                volume=volume,
                vwap=round((bar.vwap * bar.volume + price * lot) / volume, 4),
                ask_volume=bar.ask_volume + lot,
            )
        previous = stored[max(stored)] if stored else None
        open_ = previous.close if isinstance(previous, Candle) else price
        return Candle(
            event_symbol=symbol,
            index=index_from_time(start),
            time=start,
            count=1,
            open=open_,
            high=max(open_, price),
            low=min(open_, price),
            close=price,
            volume=lot,
            vwap=price,
            bid_volume=0.0,
            ask_volume=lot,
        )


_Builder = Callable[[Market, str, int], Event]

_BUILDERS: dict[str, _Builder] = {
    "Quote": Market._quote,
    "Trade": Market._trade,
    "TradeETH": Market._trade_eth,
    "TimeAndSale": Market._time_and_sale,
    "Summary": Market._summary,
    "Profile": Market._profile,
    "Greeks": Market._greeks,
    "TheoPrice": Market._theo_price,
    "Underlying": Market._underlying,
    "Candle": Market._candle,
    "OptionSale": option_sale,
    "Series": series,
}
