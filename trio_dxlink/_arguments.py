"""The rules for times and symbols users pass to the feed: one home for each (pure).

**Times** (``from_time``, ``start``, ``end``) are an aware :class:`~datetime.datetime` or an
epoch time in **milliseconds** (an ``int``), the unit DXLink uses:

* a naive ``datetime`` is refused (it has no time zone, so it names no instant): use
  ``datetime.now(timezone.utc)`` or attach a ``tzinfo``;
* an integer from 1 up to :data:`SECONDS_LIMIT` (``100_000_000_000``, which in milliseconds is
  1973-03-03) can only be seconds, since no market data is that old: it is refused with a
  message saying to multiply by 1000. ``0`` is allowed and means "from the earliest data";
* negative numbers, ``bool``, ``float`` and anything else are refused.

Refusals are :class:`ValueError` / :class:`TypeError` raised where the call is made, before
anything is sent.

**Targets** of ``open_dxlink`` are a ``ws://``/``wss://`` URL (with an optional token) or a
token source (:func:`token_source_for`); its timeouts must be positive (:func:`require_positive`).

**Candle symbols** are parsed with :class:`~trio_dxlink.symbols.CandleSymbol` when a Candle
subscription is made, so ``AAPL{=xyz}`` fails at once with the parser's
:class:`~trio_dxlink.SymbolError` rather than as an empty stream later.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterable

from ._tokens import FixedToken, TokenSource, as_token_source
from .events import Candle, Event
from .symbols import CandleSymbol

__all__ = ["SECONDS_LIMIT", "TimeLike", "check_symbols_for", "datetime_of", "epoch_ms", "now_ms"]

TimeLike = "dt.datetime | int"
"""What a time argument may be: an aware datetime, or epoch milliseconds."""

SECONDS_LIMIT = 100_000_000_000
"""Integers from 1 below this are refused as times: in milliseconds they would be before
1973-03-03, so they can only be seconds."""


def now_ms() -> int:
    """The wall-clock time now, in epoch milliseconds."""
    return int(time.time() * 1000)


def epoch_ms(value: dt.datetime | int, what: str = "time") -> int:
    """``value`` (an aware datetime or epoch milliseconds) as epoch milliseconds.

    Raises:
        TypeError: ``value`` is neither an ``int`` nor a ``datetime``.
        ValueError: a naive datetime, a negative number, or a number that can only be seconds.
    """
    if isinstance(value, dt.datetime):
        if value.tzinfo is None or value.tzinfo.utcoffset(value) is None:
            raise ValueError(
                f"{what} is a naive datetime ({value.isoformat()}): it names no instant;"
                " give it a time zone, e.g. datetime.now(timezone.utc)"
            )
        return int(value.timestamp() * 1000)
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(
            f"{what} must be an aware datetime or epoch milliseconds (int),"
            f" got {type(value).__name__}"
        )
    if value < 0:
        raise ValueError(f"{what} must not be negative, got {value}")
    if 0 < value < SECONDS_LIMIT:
        raise ValueError(
            f"{what}={value} looks like epoch seconds ({datetime_of(value * 1000):%Y-%m-%d});"
            f" DXLink times are milliseconds: pass {value * 1000} (or an aware datetime)"
        )
    return value


def datetime_of(ms: int) -> dt.datetime:
    """An epoch-millisecond time (``event.time``, ``event.event_time``, ...) as an aware UTC
    :class:`~datetime.datetime`."""
    return dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc) + dt.timedelta(milliseconds=ms)


def check_symbols_for(event_type: type[Event], symbols: Iterable[str]) -> None:
    """Refuse malformed candle symbols (the parser's :class:`~trio_dxlink.SymbolError`)."""
    if issubclass(event_type, Candle):
        for symbol in symbols:
            if symbol != "*":
                CandleSymbol.parse(symbol)


def token_source_for(target: object, token: str | None) -> TokenSource:
    """The token source behind ``open_dxlink(target, token)``: a :class:`FixedToken` for a URL,
    else ``target`` itself (adapted by :func:`~trio_dxlink._tokens.as_token_source`).

    Raises:
        ValueError: a URL that is not ``ws://``/``wss://``.
        TypeError: anything else that is not a token source, or ``token=`` with a source.
    """
    if isinstance(target, str):
        if not target.startswith(("ws://", "wss://")):
            raise ValueError(f"DXLink URL must start with ws:// or wss://, got {target!r}")
        return FixedToken(target, token)
    source = as_token_source(target)
    if source is None:
        raise TypeError(f"target must be a URL or a TokenSource, got {target!r}")
    if token is not None:
        raise TypeError("token= is only for a URL target; a session supplies its own")
    return source


def require_positive(**values: float) -> None:
    """Raise ``ValueError`` naming the first of ``values`` that is not a positive number."""
    for name, value in values.items():
        if not value > 0:
            raise ValueError(f"{name} must be positive, got {value!r}")
