"""Option and futures contract symbols (the public names live in :mod:`trio_dxlink.symbols`).

Grammars, as tastytrade and dxFeed spell them:

* equity / index option, streamer form: ``.`` + root + ``YYMMDD`` + ``C|P`` + strike, the strike
  with no leading or trailing zeros and a point only when fractional (``.SPXW240119P4975.5``);
* the same option, OCC form: root space-padded to 6 + ``YYMMDD`` + ``C|P`` + strike times 1000 as 8
  digits (``SPXW  240119P04975500``);
* future, streamer form: ``/`` + product + month code + 2-digit year + optional ``:`` + exchange
  (``/ESZ24:XCME``); tastytrade's own form has a 1-digit year (``/ESZ4``);
* future option, streamer form: ``./`` + option root + month code + 2-digit year + ``C|P`` +
  strike + optional ``:`` + exchange (``./E3AZ24C5000:XCME``).

Everything here is pure. Malformed input raises :class:`~trio_dxlink.SymbolError`.
"""

from __future__ import annotations

import datetime
import enum
import re
from collections.abc import Callable
from decimal import Decimal, InvalidOperation

import attrs

from ._exceptions import SymbolError

__all__ = [
    "FutureOptionSymbol",
    "FutureSymbol",
    "OptionSymbol",
    "OptionType",
    "occ_to_streamer",
    "streamer_to_occ",
]

MONTH_CODES = "FGHJKMNQUVXZ"
"""Futures month codes, January to December."""

_ROOT = r"[A-Z][A-Z0-9]*"
_STRIKE = r"[0-9]+(?:\.[0-9]+)?"
_STREAMER_OPTION = re.compile(
    rf"\.(?P<root>{_ROOT}?)(?P<date>[0-9]{{6}})(?P<kind>[CP])(?P<strike>{_STRIKE})"
)
_OCC_OPTION = re.compile(
    r"(?P<root>[A-Z][A-Z0-9]{0,5}) *(?P<date>[0-9]{6})(?P<kind>[CP])(?P<strike>[0-9]{8})"
)
_EXCHANGE = r"(?::(?P<exchange>[A-Z][A-Z0-9]*))?"
_FUTURE = re.compile(
    rf"/(?P<product>[A-Z0-9]+?)(?P<month>[{MONTH_CODES}])(?P<year>[0-9]{{2}}){_EXCHANGE}"
)
_FUTURE_OPTION = re.compile(
    rf"\./(?P<root>[A-Z0-9]+?)(?P<month>[{MONTH_CODES}])(?P<year>[0-9]{{2}})"
    rf"(?P<kind>[CP])(?P<strike>{_STRIKE}){_EXCHANGE}"
)
_ROOT_RE = re.compile(_ROOT)
_PRODUCT_RE = re.compile(r"[A-Z0-9]+")
_EXCHANGE_RE = re.compile(r"[A-Z][A-Z0-9]*")
_OCC_STRIKE_LIMIT = Decimal(100_000)  # 8 digits of strike times 1000


class OptionType(str, enum.Enum):
    """Call or put; the value is the letter used in symbols."""

    CALL = "C"
    PUT = "P"

    def __str__(self) -> str:
        return str(self.value)

    @classmethod
    def parse(cls, text: str) -> OptionType:
        """``"C"``/``"P"`` or ``"call"``/``"put"``, ignoring case."""
        if not isinstance(text, str):
            raise TypeError(f"option type must be a string, got {type(text).__name__}")
        key = text.upper()
        for member in cls:
            if key in (member.value, member.name):
                return member
        raise SymbolError(f"unknown option type {text!r} (expected 'C', 'P', 'call' or 'put')")


# --- field converters and validators ---------------------------------------------------------


def _to_option_type(value: str | OptionType) -> OptionType:
    return value if isinstance(value, OptionType) else OptionType.parse(value)


def _to_strike(value: Decimal | int | float | str) -> Decimal:
    """A positive, finite strike with no trailing zeros (``Decimal("480")``, ``"480.5"``)."""
    if isinstance(value, bool) or not isinstance(value, (Decimal, int, float, str)):
        raise TypeError(f"strike must be a number or a string, got {type(value).__name__}")
    try:
        strike = Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
    except InvalidOperation:
        raise SymbolError(f"bad strike {value!r}") from None
    if not strike.is_finite() or strike <= 0:
        raise SymbolError(f"strike must be positive and finite, got {value!r}")
    if strike == strike.to_integral_value():
        return strike.quantize(Decimal(1))
    return strike.normalize()


def _strike_text(strike: Decimal) -> str:
    """``480``, ``480.5``, ``0.05``: no exponent, no padding."""
    return format(strike, "f")


def _require(pattern: re.Pattern[str], what: str, value: str) -> None:
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a string, got {type(value).__name__}")
    if not pattern.fullmatch(value):
        raise SymbolError(f"bad {what} {value!r}")


def _check_pattern(
    pattern: re.Pattern[str], what: str
) -> Callable[[object, attrs.Attribute[str], str], None]:
    def check(_inst: object, _attr: attrs.Attribute[str], value: str) -> None:
        _require(pattern, what, value)

    return check


def _check_exchange(_inst: object, _attr: attrs.Attribute[str | None], value: str | None) -> None:
    if value is not None:
        _require(_EXCHANGE_RE, "exchange code", value)


def _check_expiration(
    _inst: object, _attr: attrs.Attribute[datetime.date], value: datetime.date
) -> None:
    if not isinstance(value, datetime.date) or isinstance(value, datetime.datetime):
        raise TypeError(f"expiration must be a datetime.date, got {type(value).__name__}")
    if not 2000 <= value.year <= 2099:
        raise SymbolError(f"expiration {value} is outside 2000-2099 (symbols have 2-digit years)")


def _check_year(_inst: object, _attr: attrs.Attribute[int], value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"year must be an int, got {type(value).__name__}")
    if not 2000 <= value <= 2099:
        raise SymbolError(f"year {value} is outside 2000-2099 (symbols have 2-digit years)")


def _to_month(value: int | str) -> int:
    """A month number 1-12, from the number or its futures month code (``"Z"`` is 12)."""
    if isinstance(value, str):
        if len(value) != 1 or value not in MONTH_CODES:
            raise SymbolError(f"bad futures month code {value!r} (one of {MONTH_CODES})")
        return MONTH_CODES.index(value) + 1
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"month must be an int or a month code, got {type(value).__name__}")
    if not 1 <= value <= 12:
        raise SymbolError(f"month must be 1-12, got {value}")
    return value


def _parse_date(text: str) -> datetime.date:
    """``YYMMDD`` in 2000-2099."""
    try:
        return datetime.date(2000 + int(text[:2]), int(text[2:4]), int(text[4:6]))
    except ValueError:
        raise SymbolError(f"{text!r} is not a date (YYMMDD)") from None


def _fail(what: str, text: object, reason: str) -> SymbolError:
    return SymbolError(f"invalid {what} {text!r}: {reason}")


def _need_str(what: str, text: object) -> str:
    if not isinstance(text, str):
        raise TypeError(f"{what} must be a string, got {type(text).__name__}")
    return text


# --- equity and index options ----------------------------------------------------------------


@attrs.frozen
class OptionSymbol:
    """An equity or index option: root, expiration date, call or put, and strike.

    ``str(option)`` is the dxFeed streamer symbol (``.SPY240119C480.5``), the one to subscribe
    to; :attr:`occ` is the OCC symbol tastytrade's REST API uses (``SPY   240119C00480500``).
    Fields given as strings are converted: ``OptionSymbol("SPY", date(2024, 1, 19), "C",
    "480.5")``.

    :param root: the option root, which names the underlying but may differ from it (``SPXW``
        options are on ``SPX``): upper-case letters and digits, starting with a letter.
    :param expiration: the expiration date (2000-2099).
    :param option_type: :class:`OptionType` or ``"C"``/``"P"``/``"call"``/``"put"``.
    :param strike: the strike price, kept as a :class:`~decimal.Decimal` without trailing zeros
        (a float is read by its shortest ``repr``).
    :raises SymbolError: if a field is malformed.
    """

    root: str = attrs.field(validator=_check_pattern(_ROOT_RE, "option root"))
    expiration: datetime.date = attrs.field(validator=_check_expiration)
    option_type: OptionType = attrs.field(converter=_to_option_type)
    strike: Decimal = attrs.field(converter=_to_strike)

    @property
    def is_call(self) -> bool:
        """Whether this is a call."""
        return self.option_type is OptionType.CALL

    @property
    def streamer_symbol(self) -> str:
        """The dxFeed streamer symbol, e.g. ``.SPXW240119P4975.5``; the same as ``str()``."""
        return (
            f".{self.root}{self.expiration:%y%m%d}{self.option_type.value}"
            f"{_strike_text(self.strike)}"
        )

    @property
    def occ(self) -> str:
        """The 21-character OCC symbol, e.g. ``SPY   240119C00480500``.

        Raises :class:`SymbolError` if the option has no OCC spelling: a root longer than six
        characters, or a strike that is not a multiple of 0.001 or is 100,000 or more.
        """
        if len(self.root) > 6:
            raise SymbolError(f"root {self.root!r} is longer than the 6 characters OCC allows")
        thousandths = self.strike * 1000
        if thousandths != thousandths.to_integral_value() or self.strike >= _OCC_STRIKE_LIMIT:
            raise SymbolError(f"strike {self.strike} does not fit OCC's 5+3 digits")
        return (
            f"{self.root:<6}{self.expiration:%y%m%d}{self.option_type.value}{int(thousandths):08d}"
        )

    def __str__(self) -> str:
        return self.streamer_symbol

    @classmethod
    def parse(cls, text: str) -> OptionSymbol:
        """Parse a streamer symbol such as ``.SPY240119C480`` or ``.SPXW240119P4975.5``.

        The strike may carry redundant zeros (``480.50``); ``str()`` of the result drops them.
        Raises :class:`SymbolError` naming what is wrong (for example a 13th month).
        """
        match = _STREAMER_OPTION.fullmatch(_need_str("option symbol", text))
        if match is None:
            raise _fail("option symbol", text, "expected '.' ROOT YYMMDD C|P STRIKE")
        return cls._from_match(match, text, Decimal(match["strike"]))

    @classmethod
    def parse_occ(cls, text: str) -> OptionSymbol:
        """Parse an OCC symbol such as ``SPY   240119C00480500``.

        The root is normally space-padded to six characters; fewer spaces are accepted.
        Raises :class:`SymbolError` naming what is wrong.
        """
        match = _OCC_OPTION.fullmatch(_need_str("OCC symbol", text))
        if match is None:
            raise _fail("OCC symbol", text, "expected ROOT (padded to 6) YYMMDD C|P 8-DIGIT-STRIKE")
        return cls._from_match(match, text, Decimal(match["strike"]) / 1000)

    @classmethod
    def _from_match(cls, match: re.Match[str], text: str, strike: Decimal) -> OptionSymbol:
        try:
            return cls(match["root"], _parse_date(match["date"]), match["kind"], strike)
        except SymbolError as exc:
            raise _fail("option symbol", text, str(exc)) from None


def occ_to_streamer(occ: str) -> str:
    """``"SPY   240119C00480500"`` → ``".SPY240119C480.5"``. Raises :class:`SymbolError`."""
    return OptionSymbol.parse_occ(occ).streamer_symbol


def streamer_to_occ(symbol: str) -> str:
    """``".SPY240119C480.5"`` → ``"SPY   240119C00480500"``. Raises :class:`SymbolError`,
    also for an option with no OCC spelling (see :attr:`OptionSymbol.occ`)."""
    return OptionSymbol.parse(symbol).occ


# --- futures and futures options -------------------------------------------------------------


@attrs.frozen
class FutureSymbol:
    """A futures contract as dxFeed streams it: ``/ESZ24:XCME``.

    :param product: the product code without the slash (``"ES"``, ``"6A"``).
    :param month: the contract month, 1-12 or its month code (``"Z"``).
    :param year: the four-digit contract year (2000-2099).
    :param exchange: the exchange code after ``:`` (``"XCME"``), or ``None``.
    :raises SymbolError: if a field is malformed.
    """

    product: str = attrs.field(validator=_check_pattern(_PRODUCT_RE, "futures product"))
    month: int = attrs.field(converter=_to_month)
    year: int = attrs.field(validator=_check_year)
    exchange: str | None = attrs.field(default=None, validator=_check_exchange)

    @property
    def month_code(self) -> str:
        """The month's letter, ``F`` (January) to ``Z`` (December)."""
        return MONTH_CODES[self.month - 1]

    @property
    def streamer_symbol(self) -> str:
        """``/ESZ24:XCME`` (no ``:`` part without an exchange); the same as ``str()``."""
        suffix = "" if self.exchange is None else f":{self.exchange}"
        return f"/{self.product}{self.month_code}{self.year % 100:02d}{suffix}"

    @property
    def tastytrade_symbol(self) -> str:
        """tastytrade's own spelling, with a one-digit year and no exchange: ``/ESZ4``."""
        return f"/{self.product}{self.month_code}{self.year % 10}"

    def __str__(self) -> str:
        return self.streamer_symbol

    @classmethod
    def parse(cls, text: str) -> FutureSymbol:
        """Parse ``/ESZ24:XCME`` or ``/ESZ24``.

        tastytrade's one-digit-year form (``/ESZ4``) is refused: its decade is ambiguous. Use
        the ``streamer-symbol`` field tastytrade returns with each future instead.
        """
        match = _FUTURE.fullmatch(_need_str("futures symbol", text))
        if match is None:
            raise _fail("futures symbol", text, "expected '/' PRODUCT MONTH YY [':' EXCHANGE]")
        try:
            return cls(
                match["product"], match["month"], 2000 + int(match["year"]), match["exchange"]
            )
        except SymbolError as exc:
            raise _fail("futures symbol", text, str(exc)) from None


@attrs.frozen
class FutureOptionSymbol:
    """An option on a future as dxFeed streams it: ``./E3AZ24C5000:XCME``.

    The streamer symbol names the option contract (root, month and year), not its exact
    expiration date or its underlying future; tastytrade's option chains list both beside it.

    :param root: the option root (``"E3A"``, ``"EW3"``), upper-case letters and digits.
    :param month: the option contract's month, 1-12 or its month code.
    :param year: the four-digit contract year (2000-2099).
    :param option_type: :class:`OptionType` or ``"C"``/``"P"``/``"call"``/``"put"``.
    :param strike: the strike, as for :class:`OptionSymbol`.
    :param exchange: the exchange code after ``:`` (``"XCME"``), or ``None``.
    :raises SymbolError: if a field is malformed.
    """

    root: str = attrs.field(validator=_check_pattern(_PRODUCT_RE, "futures option root"))
    month: int = attrs.field(converter=_to_month)
    year: int = attrs.field(validator=_check_year)
    option_type: OptionType = attrs.field(converter=_to_option_type)
    strike: Decimal = attrs.field(converter=_to_strike)
    exchange: str | None = attrs.field(default=None, validator=_check_exchange)

    @property
    def is_call(self) -> bool:
        """Whether this is a call."""
        return self.option_type is OptionType.CALL

    @property
    def month_code(self) -> str:
        """The contract month's letter, ``F`` (January) to ``Z`` (December)."""
        return MONTH_CODES[self.month - 1]

    @property
    def streamer_symbol(self) -> str:
        """``./E3AZ24C5000:XCME``; the same as ``str()``."""
        suffix = "" if self.exchange is None else f":{self.exchange}"
        return (
            f"./{self.root}{self.month_code}{self.year % 100:02d}{self.option_type.value}"
            f"{_strike_text(self.strike)}{suffix}"
        )

    def __str__(self) -> str:
        return self.streamer_symbol

    @classmethod
    def parse(cls, text: str) -> FutureOptionSymbol:
        """Parse ``./E3AZ24C5000:XCME`` (the exchange part is optional)."""
        match = _FUTURE_OPTION.fullmatch(_need_str("futures option symbol", text))
        if match is None:
            raise _fail(
                "futures option symbol",
                text,
                "expected './' ROOT MONTH YY C|P STRIKE [':' EXCHANGE]",
            )
        try:
            return cls(
                match["root"],
                match["month"],
                2000 + int(match["year"]),
                match["kind"],
                Decimal(match["strike"]),
                match["exchange"],
            )
        except SymbolError as exc:
            raise _fail("futures option symbol", text, str(exc)) from None
