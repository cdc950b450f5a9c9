"""Event decoding: compiled COMPACT row decoders, FULL objects, and the encoders."""

from __future__ import annotations

import math
from typing import Any

import attrs
import orjson
import pytest

from trio_dxlink._codec import (
    Kind,
    compile_row_decoder,
    decode_full,
    encode_compact,
    encode_full,
    field_kinds,
)
from trio_dxlink._exceptions import RemoteProtocolError
from trio_dxlink.events import (
    EVENT_TYPES,
    Candle,
    Event,
    Greeks,
    Profile,
    Quote,
    TimeAndSale,
    Trade,
    Underlying,
)

# The field list tastytrade's own example requested for Trade (protocol reference §2.1): the
# trace's rows are 5 values long, eventType first and eventSymbol second, followed by the price,
# the day volume (exponent form, 1.3743299E7) and the size.
TRACE_LAYOUT = ("eventType", "eventSymbol", "price", "dayVolume", "size")
TRACE_VALUES_TEXT = (
    '["Trade","SPY",559.36,1.3743299E7,100.0,"Trade","BTC/USD:CXTALP",58356.71,"NaN","NaN"]'
)


def same(a: Any, b: Any) -> bool:
    """Equality that treats NaN as equal to NaN (attrs' ``==`` does not)."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return type(a) is type(b) and a == b


def assert_event(event: Event, cls: type[Event], **expected: Any) -> None:
    """``event`` is exactly a ``cls`` whose fields are ``expected``, else the defaults."""
    assert type(event) is cls
    for f in attrs.fields(cls):
        want = expected.get(f.name, f.default)
        got = getattr(event, f.name)
        assert same(got, want), f"{cls.__name__}.{f.name}: {got!r} != {want!r}"


def sample(cls: type[Event], salt: int = 0) -> tuple[list[Any], dict[str, Any]]:
    """A wire row (in ``cls.wire_fields()`` order) with a distinct, non-default value in every
    slot, and the attribute values it should decode to (the same values)."""
    row: list[Any] = []
    expected: dict[str, Any] = {}
    for i, (name, kind) in enumerate(field_kinds(cls).items()):
        n = i + 1 + salt
        value: Any
        if name == "event_symbol":
            value = f"SYM{salt}"
        elif kind is Kind.DOUBLE:
            value = n + 0.25
        elif kind is Kind.LONG:
            value = 1_700_000_000_000 + n
        elif kind is Kind.STRING:
            value = f"s{n}"
        else:
            value = n % 2 == 1
        row.append(value)
        expected[name] = value
    return row, expected


# --- the real tastytrade trace ---


def test_tastytrade_trace_decodes_with_the_requested_fields() -> None:
    decoder = compile_row_decoder(Trade, TRACE_LAYOUT)
    spy, btc = decoder(orjson.loads(TRACE_VALUES_TEXT))
    assert_event(spy, Trade, event_symbol="SPY", price=559.36, day_volume=13743299.0, size=100.0)
    assert_event(btc, Trade, event_symbol="BTC/USD:CXTALP", price=58356.71)
    assert math.isnan(btc.day_volume)
    assert math.isnan(btc.size)
    assert btc.time == 0
    assert btc.exchange_code is None


# --- every event type, COMPACT and FULL ---


@pytest.mark.parametrize("cls", EVENT_TYPES, ids=lambda c: c.__name__)
def test_every_event_type_compact(cls: type[Event]) -> None:
    layout = ("eventType", *cls.wire_fields())
    rows = []
    expectations = []
    for salt in range(3):
        row, expected = sample(cls, salt)
        rows += [cls.EVENT_TYPE, *row]
        expectations.append(expected)
    events = compile_row_decoder(cls, layout)(orjson.loads(orjson.dumps(rows)))
    assert len(events) == 3
    for event, expected in zip(events, expectations, strict=True):
        assert_event(event, cls, **expected)


@pytest.mark.parametrize("cls", EVENT_TYPES, ids=lambda c: c.__name__)
def test_every_event_type_full(cls: type[Event]) -> None:
    row, expected = sample(cls, 7)
    obj = {"eventType": cls.EVENT_TYPE, **dict(zip(cls.wire_fields(), row, strict=True))}
    event = decode_full(cls, orjson.loads(orjson.dumps(obj)))
    assert_event(event, cls, **expected)


@pytest.mark.parametrize("cls", EVENT_TYPES, ids=lambda c: c.__name__)
def test_every_event_type_full_with_only_the_symbol(cls: type[Event]) -> None:
    event = decode_full(cls, {"eventType": cls.EVENT_TYPE, "eventSymbol": "ONLY"})
    assert_event(event, cls, event_symbol="ONLY")


def test_wire_names_follow_dxlink_spelling() -> None:
    assert Quote.wire_fields() == (
        "eventSymbol",
        "eventTime",
        "sequence",
        "timeNanoPart",
        "bidTime",
        "bidExchangeCode",
        "bidPrice",
        "bidSize",
        "askTime",
        "askExchangeCode",
        "askPrice",
        "askSize",
    )
    assert "VWAP" in Candle.wire_fields()
    assert "vwap" not in Candle.wire_fields()
    assert {"high52WeekPrice", "low52WeekPrice", "exDividendDayId"} <= set(Profile.wire_fields())
    assert "optionVolume" in Underlying.wire_fields()
    for cls in EVENT_TYPES:
        assert cls.wire_fields()[0] == "eventSymbol"


# --- layouts: reordered, trimmed, unknown and duplicated fields ---


def test_reordered_and_trimmed_layout_takes_defaults() -> None:
    decoder = compile_row_decoder(Quote, ("askPrice", "eventSymbol", "bidSize", "bidPrice"))
    (event,) = decoder([10.5, "AAPL", 300, 10.25])
    assert_event(event, Quote, event_symbol="AAPL", ask_price=10.5, bid_size=300.0, bid_price=10.25)


def test_layout_with_only_the_symbol() -> None:
    decoder = compile_row_decoder(Greeks, ("eventSymbol",))
    events = decoder([".SPY230616C400", ".SPY230616P400"])
    assert [e.event_symbol for e in events] == [".SPY230616C400", ".SPY230616P400"]
    assert_event(events[1], Greeks, event_symbol=".SPY230616P400")


def test_unknown_wire_fields_are_skipped() -> None:
    # tastyware asks for a lower-case "vwap", which is not a dxLink Candle field name.
    layout = ("eventSymbol", "vwap", "close", "brandNewField", "eventType")
    decoder = compile_row_decoder(Candle, layout)
    (event,) = decoder(["AAPL{=d}", 123.5, 124.0, {"nested": [1, 2]}, "Candle"])
    assert_event(event, Candle, event_symbol="AAPL{=d}", close=124.0)
    assert math.isnan(event.vwap)


def test_duplicated_wire_field_uses_the_first_slot() -> None:
    decoder = compile_row_decoder(Quote, ("eventSymbol", "bidPrice", "bidPrice"))
    (event,) = decoder(["A", 1.0, "not even a number"])
    assert event.bid_price == 1.0


def test_empty_value_array_gives_no_events() -> None:
    assert compile_row_decoder(Quote, ("eventSymbol", "bidPrice"))([]) == []


def test_layout_without_event_symbol_is_rejected() -> None:
    with pytest.raises(RemoteProtocolError, match="eventSymbol"):
        compile_row_decoder(Quote, ("eventType", "bidPrice"))


def test_empty_layout_is_rejected() -> None:
    with pytest.raises(RemoteProtocolError, match="empty field list for Quote"):
        compile_row_decoder(Quote, ())


def test_decoders_are_cached_per_class_and_layout() -> None:
    layout = ("eventSymbol", "bidPrice")
    assert compile_row_decoder(Quote, layout) is compile_row_decoder(Quote, layout)
    assert compile_row_decoder(Quote, layout) is not compile_row_decoder(Trade, ("eventSymbol",))


# --- value conversions ---


def test_special_doubles_become_nan_and_infinities() -> None:
    decoder = compile_row_decoder(
        Quote, ("eventSymbol", "bidPrice", "askPrice", "bidSize", "askSize")
    )
    (event,) = decoder(["X", "NaN", "Infinity", "-Infinity", None])
    assert math.isnan(event.bid_price)
    assert event.ask_price == math.inf
    assert event.bid_size == -math.inf
    assert math.isnan(event.ask_size)  # null in a double slot reads as NaN
    for value in (event.bid_price, event.ask_price, event.bid_size, event.ask_size):
        assert type(value) is float


def test_special_doubles_in_full_objects() -> None:
    obj = {
        "eventType": "Quote",
        "eventSymbol": "X",
        "bidPrice": "NaN",
        "askPrice": "-Infinity",
        "bidSize": "Infinity",
    }
    event = decode_full(Quote, obj)
    assert math.isnan(event.bid_price)
    assert event.ask_price == -math.inf
    assert event.bid_size == math.inf


def test_ints_are_accepted_in_double_slots() -> None:
    (event,) = compile_row_decoder(Trade, ("eventSymbol", "price", "size"))(["X", 559, 100])
    assert event.price == 559.0
    assert type(event.price) is float
    assert type(event.size) is float
    full = decode_full(Trade, {"eventSymbol": "X", "price": 559})
    assert type(full.price) is float


def test_integral_floats_are_accepted_in_long_slots() -> None:
    layout = ("eventSymbol", "time", "index")
    (event,) = compile_row_decoder(Greeks, layout)(["X", 1.684559855338e12, 7])
    assert event.time == 1684559855338
    assert type(event.time) is int


def test_large_longs_stay_exact() -> None:
    text = '["X",7235129486797176832,-9223372036854775808]'
    (event,) = compile_row_decoder(Greeks, ("eventSymbol", "index", "time"))(orjson.loads(text))
    assert event.index == 7235129486797176832
    assert event.time == -(2**63)


def test_null_strings_become_none() -> None:
    layout = ("eventSymbol", "exchangeCode", "buyer", "seller", "aggressorSide")
    (event,) = compile_row_decoder(TimeAndSale, layout)(["X", "\u0000", None, None, "BUY"])
    assert event.exchange_code == "\u0000"
    assert event.buyer is None
    assert event.seller is None
    assert event.aggressor_side == "BUY"


def test_empty_exchange_code_is_kept() -> None:
    (event,) = compile_row_decoder(Quote, ("eventSymbol", "bidExchangeCode"))(["X", ""])
    assert event.bid_exchange_code == ""


def test_booleans() -> None:
    layout = ("eventSymbol", "spreadLeg", "validTick", "extendedTradingHours")
    (event,) = compile_row_decoder(TimeAndSale, layout)(["X", True, False, True])
    assert event.spread_leg is True
    assert event.valid_tick is False
    assert event.extended_trading_hours is True


# --- wrong data is an error, never a silent drop or a misaligned event ---


def test_ragged_value_array_raises_with_a_helpful_message() -> None:
    decoder = compile_row_decoder(Trade, TRACE_LAYOUT)
    values = orjson.loads(TRACE_VALUES_TEXT)[:-1]
    with pytest.raises(RemoteProtocolError) as info:
        decoder(values)
    text = str(info.value)
    assert "Trade" in text
    assert "9" in text
    assert "5 fields" in text
    assert "dayVolume" in text


def test_one_value_too_many_raises() -> None:
    decoder = compile_row_decoder(Quote, ("eventSymbol", "bidPrice"))
    with pytest.raises(RemoteProtocolError, match="not a multiple"):
        decoder(["A", 1.0, "B", 2.0, "C"])


@pytest.mark.parametrize(
    ("cls", "layout", "row", "kind"),
    [
        (Quote, ("eventSymbol", "bidPrice"), ["X", "abc"], "double"),
        (Quote, ("eventSymbol", "bidPrice"), ["X", True], "double"),
        (Quote, ("eventSymbol", "bidPrice"), ["X", [1.0]], "double"),
        (Quote, ("eventSymbol", "bidPrice"), ["X", "nan"], "double"),
        (Quote, ("eventSymbol", "bidTime"), ["X", 1.5], "integer"),
        (Quote, ("eventSymbol", "bidTime"), ["X", "NaN"], "integer"),
        (Quote, ("eventSymbol", "bidTime"), ["X", None], "integer"),
        (Quote, ("eventSymbol", "bidTime"), ["X", False], "integer"),
        (Quote, ("eventSymbol", "bidExchangeCode"), ["X", 81], "string"),
        (TimeAndSale, ("eventSymbol", "spreadLeg"), ["X", 1], "boolean"),
        (TimeAndSale, ("eventSymbol", "spreadLeg"), ["X", None], "boolean"),
        (TimeAndSale, ("eventSymbol", "spreadLeg"), ["X", "true"], "boolean"),
        (Quote, ("eventSymbol", "bidPrice"), [None, 1.0], "symbol"),
        (Quote, ("eventSymbol", "bidPrice"), [42, 1.0], "symbol"),
    ],
)
def test_wrong_kind_raises_compact(
    cls: type[Event], layout: tuple[str, ...], row: list[Any], kind: str
) -> None:
    decoder = compile_row_decoder(cls, layout)
    with pytest.raises(RemoteProtocolError) as info:
        decoder(row)
    text = str(info.value)
    assert kind in text
    assert f"{cls.EVENT_TYPE} row 0" in text
    bad = row[0] if kind == "symbol" else row[1]
    assert repr(bad) in text
    with pytest.raises(RemoteProtocolError):
        decode_full(cls, {"eventType": cls.EVENT_TYPE, **dict(zip(layout, row, strict=True))})


def test_wrong_kind_error_names_the_row_and_field() -> None:
    decoder = compile_row_decoder(Quote, ("eventSymbol", "bidPrice", "askPrice"))
    with pytest.raises(RemoteProtocolError) as info:
        decoder(["A", 1.0, 2.0, "B", 1.0, "abc"])
    text = str(info.value)
    assert "row 1" in text
    assert "askPrice" in text
    assert "'abc'" in text


@pytest.mark.parametrize(
    "obj",
    [
        {"eventType": "Quote", "bidPrice": 1.0},
        {"eventType": "Quote", "eventSymbol": None},
        {"eventType": "Quote", "eventSymbol": "X", "bidPrice": "abc"},
        {"eventType": "Quote", "eventSymbol": "X", "bidTime": 1.5},
        {"eventType": "Quote", "eventSymbol": "X", "bidExchangeCode": 5},
    ],
)
def test_wrong_full_object_raises(obj: dict[str, Any]) -> None:
    with pytest.raises(RemoteProtocolError, match="bad Quote event"):
        decode_full(Quote, obj)


def test_full_ignores_unknown_keys_and_defaults_absent_ones() -> None:
    obj = {"eventType": "Trade", "eventSymbol": "SPY", "price": 1.5, "someday": [1], "size": 3}
    assert_event(decode_full(Trade, obj), Trade, event_symbol="SPY", price=1.5, size=3.0)


# --- encoders ---


def test_encode_full_writes_special_doubles_and_leaves_out_none() -> None:
    event = Quote("X", bid_price=math.inf, ask_price=-math.inf, bid_exchange_code="Q")
    obj = encode_full(event)
    assert obj["eventType"] == "Quote"
    assert obj["eventSymbol"] == "X"
    assert obj["bidPrice"] == "Infinity"
    assert obj["askPrice"] == "-Infinity"
    assert obj["bidSize"] == "NaN"
    assert obj["bidExchangeCode"] == "Q"
    assert "askExchangeCode" not in obj
    orjson.dumps(obj)  # plain JSON


def test_encode_compact_layout() -> None:
    events = [Quote("A", bid_price=1.0), Quote("B", ask_size=math.nan)]
    values = encode_compact(events, ("eventType", "eventSymbol", "bidPrice", "bogus"))
    assert values == ["Quote", "A", 1.0, None, "Quote", "B", "NaN", None]
    assert encode_compact([], ("eventSymbol",)) == []


def test_generated_decoders_show_their_source_in_tracebacks() -> None:
    import linecache

    from trio_dxlink._codec import _py_row_decoder

    decoder = _py_row_decoder(Quote, ("eventSymbol", "bidPrice"))
    filename = decoder.__code__.co_filename
    assert linecache.getline(filename, 1) == "def decode(values):\n"
