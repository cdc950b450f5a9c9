"""Market symbols: parse, format and normalise every kind of symbol DXLink streams.

This module is the one home for symbol syntax. Everything in it is pure (no I/O, no clock);
malformed input raises :class:`~trio_dxlink.SymbolError`, which is both a
:class:`~trio_dxlink.DXLinkError` and a :class:`ValueError`. A non-string raises
:class:`TypeError`.

==========================  ===========================  =====================================
Kind                        Example (dxFeed / streamer)  Here
==========================  ===========================  =====================================
equity, ETF, index          ``SPY``, ``SPX``             plain strings
regional record             ``AAPL&Q``                   :func:`base_symbol` strips ``&Q``
candle                      ``AAPL{=5m,tho=true}``       :class:`CandleSymbol`
equity / index option       ``.SPXW240119P4975.5``       :class:`OptionSymbol` (also OCC form)
future                      ``/ESZ24:XCME``              :class:`FutureSymbol`
future option               ``./E3AZ24C5000:XCME``       :class:`FutureOptionSymbol`
==========================  ===========================  =====================================

**Candle symbols** name an aggregation of a base symbol's trades (or quotes) into candles::

    AAPL{=5m,tho=true}        5-minute candles, regular trading hours only
    EUR/USD{=m,price=bid}     1-minute candles built from bid prices
    AAPL&Q{=d}                daily candles from the regional (exchange ``Q``) record

The attributes inside the braces are ``=`` (the period, whose key is the empty string),
``price=``, ``tho=``, ``a=`` (alignment) and ``pl=`` (price level). Keys are case-sensitive and
values are not. Unknown keys are kept, never dropped.

:class:`CandleSymbol` is a frozen value object; ``str(symbol)`` is the normalised dxFeed form:
keys in lexicographic order, lower-case values, the shortest abbreviations, and defaults omitted.
Use :func:`normalize_candle_symbol` to compare a symbol a server echoes with the one that was
subscribed.

**Option symbols** come in two spellings: the dxFeed streamer symbol (``.SPY240119C480.5``,
what DXLink streams) and the OCC symbol (``SPY   240119C00480500``, what tastytrade's REST API
calls ``symbol``). :class:`OptionSymbol` parses and formats both; :func:`occ_to_streamer` and
:func:`streamer_to_occ` convert one string into the other.
"""

from __future__ import annotations

import enum
import math
import re
from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import TypeVar

import attrs

from ._contract_symbols import (
    FutureOptionSymbol,
    FutureSymbol,
    OptionSymbol,
    OptionType,
    occ_to_streamer,
    streamer_to_occ,
)
from ._exceptions import SymbolError

__all__ = [
    "CandleAlignment",
    "CandlePeriod",
    "CandlePrice",
    "CandleSession",
    "CandleSymbol",
    "CandleType",
    "FutureOptionSymbol",
    "FutureSymbol",
    "OptionSymbol",
    "OptionType",
    "SymbolError",
    "base_symbol",
    "normalize_candle_symbol",
    "occ_to_streamer",
    "streamer_to_occ",
]

_E = TypeVar("_E", bound=enum.Enum)


def _parse_named(text: str, names: Mapping[_E, str], what: str, *, plurals: bool = False) -> _E:
    """Look up ``text`` (case-insensitively) among ``names``.

    An exact match of a member's value wins; otherwise the first member (in ``names`` order)
    whose full name starts with ``text`` or, if ``plurals``, equals ``text`` minus a final "s".
    """
    if not isinstance(text, str):
        raise TypeError(f"{what} must be a string, got {type(text).__name__}")
    key = text.lower()
    if not key:
        raise SymbolError(f"missing {what}")
    for member in names:
        if key == member.value:
            return member
    for member, name in names.items():
        if name.startswith(key) or (plurals and key == name + "s"):
            return member
    raise SymbolError(f"unknown {what} {text!r}")


_NUMBER = r"(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?"
_UNSIGNED_PREFIX_RE = re.compile(_NUMBER)
_SIGNED_RE = re.compile(r"[+-]?" + _NUMBER)


def _format_number(value: float) -> str:
    """Shortest decimal text for ``value``: no ``.0`` on integers and no exponent."""
    if value.is_integer():
        return str(int(value))
    text = repr(value)
    if "e" in text:
        text = format(Decimal(text), "f")
    return text


def _parse_number(text: str, what: str) -> float:
    """Parse a plain decimal number (``NaN`` allowed); no whitespace, ``_`` or ``inf``."""
    if text.lower() == "nan":
        return math.nan
    if not _SIGNED_RE.fullmatch(text):
        raise SymbolError(f"bad number {text!r} for {what}")
    return float(text)


class CandleType(str, enum.Enum):
    """The unit of a :class:`CandlePeriod`; the value is its shortest abbreviation."""

    TICK = "t"
    SECOND = "s"
    MINUTE = "m"
    HOUR = "h"
    DAY = "d"
    WEEK = "w"
    MONTH = "mo"
    OPTEXP = "o"
    YEAR = "y"
    VOLUME = "v"
    PRICE = "p"
    PRICE_MOMENTUM = "pm"
    PRICE_RENKO = "pr"

    def __str__(self) -> str:
        return str(self.value)

    @classmethod
    def parse(cls, text: str) -> CandleType:
        """Parse an abbreviation, a prefix of the full name, or its plural, ignoring case.

        ``"m"``, ``"min"`` and ``"minutes"`` are :attr:`MINUTE`; ``"mo"`` and ``"months"``
        are :attr:`MONTH`. Raises :class:`SymbolError` for anything else.
        """
        return _parse_named(text, _TYPE_NAMES, "candle period type", plurals=True)


_TYPE_NAMES: dict[CandleType, str] = {
    CandleType.TICK: "tick",
    CandleType.SECOND: "second",
    CandleType.MINUTE: "minute",
    CandleType.HOUR: "hour",
    CandleType.DAY: "day",
    CandleType.WEEK: "week",
    CandleType.MONTH: "month",
    CandleType.OPTEXP: "optexp",
    CandleType.YEAR: "year",
    CandleType.VOLUME: "volume",
    CandleType.PRICE: "price",
    CandleType.PRICE_MOMENTUM: "pricemomentum",
    CandleType.PRICE_RENKO: "pricerenko",
}


class CandlePrice(str, enum.Enum):
    """Which price candles are built from (key ``price``); :attr:`LAST` is the default."""

    LAST = "last"
    BID = "bid"
    ASK = "ask"
    MARK = "mark"
    SETTLEMENT = "s"

    def __str__(self) -> str:
        return str(self.value)

    @classmethod
    def parse(cls, text: str) -> CandlePrice:
        """Parse a value or a prefix of a name (``"s"``, ``"settlement"``), ignoring case."""
        return _parse_named(text, _PRICE_NAMES, "candle price")


_PRICE_NAMES: dict[CandlePrice, str] = {
    CandlePrice.LAST: "last",
    CandlePrice.BID: "bid",
    CandlePrice.ASK: "ask",
    CandlePrice.MARK: "mark",
    CandlePrice.SETTLEMENT: "settlement",
}


class CandleSession(str, enum.Enum):
    """Trading session filter (key ``tho``): :attr:`ANY` (default) or :attr:`REGULAR` hours."""

    ANY = "false"
    REGULAR = "true"

    def __str__(self) -> str:
        return str(self.value)

    @classmethod
    def parse(cls, text: str) -> CandleSession:
        """Parse ``"true"``/``"false"`` or a prefix of ``"any"``/``"regular"``, ignoring case."""
        return _parse_named(text, _SESSION_NAMES, "candle session")


_SESSION_NAMES: dict[CandleSession, str] = {
    CandleSession.ANY: "any",
    CandleSession.REGULAR: "regular",
}


class CandleAlignment(str, enum.Enum):
    """Where candle periods start (key ``a``): :attr:`MIDNIGHT` (default) or :attr:`SESSION`."""

    MIDNIGHT = "m"
    SESSION = "s"

    def __str__(self) -> str:
        return str(self.value)

    @classmethod
    def parse(cls, text: str) -> CandleAlignment:
        """Parse ``"m"``/``"s"`` or a prefix of ``"midnight"``/``"session"``, ignoring case."""
        return _parse_named(text, _ALIGNMENT_NAMES, "candle alignment")


_ALIGNMENT_NAMES: dict[CandleAlignment, str] = {
    CandleAlignment.MIDNIGHT: "midnight",
    CandleAlignment.SESSION: "session",
}


def _to_float(value: float) -> float:
    return float(value)


def _to_type(value: str | CandleType) -> CandleType:
    return value if isinstance(value, CandleType) else CandleType.parse(value)


def _check_period_value(_inst: object, _attr: attrs.Attribute[float], value: float) -> None:
    if not (math.isfinite(value) and value > 0):
        raise SymbolError(f"candle period value must be positive and finite, got {value!r}")


@attrs.frozen
class CandlePeriod:
    """An aggregation period: ``value`` units of ``type``, e.g. ``5m`` or ``0.5h``.

    ``str()`` gives the normalised form (a value of 1 is omitted: ``"m"``, ``"5m"``).
    The default, ``CandlePeriod()``, is one tick: every trade is its own candle.
    """

    value: float = attrs.field(default=1.0, converter=_to_float, validator=_check_period_value)
    type: CandleType = attrs.field(default=CandleType.TICK, converter=_to_type)

    def __str__(self) -> str:
        number = "" if self.value == 1 else _format_number(self.value)
        return number + self.type.value

    @property
    def milliseconds(self) -> int | None:
        """The length of one candle in milliseconds, for periods of fixed length (seconds to
        weeks; ``CandlePeriod(5, "m").milliseconds == 300_000``).

        ``None`` for periods whose length is not a time span: ticks, volume, price, and
        calendar periods of varying length (month, option expiration, year).
        """
        unit = _UNIT_MILLISECONDS.get(self.type)
        return None if unit is None else max(1, round(self.value * unit))

    @classmethod
    def parse(cls, text: str) -> CandlePeriod:
        """Parse ``[number]type``, e.g. ``"5m"``, ``"d"``, ``"0.5hours"``, ``"133t"``.

        The number defaults to 1 and may be fractional; the type is parsed by
        :meth:`CandleType.parse`. Raises :class:`SymbolError` if either part is bad.
        """
        if not isinstance(text, str):
            raise TypeError(f"candle period must be a string, got {type(text).__name__}")
        match = _UNSIGNED_PREFIX_RE.match(text)
        number, unit = (text[: match.end()], text[match.end() :]) if match else ("", text)
        try:
            return cls(float(number) if number else 1.0, CandleType.parse(unit))
        except ValueError as exc:
            raise SymbolError(f"bad candle period {text!r}: {exc}") from None


_DEFAULT_PERIOD = CandlePeriod()
_UNIT_MILLISECONDS: dict[CandleType, int] = {
    CandleType.SECOND: 1_000,
    CandleType.MINUTE: 60_000,
    CandleType.HOUR: 3_600_000,
    CandleType.DAY: 86_400_000,
    CandleType.WEEK: 7 * 86_400_000,
}


def _to_period(value: str | CandlePeriod | None) -> CandlePeriod | None:
    if value is None or isinstance(value, CandlePeriod):
        return value
    return CandlePeriod.parse(value)


def _to_price(value: str | CandlePrice | None) -> CandlePrice | None:
    if value is None or isinstance(value, CandlePrice):
        return value
    return CandlePrice.parse(value)


def _to_session(value: str | CandleSession | None) -> CandleSession | None:
    if value is None or isinstance(value, CandleSession):
        return value
    return CandleSession.parse(value)


def _to_alignment(value: str | CandleAlignment | None) -> CandleAlignment | None:
    if value is None or isinstance(value, CandleAlignment):
        return value
    return CandleAlignment.parse(value)


def _to_price_level(value: float | None) -> float | None:
    if value is None:
        return None
    level = float(value)
    if math.isnan(level):
        return None  # NaN is dxFeed's "no price level"
    if math.isinf(level) or level < 0:
        raise SymbolError(f"candle price level must be finite and >= 0, got {level!r}")
    return level + 0.0  # turns -0.0 into 0.0


def _to_extra(
    value: Mapping[str, str] | Iterable[tuple[str, str]],
) -> tuple[tuple[str, str], ...]:
    pairs = value.items() if isinstance(value, Mapping) else value
    return tuple(sorted((key, val) for key, val in pairs))


_KNOWN_KEYS = frozenset({"", "price", "tho", "a", "pl"})


def _check_base(_inst: object, _attr: attrs.Attribute[str], base: str) -> None:
    if not isinstance(base, str):
        raise TypeError(f"candle base symbol must be a string, got {type(base).__name__}")
    if not base:
        raise SymbolError("empty base symbol")
    if "{" in base or "}" in base:
        raise SymbolError(f"base symbol {base!r} contains a brace")


def _check_extra(
    _inst: object,
    _attr: attrs.Attribute[tuple[tuple[str, str], ...]],
    extra: tuple[tuple[str, str], ...],
) -> None:
    previous: str | None = None
    for key, value in extra:
        if not isinstance(key, str) or not isinstance(value, str):
            raise TypeError(f"extra attribute {key!r}={value!r} must be a pair of strings")
        if key in _KNOWN_KEYS:
            raise SymbolError(f"extra attribute key {key!r} is a known candle attribute")
        if any(c in key for c in "{}=,"):
            raise SymbolError(f"extra attribute key {key!r} contains one of '{{}}=,'")
        if any(c in value for c in "{},"):
            raise SymbolError(f"extra attribute value {value!r} contains one of '{{}},'")
        if key == previous:
            raise SymbolError(f"duplicate key {key!r}")
        previous = key


@attrs.frozen
class CandleSymbol:
    """A dxFeed candle symbol: a base symbol plus candle attributes.

    Attribute values may be given as objects or as strings in any accepted spelling, e.g.
    ``CandleSymbol("AAPL", "5m", session="regular")``. ``None`` means "not given", i.e. the
    default. Values equal to the default are kept as given but left out of ``str()``, so compare
    symbols by :attr:`normalized`, not with ``==``.

    :param base: the symbol, optionally with a regional exchange suffix (``"AAPL&Q"``).
    :param period: the aggregation period (key ``""``); default one tick.
    :param price: key ``price``; default :attr:`CandlePrice.LAST`.
    :param session: key ``tho``; default :attr:`CandleSession.ANY`.
    :param alignment: key ``a``; default :attr:`CandleAlignment.MIDNIGHT`.
    :param price_level: key ``pl``, a finite price interval >= 0; NaN or ``None`` means none.
    :param extra: other ``(key, value)`` attributes, kept verbatim and sorted by key.
    :raises SymbolError: if a value is malformed.
    """

    base: str = attrs.field(validator=_check_base)
    period: CandlePeriod | None = attrs.field(default=None, converter=_to_period)
    price: CandlePrice | None = attrs.field(default=None, converter=_to_price, kw_only=True)
    session: CandleSession | None = attrs.field(default=None, converter=_to_session, kw_only=True)
    alignment: CandleAlignment | None = attrs.field(
        default=None, converter=_to_alignment, kw_only=True
    )
    price_level: float | None = attrs.field(default=None, converter=_to_price_level, kw_only=True)
    extra: tuple[tuple[str, str], ...] = attrs.field(
        default=(), converter=_to_extra, validator=_check_extra, kw_only=True
    )

    @classmethod
    def parse(cls, text: str) -> CandleSymbol:
        """Parse ``base[&X]{key=value,...}``; text without braces is just a base symbol.

        Raises :class:`SymbolError` naming the problem for unbalanced braces, an empty base,
        an attribute without ``=``, a duplicate key, or a bad period, price, ``tho`` boolean,
        alignment or number.
        """
        if not isinstance(text, str):
            raise TypeError(f"candle symbol must be a string, got {type(text).__name__}")
        try:
            return _parse_symbol(text)
        except ValueError as exc:
            raise SymbolError(f"invalid candle symbol {text!r}: {exc}") from None

    @property
    def normalized(self) -> str:
        """The normalised dxFeed form; the same as ``str(self)``."""
        pairs = list(self.extra)
        if self.period is not None and self.period != _DEFAULT_PERIOD:
            pairs.append(("", str(self.period)))
        if self.price is not None and self.price is not CandlePrice.LAST:
            pairs.append(("price", self.price.value))
        if self.session is CandleSession.REGULAR:
            pairs.append(("tho", self.session.value))
        if self.alignment is CandleAlignment.SESSION:
            pairs.append(("a", self.alignment.value))
        if self.price_level is not None:
            pairs.append(("pl", _format_number(self.price_level)))
        if not pairs:
            return self.base
        pairs.sort()
        return self.base + "{" + ",".join(f"{key}={value}" for key, value in pairs) + "}"

    def __str__(self) -> str:
        return self.normalized


def _parse_tho(text: str) -> CandleSession:
    lowered = text.lower()
    if lowered == "true":
        return CandleSession.REGULAR
    if lowered == "false":
        return CandleSession.ANY
    raise SymbolError(f"bad boolean {text!r} for key 'tho' (expected 'true' or 'false')")


def _parse_symbol(text: str) -> CandleSymbol:
    opening, closing = text.find("{"), text.find("}")
    if opening < 0 and closing < 0:
        return CandleSymbol(text)
    if opening < 0 or closing < opening:
        raise SymbolError("unbalanced braces")
    if text.count("{") > 1 or text.count("}") > 1:
        raise SymbolError("more than one pair of braces")
    if closing != len(text) - 1:
        raise SymbolError(f"unexpected text {text[closing + 1 :]!r} after '}}'")
    base, body = text[:opening], text[opening + 1 : closing]
    if not base:
        raise SymbolError("empty base symbol")

    seen: set[str] = set()
    period: CandlePeriod | None = None
    price: CandlePrice | None = None
    session: CandleSession | None = None
    alignment: CandleAlignment | None = None
    price_level: float | None = None
    extra: list[tuple[str, str]] = []
    for item in body.split(",") if body else ():
        key, eq, value = item.partition("=")
        if not eq:
            raise SymbolError(f"attribute {item!r} has no '='")
        if key in seen:
            raise SymbolError(f"duplicate key {key!r}")
        seen.add(key)
        if key == "":
            period = CandlePeriod.parse(value)
        elif key == "price":
            price = CandlePrice.parse(value)
        elif key == "tho":
            session = _parse_tho(value)
        elif key == "a":
            alignment = CandleAlignment.parse(value)
        elif key == "pl":
            price_level = _parse_number(value, "key 'pl'")
        else:
            extra.append((key, value))
    return CandleSymbol(
        base,
        period,
        price=price,
        session=session,
        alignment=alignment,
        price_level=price_level,
        extra=extra,
    )


def normalize_candle_symbol(text: str) -> str:
    """Return the normalised form of candle symbol ``text`` (``str(CandleSymbol.parse(text))``).

    Use it on both sides to match a server's echoed ``eventSymbol`` with what was subscribed.
    Raises :class:`SymbolError` if ``text`` is malformed.
    """
    return str(CandleSymbol.parse(text))


_REGIONAL_SUFFIX = re.compile(r"&[A-Za-z0-9]$")


def base_symbol(symbol: str) -> str:
    """The instrument a symbol follows: candle attributes and a regional ``&X`` suffix removed.

    ``base_symbol("AAPL&Q{=5m}") == "AAPL"``; ``base_symbol(".SPY240119C480")`` is unchanged.
    Only the braces are looked at, not their contents, so this never raises for a string.
    """
    if not isinstance(symbol, str):
        raise TypeError(f"symbol must be a string, got {type(symbol).__name__}")
    opening = symbol.find("{")
    base = symbol if opening < 0 else symbol[:opening]
    return _REGIONAL_SUFFIX.sub("", base) if len(base) > 2 else base
