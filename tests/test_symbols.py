"""Tests for trio_dxlink.symbols: option, futures and futures-option symbols, base symbols.

Candle symbols have their own file, tests/test_candle_symbol.py.
"""

from __future__ import annotations

import datetime
import re
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

import trio_dxlink
import trio_dxlink.testing
from trio_dxlink import DXLinkError
from trio_dxlink.symbols import (
    FutureOptionSymbol,
    FutureSymbol,
    OptionSymbol,
    OptionType,
    SymbolError,
    base_symbol,
    occ_to_streamer,
    streamer_to_occ,
)

JAN19 = datetime.date(2024, 1, 19)

# --- option symbols: the reference's examples ---------------------------------------------------

# (OCC, streamer) pairs from tastytrade's option chains and the SDK's tests.
PAIRS = [
    ("SPY   240119C00480000", ".SPY240119C480"),
    ("SPY   240324P00480500", ".SPY240324P480.5"),
    ("SPXW  240119P04975000", ".SPXW240119P4975"),
    ("SPX   240119C04712250", ".SPX240119C4712.25"),  # the SDK makes 22 characters of this one
    ("AAPL  240119C00182500", ".AAPL240119C182.5"),
    ("F     250620P00002125", ".F250620P2.125"),
    ("QQQ1  301231C99999999", ".QQQ1301231C99999.999"),
    ("VIX   240117C00000050", ".VIX240117C0.05"),
]


@pytest.mark.parametrize(("occ", "streamer"), PAIRS)
def test_occ_and_streamer_forms_convert_both_ways(occ: str, streamer: str) -> None:
    assert occ_to_streamer(occ) == streamer
    assert streamer_to_occ(streamer) == occ
    option = OptionSymbol.parse(streamer)
    assert option == OptionSymbol.parse_occ(occ)
    assert str(option) == option.streamer_symbol == streamer
    assert option.occ == occ
    assert len(option.occ) == 21


def test_parse_gives_the_parts() -> None:
    option = OptionSymbol.parse(".SPXW240119P4975.5")
    assert option.root == "SPXW"
    assert option.expiration == JAN19
    assert option.option_type is OptionType.PUT
    assert not option.is_call
    assert option.strike == Decimal("4975.5")
    assert OptionSymbol.parse(".SPY240119C480").is_call


def test_redundant_strike_zeros_are_dropped() -> None:
    option = OptionSymbol.parse(".SPY240119C0480.50")
    assert str(option) == ".SPY240119C480.5"
    assert option == OptionSymbol.parse(".SPY240119C480.5")


def test_fields_are_converted_and_strikes_kept_exact() -> None:
    by_float = OptionSymbol("SPY", JAN19, "call", 480.1)
    by_text = OptionSymbol("SPY", JAN19, "C", "480.10")
    by_decimal = OptionSymbol("SPY", JAN19, OptionType.CALL, Decimal("480.1"))
    assert by_float == by_text == by_decimal
    assert str(by_float) == ".SPY240119C480.1"  # not 480.10000000000002
    assert str(OptionSymbol("SPY", JAN19, "p", 480)) == ".SPY240119P480"
    assert str(OptionSymbol("SPY", JAN19, "PUT", "4.8E+2")) == ".SPY240119P480"  # no exponent
    assert OptionType.parse("Put") is OptionType.PUT
    assert str(OptionType.CALL) == "C"


# --- option symbols: bad input ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("SPY", "expected '.' ROOT YYMMDD C|P STRIKE"),
        ("", "expected '.'"),
        (".spy240119C480", "expected '.'"),  # symbols are case-sensitive
        (".SPY240119X480", "expected '.'"),
        (".SPY240119C", "expected '.'"),
        (".SPY24119C480", "expected '.'"),
        (".SPY240119C480.", "expected '.'"),
        (".SPY240119C-480", "expected '.'"),
        (".240119C480", "expected '.'"),
        (" .SPY240119C480", "expected '.'"),
        (".SPY241399C1", "'241399' is not a date"),
        (".SPY240230C1", "'240230' is not a date"),
        (".SPY240119C0", "strike must be positive"),
        (".SPY240119C0.000", "strike must be positive"),
    ],
)
def test_bad_streamer_symbols(text: str, match: str) -> None:
    with pytest.raises(SymbolError, match=re.escape(match)) as info:
        OptionSymbol.parse(text)
    assert str(info.value).startswith(f"invalid option symbol {text!r}: ")
    assert isinstance(info.value, DXLinkError)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("SPY   240119C0048000", "expected ROOT"),  # 7 strike digits
        ("SPY   240119C004800000", "expected ROOT"),
        ("SPY   240119Q00480000", "expected ROOT"),
        ("SPYSPYS240119C00480000", "expected ROOT"),  # 7-character root
        ("   SPY240119C00480000", "expected ROOT"),
        ("SPY   241301C00480000", "'241301' is not a date"),
        ("SPY   240119C00000000", "strike must be positive"),
    ],
)
def test_bad_occ_symbols(text: str, match: str) -> None:
    with pytest.raises(SymbolError, match=re.escape(match)):
        OptionSymbol.parse_occ(text)
    with pytest.raises(SymbolError, match=re.escape(match)):
        occ_to_streamer(text)


def test_occ_accepts_fewer_padding_spaces() -> None:
    assert OptionSymbol.parse_occ("SPY 240119C00480000") == OptionSymbol.parse(".SPY240119C480")
    assert OptionSymbol.parse_occ("SPY240119C00480000").occ == "SPY   240119C00480000"


@pytest.mark.parametrize(
    ("streamer", "match"),
    [
        (".SPYSPYSPY240119C480", "longer than the 6 characters"),
        (".SPY240119C480.0005", "does not fit OCC"),
        (".SPY240119C100000", "does not fit OCC"),
    ],
)
def test_options_without_an_occ_spelling(streamer: str, match: str) -> None:
    option = OptionSymbol.parse(streamer)  # a fine streamer symbol...
    with pytest.raises(SymbolError, match=match):
        option.occ  # noqa: B018  ...with no OCC form
    with pytest.raises(SymbolError, match=match):
        streamer_to_occ(streamer)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"root": "spy"}, SymbolError, "bad option root"),
        ({"root": ""}, SymbolError, "bad option root"),
        ({"root": "1SPY"}, SymbolError, "bad option root"),
        ({"expiration": datetime.date(1999, 12, 31)}, SymbolError, "outside 2000-2099"),
        ({"option_type": "X"}, SymbolError, "unknown option type"),
        ({"strike": -1}, SymbolError, "positive"),
        ({"strike": "NaN"}, SymbolError, "positive and finite"),
        ({"strike": "Infinity"}, SymbolError, "positive and finite"),
        ({"strike": "abc"}, SymbolError, "bad strike"),
        ({"strike": float("inf")}, SymbolError, "positive and finite"),
        ({"root": 5}, TypeError, "must be a string"),
        ({"expiration": "2024-01-19"}, TypeError, "datetime.date"),
        ({"expiration": datetime.datetime(2024, 1, 19)}, TypeError, "datetime.date"),
        ({"option_type": True}, TypeError, "must be a string"),
        ({"strike": True}, TypeError, "number or a string"),
        ({"strike": None}, TypeError, "number or a string"),
    ],
)
def test_bad_fields(kwargs: dict[str, object], error: type[Exception], match: str) -> None:
    fields: dict[str, object] = {
        "root": "SPY",
        "expiration": JAN19,
        "option_type": "C",
        "strike": 480,
    }
    with pytest.raises(error, match=match):
        OptionSymbol(**{**fields, **kwargs})  # type: ignore[arg-type]


def test_non_strings_are_type_errors() -> None:
    for parse in (OptionSymbol.parse, OptionSymbol.parse_occ, FutureSymbol.parse):
        with pytest.raises(TypeError, match="must be a string"):
            parse(None)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="must be a string"):
        FutureOptionSymbol.parse(b"./E3AZ24C5000")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="must be a string"):
        base_symbol(None)  # type: ignore[arg-type]


# --- option symbols: properties --------------------------------------------------------------

_roots = st.from_regex(r"[A-Z][A-Z0-9]{0,5}", fullmatch=True)
_dates = st.dates(datetime.date(2000, 1, 1), datetime.date(2099, 12, 31))
_types = st.sampled_from(list(OptionType))
_occ_strikes = st.integers(min_value=1, max_value=99_999_999).map(lambda n: Decimal(n) / 1000)
_strikes = st.one_of(
    _occ_strikes,
    st.decimals(min_value=Decimal("0.000001"), max_value=Decimal(10**9), allow_nan=False, places=6),
)
_options = st.builds(OptionSymbol, _roots, _dates, _types, _strikes)


@given(_options)
def test_property_parse_inverts_format(option: OptionSymbol) -> None:
    text = str(option)
    assert OptionSymbol.parse(text) == option
    assert str(OptionSymbol.parse(text)) == text  # format∘parse is the identity on its output
    strike = text[1 + len(option.root) + 7 :]
    assert re.fullmatch(r"[1-9][0-9]*(\.[0-9]*[1-9])?|0\.[0-9]*[1-9]", strike), strike


@given(st.builds(OptionSymbol, _roots, _dates, _types, _occ_strikes))
def test_property_occ_round_trip(option: OptionSymbol) -> None:
    occ = option.occ
    assert len(occ) == 21
    assert OptionSymbol.parse_occ(occ) == option
    assert occ_to_streamer(occ) == str(option)
    assert streamer_to_occ(str(option)) == occ


@given(st.text(max_size=24))
def test_property_any_text_parses_or_raises_a_symbol_error(text: str) -> None:
    for parse in (
        OptionSymbol.parse,
        OptionSymbol.parse_occ,
        FutureSymbol.parse,
        FutureOptionSymbol.parse,
    ):
        try:
            parsed = parse(text)
        except SymbolError:
            continue
        assert str(parsed) == str(type(parsed).parse(str(parsed)))


# --- futures ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "product", "month", "year", "exchange", "tastytrade"),
    [
        ("/ESZ24:XCME", "ES", 12, 2024, "XCME", "/ESZ4"),
        ("/6AM23:XCME", "6A", 6, 2023, "XCME", "/6AM3"),
        ("/GCZ25:XCEC", "GC", 12, 2025, "XCEC", "/GCZ5"),
        ("/MNQH30", "MNQ", 3, 2030, None, "/MNQH0"),
    ],
)
def test_future_symbols(
    text: str, product: str, month: int, year: int, exchange: str | None, tastytrade: str
) -> None:
    future = FutureSymbol.parse(text)
    assert (future.product, future.month, future.year, future.exchange) == (
        product,
        month,
        year,
        exchange,
    )
    assert str(future) == future.streamer_symbol == text
    assert future.tastytrade_symbol == tastytrade
    assert FutureSymbol(product, future.month_code, year, exchange) == future


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("/ESZ4", "expected '/' PRODUCT MONTH YY"),  # tastytrade's form: the decade is unknown
        ("ESZ24", "expected '/'"),
        ("/ESA24", "expected '/'"),  # A is no month code
        ("/Z24", "expected '/'"),
        ("/ESZ24:", "expected '/'"),
        ("/ESZ24:xcme", "expected '/'"),
        ("/esZ24", "expected '/'"),
    ],
)
def test_bad_future_symbols(text: str, match: str) -> None:
    with pytest.raises(SymbolError, match=re.escape(match)) as info:
        FutureSymbol.parse(text)
    assert str(info.value).startswith(f"invalid futures symbol {text!r}: ")


def test_bad_future_fields() -> None:
    with pytest.raises(SymbolError, match="month must be 1-12"):
        FutureSymbol("ES", 13, 2024)
    with pytest.raises(SymbolError, match="bad futures month code 'A'"):
        FutureSymbol("ES", "A", 2024)
    with pytest.raises(SymbolError, match="outside 2000-2099"):
        FutureSymbol("ES", 12, 24)
    with pytest.raises(SymbolError, match="bad exchange code"):
        FutureSymbol("ES", 12, 2024, "xcme")
    with pytest.raises(SymbolError, match="bad futures product"):
        FutureSymbol("/ES", 12, 2024)


@pytest.mark.parametrize(
    ("text", "root", "month", "year", "kind", "strike", "exchange"),
    [
        ("./E3AZ24C5000:XCME", "E3A", 12, 2024, OptionType.CALL, Decimal(5000), "XCME"),
        ("./EW3N24C4400:XCME", "EW3", 7, 2024, OptionType.CALL, Decimal(4400), "XCME"),
        ("./EW4Q24C5750:XCME", "EW4", 8, 2024, OptionType.CALL, Decimal(5750), "XCME"),
        ("./OZNZ24P110.5", "OZN", 12, 2024, OptionType.PUT, Decimal("110.5"), None),
    ],
)
def test_future_option_symbols(
    text: str,
    root: str,
    month: int,
    year: int,
    kind: OptionType,
    strike: Decimal,
    exchange: str | None,
) -> None:
    option = FutureOptionSymbol.parse(text)
    assert (
        option.root,
        option.month,
        option.year,
        option.option_type,
        option.strike,
        option.exchange,
    ) == (root, month, year, kind, strike, exchange)
    assert option.is_call is (kind is OptionType.CALL)
    assert str(option) == option.streamer_symbol == text


@pytest.mark.parametrize(
    "text",
    [
        "./ESZ4 E3AZ4 241216C5000",  # tastytrade's own form, not a streamer symbol
        "/E3AZ24C5000:XCME",
        "./E3AZ24X5000:XCME",
        "./E3AZ2C5000",
        "./E3AZ24C:XCME",
    ],
)
def test_bad_future_option_symbols(text: str) -> None:
    with pytest.raises(SymbolError, match=re.escape("expected './' ROOT MONTH YY C|P STRIKE")):
        FutureOptionSymbol.parse(text)


def test_future_option_strike_must_be_positive() -> None:
    with pytest.raises(SymbolError, match="strike must be positive") as info:
        FutureOptionSymbol.parse("./E3AZ24C0:XCME")
    assert str(info.value).startswith("invalid futures option symbol")


_products = st.from_regex(r"[A-Z0-9]{1,4}", fullmatch=True)
_exchanges = st.one_of(st.none(), st.from_regex(r"[A-Z][A-Z0-9]{0,5}", fullmatch=True))
_years = st.integers(min_value=2000, max_value=2099)
_months = st.integers(min_value=1, max_value=12)


@given(st.builds(FutureSymbol, _products, _months, _years, _exchanges))
def test_property_future_round_trip(future: FutureSymbol) -> None:
    assert FutureSymbol.parse(str(future)) == future


@given(st.builds(FutureOptionSymbol, _products, _months, _years, _types, _strikes, _exchanges))
def test_property_future_option_round_trip(option: FutureOptionSymbol) -> None:
    assert FutureOptionSymbol.parse(str(option)) == option


# --- base symbols ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("symbol", "base"),
    [
        ("AAPL", "AAPL"),
        ("AAPL&Q", "AAPL"),
        ("AAPL&Q{=5m}", "AAPL"),
        ("AAPL{=5m,tho=true}", "AAPL"),
        ("EUR/USD{=m,price=bid}", "EUR/USD"),
        ("/ES{=d,price=s}", "/ES"),
        (".SPY240119C480", ".SPY240119C480"),
        ("BTC/USD:CXTALP", "BTC/USD:CXTALP"),
        ("&Q", "&Q"),
        ("A&BC", "A&BC"),  # only a one-character suffix is a regional exchange
    ],
)
def test_base_symbol(symbol: str, base: str) -> None:
    assert base_symbol(symbol) == base


# --- the rest of the package uses this module ------------------------------------------------


def test_public_names() -> None:
    assert trio_dxlink.SymbolError is SymbolError
    assert issubclass(SymbolError, DXLinkError)
    assert trio_dxlink.CandleSymbol is trio_dxlink.symbols.CandleSymbol
    assert trio_dxlink.normalize_candle_symbol is trio_dxlink.symbols.normalize_candle_symbol
    assert trio_dxlink.testing.OptionSymbol is OptionSymbol


def test_the_market_reads_symbols_with_this_module() -> None:
    assert trio_dxlink.testing.parse_option_symbol(".SPY240119C480.50") == OptionSymbol.parse(
        ".SPY240119C480.5"
    )
    assert trio_dxlink.testing.parse_option_symbol(".SPY240119C0") is None
    assert trio_dxlink.testing.parse_option_symbol("/ESZ24:XCME") is None
    # Every spelling CandlePeriod accepts gives the market a bar of that length.
    assert trio_dxlink.testing.candle_period_ms("AAPL{=5minutes}") == 300_000
    assert trio_dxlink.testing.candle_period_ms("AAPL{=0.5hours,tho=true}") == 1_800_000
    assert trio_dxlink.testing.candle_period_ms("AAPL{=mo}") == 60_000  # no fixed length
    assert trio_dxlink.testing.candle_period_ms("AAPL{=5m") == 60_000  # malformed

    market = trio_dxlink.testing.Market(seed=3, clock=lambda: 1_705_000_000.0)
    market.set_mid("SPY", 480.0)
    profile = market.step("Profile", ".SPY240119C480.5")
    assert isinstance(profile, trio_dxlink.Profile)
    assert profile.description == "SPY 2024-01-19 480.5 Call"
    with pytest.raises(ValueError, match="priced from its underlying"):
        market.set_mid(".SPY240119C480", 1.0)
    # A regional candle follows the composite's price.
    assert market.mid("SPY&Q{=d}") == market.mid("SPY")
