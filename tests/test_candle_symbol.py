"""Tests for trio_dxlink.symbols: dxFeed candle symbol building, parsing and normalisation."""

from __future__ import annotations

import math
from collections.abc import Callable

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from trio_dxlink import DXLinkError
from trio_dxlink.symbols import (
    CandleAlignment,
    CandlePeriod,
    CandlePrice,
    CandleSession,
    CandleSymbol,
    CandleType,
    SymbolError,
    normalize_candle_symbol,
)

# --- CandleType -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("t", CandleType.TICK),
        ("tick", CandleType.TICK),
        ("ticks", CandleType.TICK),
        ("s", CandleType.SECOND),
        ("sec", CandleType.SECOND),
        ("second", CandleType.SECOND),
        ("seconds", CandleType.SECOND),
        ("m", CandleType.MINUTE),
        ("M", CandleType.MINUTE),
        ("mi", CandleType.MINUTE),
        ("min", CandleType.MINUTE),
        ("minute", CandleType.MINUTE),
        ("Minutes", CandleType.MINUTE),
        ("h", CandleType.HOUR),
        ("hour", CandleType.HOUR),
        ("HOURS", CandleType.HOUR),
        ("d", CandleType.DAY),
        ("day", CandleType.DAY),
        ("days", CandleType.DAY),
        ("w", CandleType.WEEK),
        ("week", CandleType.WEEK),
        ("weeks", CandleType.WEEK),
        ("mo", CandleType.MONTH),
        ("MO", CandleType.MONTH),
        ("mon", CandleType.MONTH),
        ("month", CandleType.MONTH),
        ("months", CandleType.MONTH),
        ("o", CandleType.OPTEXP),
        ("optexp", CandleType.OPTEXP),
        ("OptExp", CandleType.OPTEXP),
        ("y", CandleType.YEAR),
        ("year", CandleType.YEAR),
        ("years", CandleType.YEAR),
        ("v", CandleType.VOLUME),
        ("volume", CandleType.VOLUME),
        ("p", CandleType.PRICE),
        ("pri", CandleType.PRICE),
        ("price", CandleType.PRICE),
        ("pm", CandleType.PRICE_MOMENTUM),
        ("pricem", CandleType.PRICE_MOMENTUM),
        ("pricemomentum", CandleType.PRICE_MOMENTUM),
        ("PriceMomentum", CandleType.PRICE_MOMENTUM),
        ("pr", CandleType.PRICE_RENKO),
        ("pricer", CandleType.PRICE_RENKO),
        ("pricerenko", CandleType.PRICE_RENKO),
    ],
)
def test_candle_type_parse(text: str, expected: CandleType) -> None:
    assert CandleType.parse(text) is expected


@pytest.mark.parametrize("member", list(CandleType))
def test_candle_type_parses_its_own_value_and_str(member: CandleType) -> None:
    assert CandleType.parse(member.value) is member
    assert str(member) == member.value
    assert CandleType.parse(member) is member


@pytest.mark.parametrize("text", ["", "x", "mins", "minutess", "tickz", "pricemomentums2", "5m"])
def test_candle_type_parse_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="candle period type"):
        CandleType.parse(text)


# --- CandlePeriod -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("5m", CandlePeriod(5, CandleType.MINUTE)),
        ("m", CandlePeriod(1, CandleType.MINUTE)),
        ("1d", CandlePeriod(1, CandleType.DAY)),
        ("133t", CandlePeriod(133, CandleType.TICK)),
        ("0.5h", CandlePeriod(0.5, CandleType.HOUR)),
        (".5h", CandlePeriod(0.5, CandleType.HOUR)),
        ("5.0m", CandlePeriod(5, CandleType.MINUTE)),
        ("15minutes", CandlePeriod(15, CandleType.MINUTE)),
        ("2MONTHS", CandlePeriod(2, CandleType.MONTH)),
        ("1.0E-4h", CandlePeriod(0.0001, CandleType.HOUR)),
        ("1000v", CandlePeriod(1000, CandleType.VOLUME)),
    ],
)
def test_candle_period_parse(text: str, expected: CandlePeriod) -> None:
    assert CandlePeriod.parse(text) == expected


@pytest.mark.parametrize(
    ("period", "expected"),
    [
        (CandlePeriod(5, CandleType.MINUTE), "5m"),
        (CandlePeriod(1, CandleType.MINUTE), "m"),
        (CandlePeriod(1.0, CandleType.DAY), "d"),
        (CandlePeriod(5.0, CandleType.MINUTE), "5m"),
        (CandlePeriod(0.5, CandleType.HOUR), "0.5h"),
        (CandlePeriod(2.25, CandleType.MONTH), "2.25mo"),
        (CandlePeriod(0.0001, CandleType.SECOND), "0.0001s"),
        (CandlePeriod(1e20, CandleType.VOLUME), "100000000000000000000v"),
        (CandlePeriod(), "t"),
    ],
)
def test_candle_period_str(period: CandlePeriod, expected: str) -> None:
    assert str(period) == expected


def test_candle_period_defaults_and_converters() -> None:
    assert CandlePeriod() == CandlePeriod(1, CandleType.TICK)
    assert CandlePeriod(type=CandleType.DAY).value == 1.0
    period = CandlePeriod(3, "min")
    assert period.type is CandleType.MINUTE
    assert isinstance(period.value, float)
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        period.value = 2  # type: ignore[misc]


@pytest.mark.parametrize("value", [0, -1, math.inf, math.nan])
def test_candle_period_rejects_bad_value(value: float) -> None:
    with pytest.raises(ValueError, match="positive and finite"):
        CandlePeriod(value, CandleType.MINUTE)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("", "missing candle period type"),
        ("5", "missing candle period type"),
        ("5x", "unknown candle period type 'x'"),
        ("-5m", "unknown candle period type '-5m'"),
        ("5 m", "unknown candle period type ' m'"),
        ("0m", "positive and finite"),
        ("1e999m", "positive and finite"),
        ("5m5", "unknown candle period type 'm5'"),
    ],
)
def test_candle_period_parse_rejects(text: str, match: str) -> None:
    with pytest.raises(ValueError, match=match) as info:
        CandlePeriod.parse(text)
    assert str(info.value).startswith(f"bad candle period {text!r}")


# --- CandlePrice, CandleSession, CandleAlignment ------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("last", CandlePrice.LAST),
        ("LAST", CandlePrice.LAST),
        ("bid", CandlePrice.BID),
        ("Bid", CandlePrice.BID),
        ("ask", CandlePrice.ASK),
        ("mark", CandlePrice.MARK),
        ("s", CandlePrice.SETTLEMENT),
        ("settlement", CandlePrice.SETTLEMENT),
        ("Settlement", CandlePrice.SETTLEMENT),
    ],
)
def test_candle_price_parse(text: str, expected: CandlePrice) -> None:
    assert CandlePrice.parse(text) is expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("true", CandleSession.REGULAR),
        ("TRUE", CandleSession.REGULAR),
        ("regular", CandleSession.REGULAR),
        ("false", CandleSession.ANY),
        ("any", CandleSession.ANY),
    ],
)
def test_candle_session_parse(text: str, expected: CandleSession) -> None:
    assert CandleSession.parse(text) is expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("m", CandleAlignment.MIDNIGHT),
        ("midnight", CandleAlignment.MIDNIGHT),
        ("s", CandleAlignment.SESSION),
        ("S", CandleAlignment.SESSION),
        ("session", CandleAlignment.SESSION),
    ],
)
def test_candle_alignment_parse(text: str, expected: CandleAlignment) -> None:
    assert CandleAlignment.parse(text) is expected


@pytest.mark.parametrize(
    ("parse", "text", "match"),
    [
        (CandlePrice.parse, "", "missing candle price"),
        (CandlePrice.parse, "open", "unknown candle price 'open'"),
        (CandleSession.parse, "yes", "unknown candle session 'yes'"),
        (CandleAlignment.parse, "x", "unknown candle alignment 'x'"),
    ],
)
def test_enum_parse_rejects(parse: Callable[[str], object], text: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        parse(text)


def test_enum_parse_rejects_non_strings() -> None:
    with pytest.raises(TypeError, match="must be a string"):
        CandlePrice.parse(5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="must be a string"):
        CandlePeriod.parse(5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="must be a string"):
        CandleSymbol.parse(None)  # type: ignore[arg-type]


# --- CandleSymbol: normalisation ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # Already normalised: unchanged.
        ("AAPL{=5m,tho=true}", "AAPL{=5m,tho=true}"),
        ("EUR/USD{=m,price=bid}", "EUR/USD{=m,price=bid}"),
        ("/ES{=d,price=s}", "/ES{=d,price=s}"),
        ("AAPL{=h,a=s,tho=true}", "AAPL{=h,a=s,tho=true}"),
        ("GOOG{=133t,tho=true}", "GOOG{=133t,tho=true}"),
        ("AAPL{=0.5h}", "AAPL{=0.5h}"),
        # Period value 1 dropped, integral floats without ".0".
        ("AAPL{=1d}", "AAPL{=d}"),
        ("AAPL{=5.0m}", "AAPL{=5m}"),
        ("AAPL{=1.0m}", "AAPL{=m}"),
        # Keys sorted (the period key is "", so it comes first).
        ("AAPL{tho=true,=5m}", "AAPL{=5m,tho=true}"),
        ("AAPL{tho=true,a=s,=1h}", "AAPL{=h,a=s,tho=true}"),
        ("X{price=bid,pl=0.5,a=s,tho=true,=2m}", "X{=2m,a=s,pl=0.5,price=bid,tho=true}"),
        # Values lower-cased and abbreviated.
        ("AAPL{=5MINUTES,THO=true}", "AAPL{=5m,THO=true}"),
        ("AAPL{=5Minutes,tho=TRUE}", "AAPL{=5m,tho=true}"),
        ("/ES{=days,price=settlement}", "/ES{=d,price=s}"),
        ("EUR/USD{=min,price=BID}", "EUR/USD{=m,price=bid}"),
        ("AAPL{=1hour,a=session,tho=True}", "AAPL{=h,a=s,tho=true}"),
        ("AAPL{=2months}", "AAPL{=2mo}"),
        # Defaults dropped.
        ("AAPL{=5m,price=last}", "AAPL{=5m}"),
        ("AAPL{=5m,tho=false}", "AAPL{=5m}"),
        ("AAPL{=5m,a=m}", "AAPL{=5m}"),
        ("AAPL{=5m,pl=NaN}", "AAPL{=5m}"),
        ("AAPL{=t}", "AAPL"),
        ("AAPL{=1t}", "AAPL"),
        ("AAPL{=t,price=last,tho=false,a=midnight}", "AAPL"),
        ("AAPL{=1t,tho=true}", "AAPL{tho=true}"),
        ("AAPL{}", "AAPL"),
        # Price level.
        ("AAPL{=m,pl=1.0}", "AAPL{=m,pl=1}"),
        ("AAPL{=m,pl=0}", "AAPL{=m,pl=0}"),
        ("AAPL{=m,pl=-0}", "AAPL{=m,pl=0}"),
        ("AAPL{=m,pl=.25}", "AAPL{=m,pl=0.25}"),
        ("AAPL{=m,pl=2.5E-3}", "AAPL{=m,pl=0.0025}"),
        # No braces: just the base.
        ("AAPL", "AAPL"),
        ("AAPL&Q", "AAPL&Q"),
        ("./EW4Q24C5750:XCME", "./EW4Q24C5750:XCME"),
        # Regional base.
        ("AAPL&Q{=1d,tho=true}", "AAPL&Q{=d,tho=true}"),
    ],
)
def test_normalization(text: str, expected: str) -> None:
    assert normalize_candle_symbol(text) == expected
    assert str(CandleSymbol.parse(text)) == expected
    assert CandleSymbol.parse(text).normalized == expected
    # Normalisation is idempotent.
    assert normalize_candle_symbol(expected) == expected


def test_parse_fields() -> None:
    sym = CandleSymbol.parse("AAPL&Q{=5m,a=s,pl=0.5,price=bid,tho=true}")
    assert sym == CandleSymbol(
        "AAPL&Q",
        CandlePeriod(5, CandleType.MINUTE),
        price=CandlePrice.BID,
        session=CandleSession.REGULAR,
        alignment=CandleAlignment.SESSION,
        price_level=0.5,
    )
    assert sym.base == "AAPL&Q"


def test_parse_without_braces_is_only_base() -> None:
    sym = CandleSymbol.parse("SPX")
    assert sym == CandleSymbol("SPX")
    assert sym.period is None
    assert sym.price is None
    assert sym.session is None
    assert sym.alignment is None
    assert sym.price_level is None
    assert sym.extra == ()


def test_parse_keeps_explicit_defaults_but_str_drops_them() -> None:
    sym = CandleSymbol.parse("AAPL{=1t,price=last,tho=false,a=m}")
    assert sym.period == CandlePeriod()
    assert sym.price is CandlePrice.LAST
    assert sym.session is CandleSession.ANY
    assert sym.alignment is CandleAlignment.MIDNIGHT
    assert str(sym) == "AAPL"
    assert sym != CandleSymbol("AAPL")
    assert sym.normalized == CandleSymbol("AAPL").normalized


# --- CandleSymbol: construction ----------------------------------------------------------------


def test_construct_from_strings() -> None:
    sym = CandleSymbol("AAPL", period="5m", session="regular")
    assert sym.period == CandlePeriod(5, CandleType.MINUTE)
    assert sym.session is CandleSession.REGULAR
    assert str(sym) == "AAPL{=5m,tho=true}"

    sym = CandleSymbol("EUR/USD", "minute", price="Bid")
    assert str(sym) == "EUR/USD{=m,price=bid}"

    sym = CandleSymbol("/ES", "1d", price="settlement")
    assert str(sym) == "/ES{=d,price=s}"

    sym = CandleSymbol("AAPL", "hours", alignment="session", session="true")
    assert str(sym) == "AAPL{=h,a=s,tho=true}"

    sym = CandleSymbol("GOOG", CandlePeriod(133, CandleType.TICK), session=CandleSession.REGULAR)
    assert str(sym) == "GOOG{=133t,tho=true}"


def test_construct_defaults_give_base() -> None:
    assert str(CandleSymbol("AAPL")) == "AAPL"
    assert str(CandleSymbol("AAPL", CandlePeriod())) == "AAPL"


def test_construct_price_level() -> None:
    assert str(CandleSymbol("AAPL", "m", price_level=2)) == "AAPL{=m,pl=2}"
    assert CandleSymbol("AAPL", price_level=math.nan).price_level is None
    with pytest.raises(ValueError, match="price level"):
        CandleSymbol("AAPL", price_level=math.inf)
    with pytest.raises(ValueError, match="price level"):
        CandleSymbol("AAPL", price_level=-1.0)


def test_construct_rejects_bad_values() -> None:
    with pytest.raises(ValueError, match="empty base symbol"):
        CandleSymbol("")
    with pytest.raises(ValueError, match="contains a brace"):
        CandleSymbol("AAPL{=m}")
    with pytest.raises(ValueError, match="bad candle period"):
        CandleSymbol("AAPL", "5q")
    with pytest.raises(ValueError, match="unknown candle price"):
        CandleSymbol("AAPL", price="open")
    with pytest.raises(ValueError, match="unknown candle session"):
        CandleSymbol("AAPL", session="sometimes")
    with pytest.raises(ValueError, match="unknown candle alignment"):
        CandleSymbol("AAPL", alignment="noon")


def test_evolve_reconverts() -> None:
    sym = attrs.evolve(CandleSymbol("AAPL", "5m"), session="regular")
    assert str(sym) == "AAPL{=5m,tho=true}"


# --- CandleSymbol: extra (unknown) keys --------------------------------------------------------


def test_extra_keys_preserved_verbatim_and_sorted() -> None:
    sym = CandleSymbol.parse("AAPL{zz=Keep,=5m,Price=Bid,b=1,tho=true}")
    # Keys are case-sensitive: "Price" is not "price", so it is an unknown key.
    assert sym.price is None
    assert sym.extra == (("Price", "Bid"), ("b", "1"), ("zz", "Keep"))
    assert str(sym) == "AAPL{=5m,Price=Bid,b=1,tho=true,zz=Keep}"
    assert normalize_candle_symbol(str(sym)) == str(sym)


def test_extra_key_with_no_other_attributes() -> None:
    sym = CandleSymbol.parse("AAPL{foo=bar}")
    assert sym.period is None
    assert str(sym) == "AAPL{foo=bar}"


def test_extra_value_may_be_empty_or_contain_equals() -> None:
    assert normalize_candle_symbol("AAPL{x=,y=a=b}") == "AAPL{x=,y=a=b}"


def test_construct_extra() -> None:
    from_mapping = CandleSymbol("AAPL", "d", extra={"z": "1", "b": "2"})
    from_pairs = CandleSymbol("AAPL", "d", extra=[("b", "2"), ("z", "1")])
    assert from_mapping == from_pairs
    assert from_mapping.extra == (("b", "2"), ("z", "1"))
    assert str(from_mapping) == "AAPL{=d,b=2,z=1}"


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        ([("x", "1"), ("x", "2")], "duplicate key 'x'"),
        ([("tho", "true")], "known candle attribute"),
        ([("", "5m")], "known candle attribute"),
        ([("a=b", "1")], "contains one of"),
        ([("x", "1,2")], "contains one of"),
        ([("x", "}")], "contains one of"),
    ],
)
def test_construct_extra_rejects(extra: list[tuple[str, str]], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        CandleSymbol("AAPL", extra=extra)


# --- CandleSymbol.parse: errors ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("", "empty base symbol"),
        ("{=5m}", "empty base symbol"),
        ("AAPL{=5m", "unbalanced braces"),
        ("AAPL=5m}", "unbalanced braces"),
        ("AAPL}=5m{", "unbalanced braces"),
        ("AAPL{{=5m}}", "more than one pair of braces"),
        ("AAPL{=5m}{tho=true}", "more than one pair of braces"),
        ("AAPL{=5m}X", "unexpected text 'X' after '}'"),
        ("AAPL{=5x}", "bad candle period '5x'"),
        ("AAPL{=}", "bad candle period ''"),
        ("AAPL{=0m}", "bad candle period '0m'"),
        ("AAPL{=-1m}", "bad candle period '-1m'"),
        ("AAPL{=5m,tho=yes}", "bad boolean 'yes'"),
        ("AAPL{=5m,tho=regular}", "bad boolean 'regular'"),
        ("AAPL{=5m,tho=}", "bad boolean ''"),
        ("AAPL{=5m,=1d}", "duplicate key ''"),
        ("AAPL{tho=true,tho=false}", "duplicate key 'tho'"),
        ("AAPL{x=1,x=1}", "duplicate key 'x'"),
        ("AAPL{=5m,pl=abc}", "bad number 'abc'"),
        ("AAPL{=5m,pl=}", "bad number ''"),
        ("AAPL{=5m,pl=inf}", "bad number 'inf'"),
        ("AAPL{=5m,pl= 1}", "bad number ' 1'"),
        ("AAPL{=5m,pl=1_0}", "bad number '1_0'"),
        ("AAPL{=5m,pl=1e999}", "price level must be finite"),
        ("AAPL{=5m,pl=-1}", "price level must be finite and >= 0"),
        ("AAPL{=5m,price=open}", "unknown candle price 'open'"),
        ("AAPL{=5m,price=}", "missing candle price"),
        ("AAPL{=5m,a=x}", "unknown candle alignment 'x'"),
        ("AAPL{=5m,tho}", "attribute 'tho' has no '='"),
        ("AAPL{=5m,}", "attribute '' has no '='"),
        ("AAPL{,=5m}", "attribute '' has no '='"),
    ],
)
def test_parse_errors(text: str, match: str) -> None:
    with pytest.raises(SymbolError, match=match) as info:
        CandleSymbol.parse(text)
    assert str(info.value).startswith(f"invalid candle symbol {text!r}: ")
    assert isinstance(info.value, DXLinkError)
    assert isinstance(info.value, ValueError)  # what callers caught before SymbolError existed
    with pytest.raises(SymbolError, match=match):
        normalize_candle_symbol(text)


def test_constructor_errors_are_symbol_errors() -> None:
    with pytest.raises(SymbolError, match="empty base symbol"):
        CandleSymbol("")
    with pytest.raises(SymbolError, match="unknown candle price"):
        CandleSymbol("AAPL", price="open")
    with pytest.raises(SymbolError, match="must be positive and finite"):
        CandlePeriod(0, "m")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30s", 30_000),
        ("5m", 300_000),
        ("0.5h", 1_800_000),
        ("2h", 7_200_000),
        ("d", 86_400_000),
        ("2w", 14 * 86_400_000),
        ("t", None),
        ("100v", None),
        ("mo", None),
        ("o", None),
        ("y", None),
        ("pr", None),
    ],
)
def test_period_milliseconds(text: str, expected: int | None) -> None:
    assert CandlePeriod.parse(text).milliseconds == expected


# --- Property: str(parse(str(sym))) == str(sym) ------------------------------------------------

_bases = st.text(
    alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabc0123456789/.:_-", min_size=1, max_size=12
).flatmap(lambda s: st.sampled_from([s, s + "&Q", s + "&A"]))

_period_values = st.one_of(
    st.integers(min_value=1, max_value=10_000).map(float),
    st.floats(min_value=1e-9, max_value=1e12, allow_nan=False, allow_infinity=False).filter(
        lambda v: v > 0
    ),
)

_periods = st.builds(CandlePeriod, _period_values, st.sampled_from(list(CandleType)))

_price_levels = st.one_of(
    st.none(),
    st.integers(min_value=0, max_value=10_000).map(float),
    st.floats(min_value=0, max_value=1e9, allow_nan=False, allow_infinity=False),
)

_extra_keys = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCXYZ_", min_size=1, max_size=6).filter(
    lambda k: k not in {"price", "tho", "a", "pl"}
)
_extra_values = st.text(alphabet="abcXYZ0123456789.=-_", max_size=6)

_symbols = st.builds(
    CandleSymbol,
    _bases,
    st.one_of(st.none(), _periods),
    price=st.one_of(st.none(), st.sampled_from(list(CandlePrice))),
    session=st.one_of(st.none(), st.sampled_from(list(CandleSession))),
    alignment=st.one_of(st.none(), st.sampled_from(list(CandleAlignment))),
    price_level=_price_levels,
    extra=st.dictionaries(_extra_keys, _extra_values, max_size=3),
)


@given(_symbols)
def test_property_str_parse_round_trip(sym: CandleSymbol) -> None:
    text = str(sym)
    reparsed = CandleSymbol.parse(text)
    assert str(reparsed) == text
    assert normalize_candle_symbol(text) == text
    # What the text carries survives the trip.
    assert reparsed.base == sym.base
    assert reparsed.extra == sym.extra
    assert (reparsed.period or CandlePeriod()) == (sym.period or CandlePeriod())
    assert (reparsed.price or CandlePrice.LAST) is (sym.price or CandlePrice.LAST)
    assert reparsed.price_level == sym.price_level


@given(_periods)
def test_property_period_round_trip(period: CandlePeriod) -> None:
    assert CandlePeriod.parse(str(period)) == period
