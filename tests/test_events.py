"""The event catalog: immutability, hashing, pickling, flags and index helpers."""

from __future__ import annotations

import copy
import math
import pickle
from collections.abc import Callable

import attrs
import pytest

from trio_dxlink._codec import compile_row_decoder, decode_full
from trio_dxlink.events import (
    EVENT_TYPES,
    Candle,
    Event,
    EventFlag,
    Greeks,
    IndexedEvent,
    Order,
    Quote,
    Side,
    TickDirection,
    TimeAndSale,
    TimeSeriesEvent,
    Trade,
    event_class,
    index_from_time,
    sequence_from_index,
    time_from_index,
)

GREEKS_INDEX = 7235129486797176832
GREEKS_TIME = 1684559855338


def finite_quote() -> Quote:
    return Quote("AAPL", 1, 2, 3, 4, "Q", 1.5, 100.0, 5, "Z", 1.75, 200.0)


def decoded_quote() -> Quote:
    layout = ("eventSymbol", "bidPrice", "askPrice", "bidSize", "askSize")
    (event,) = compile_row_decoder(Quote, layout)(["AAPL", 1.5, 1.75, 100, 200])
    assert isinstance(event, Quote)
    return event


# --- immutability ---


@pytest.mark.parametrize("cls", EVENT_TYPES, ids=lambda c: c.__name__)
def test_constructed_events_are_frozen(cls: type[Event]) -> None:
    event = cls(event_symbol="X")  # type: ignore[call-arg]
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        event.event_symbol = "Y"  # type: ignore[misc]
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        del event.event_symbol  # type: ignore[misc]
    assert event.event_symbol == "X"


@pytest.mark.parametrize("cls", EVENT_TYPES, ids=lambda c: c.__name__)
def test_compact_decoded_events_are_frozen_instances_of_their_class(cls: type[Event]) -> None:
    (event,) = compile_row_decoder(cls, ("eventSymbol",))(["X"])
    assert type(event) is cls
    assert isinstance(event, Event)
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        event.event_time = 5  # type: ignore[misc]
    assert event.event_time == 0
    with pytest.raises(AttributeError):
        event.brand_new_attribute = 1  # type: ignore[attr-defined]


def test_full_decoded_events_are_frozen() -> None:
    event = decode_full(Trade, {"eventSymbol": "X", "price": 1.0})
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        event.price = 2.0  # type: ignore[misc]


def test_evolve_makes_a_new_event_and_leaves_the_old_one() -> None:
    event = decoded_quote()
    changed = attrs.evolve(event, bid_price=2.0)
    assert changed.bid_price == 2.0
    assert event.bid_price == 1.5


# --- equality, hashing, pickling ---


def test_decoded_event_equals_and_hashes_like_a_constructed_one() -> None:
    built = Quote("AAPL", bid_price=1.5, ask_price=1.75, bid_size=100.0, ask_size=200.0)
    decoded = decoded_quote()
    assert decoded == built
    assert hash(decoded) == hash(built)
    assert len({decoded, built}) == 1
    assert {built: "x"}[decoded] == "x"


def test_different_events_are_unequal() -> None:
    assert finite_quote() != attrs.evolve(finite_quote(), ask_size=201.0)
    assert Trade("X") != Quote("X")  # type: ignore[comparison-overlap]


@pytest.mark.parametrize("cls", EVENT_TYPES, ids=lambda c: c.__name__)
def test_every_event_is_hashable(cls: type[Event]) -> None:
    (event,) = compile_row_decoder(cls, ("eventSymbol",))(["X"])
    assert isinstance(hash(event), int)
    assert hash(event) == hash(cls(event_symbol="X"))  # type: ignore[call-arg]


@pytest.mark.parametrize("make", [finite_quote, decoded_quote])
def test_events_pickle(make: Callable[[], Quote]) -> None:
    event = make()
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        clone = pickle.loads(pickle.dumps(event, protocol))
        assert type(clone) is Quote
        assert clone == event
        assert hash(clone) == hash(event)
        with pytest.raises(attrs.exceptions.FrozenInstanceError):
            clone.bid_price = 0.0  # type: ignore[misc]


@pytest.mark.parametrize("cls", EVENT_TYPES, ids=lambda c: c.__name__)
def test_every_event_pickles_with_nan_fields(cls: type[Event]) -> None:
    (event,) = compile_row_decoder(cls, ("eventSymbol",))(["X"])
    clone = pickle.loads(pickle.dumps(event))
    assert type(clone) is cls
    assert _nan_equal(clone, event)
    assert not _nan_equal(clone, attrs.evolve(event, event_symbol="Y"))


def _nan_equal(a: Event, b: Event) -> bool:
    """Field-by-field equality in which NaN equals NaN."""
    if type(a) is not type(b):
        return False
    for x, y in zip(attrs.astuple(a), attrs.astuple(b), strict=True):
        if isinstance(x, float) and math.isnan(x):
            if not (isinstance(y, float) and math.isnan(y)):
                return False
        elif x != y:
            return False
    return True


def test_copy_and_deepcopy() -> None:
    event = decoded_quote()
    assert copy.copy(event) == event
    assert copy.deepcopy(event) == event


# --- the catalog ---


def test_event_class_lookup() -> None:
    for cls in EVENT_TYPES:
        assert event_class(cls.EVENT_TYPE) is cls
        assert cls.__name__ == cls.EVENT_TYPE
    with pytest.raises(KeyError, match="unknown event type 'Bogus'"):
        event_class("Bogus")


def test_catalog_hierarchy() -> None:
    assert issubclass(Greeks, TimeSeriesEvent)
    assert issubclass(Candle, TimeSeriesEvent)
    assert issubclass(TimeAndSale, TimeSeriesEvent)
    assert issubclass(Order, IndexedEvent)
    assert not issubclass(Order, TimeSeriesEvent)
    assert not issubclass(Quote, IndexedEvent)
    assert len({cls.EVENT_TYPE for cls in EVENT_TYPES}) == len(EVENT_TYPES)


def test_defaults_mean_no_value() -> None:
    quote = Quote("X")
    assert math.isnan(quote.bid_price)
    assert quote.bid_time == 0
    assert quote.bid_exchange_code is None


def test_string_enums_compare_to_wire_strings() -> None:
    (sale,) = compile_row_decoder(TimeAndSale, ("eventSymbol", "aggressorSide"))(["X", "BUY"])
    assert sale.aggressor_side == Side.BUY
    assert Side("SELL") is Side.SELL
    assert TickDirection.ZERO_UP == "ZERO_UP"


# --- flags ---


def test_event_flag_values() -> None:
    assert EventFlag.TX_PENDING == 0x01
    assert EventFlag.REMOVE_EVENT == 0x02
    assert EventFlag.SNAPSHOT_BEGIN == 0x04
    assert EventFlag.SNAPSHOT_END == 0x08
    assert EventFlag.SNAPSHOT_SNIP == 0x10
    assert EventFlag.SNAPSHOT_MODE == 0x40
    assert EventFlag.REMOVE_SYMBOL == 0x80


@pytest.mark.parametrize(
    ("flags", "tx", "remove", "begin", "end", "snip"),
    [
        (0, False, False, False, False, False),
        (0x01, True, False, False, False, False),
        (0x02, False, True, False, False, False),
        (0x04, False, False, True, False, False),
        (0x08, False, False, False, True, False),
        (0x10, False, False, False, False, True),
        # an empty snapshot: BEGIN | END | REMOVE_EVENT
        (0x0E, False, True, True, True, False),
        # bits above the ones the helpers read do not confuse them
        (0x40 | 0x80 | 0x20 | 0x100, False, False, False, False, False),
    ],
)
def test_flag_helpers(
    flags: int, tx: bool, remove: bool, begin: bool, end: bool, snip: bool
) -> None:
    candle = Candle("AAPL{=d}", event_flags=flags)
    assert candle.tx_pending is tx
    assert candle.remove_event is remove
    assert candle.snapshot_begin is begin
    assert candle.snapshot_end is end
    assert candle.snapshot_snip is snip


def test_flags_property() -> None:
    candle = Candle("AAPL{=d}", event_flags=0x0E)
    assert (
        candle.flags == EventFlag.SNAPSHOT_BEGIN | EventFlag.SNAPSHOT_END | EventFlag.REMOVE_EVENT
    )
    assert EventFlag.SNAPSHOT_END in candle.flags
    assert EventFlag.TX_PENDING not in candle.flags
    assert Order("X", event_flags=0x100 | 0x01).flags == EventFlag.TX_PENDING


# --- index encoding ---


def test_tastytrade_greeks_index_example() -> None:
    assert time_from_index(GREEKS_INDEX) == GREEKS_TIME
    assert sequence_from_index(GREEKS_INDEX) == 0
    assert index_from_time(GREEKS_TIME) == GREEKS_INDEX
    greeks = Greeks(".SPY230616C400", index=GREEKS_INDEX, time=GREEKS_TIME)
    assert greeks.index_time == greeks.time
    assert greeks.index_sequence == 0


def test_index_bit_layout() -> None:
    index = index_from_time(1_000_999, sequence=0x3FFFFF)
    assert index == (1000 << 32) | (999 << 22) | 0x3FFFFF
    assert time_from_index(index) == 1_000_999
    assert sequence_from_index(index) == 0x3FFFFF


@pytest.mark.parametrize("time_ms", [0, 1, 999, 1000, 1_700_000_000_123, 2**31 * 1000 + 7])
@pytest.mark.parametrize("sequence", [0, 1, 12345, 0x3FFFFF])
def test_index_round_trip(time_ms: int, sequence: int) -> None:
    index = index_from_time(time_ms, sequence)
    assert time_from_index(index) == time_ms
    assert sequence_from_index(index) == sequence


def test_index_orders_like_time_then_sequence() -> None:
    pairs = [
        (1_700_000_000_000, 5),
        (1_700_000_000_000, 6),
        (1_700_000_000_001, 0),
        (1_700_000_001_000, 0),
    ]
    indexes = [index_from_time(t, s) for t, s in pairs]
    assert indexes == sorted(indexes)


@pytest.mark.parametrize("sequence", [-1, 0x400000])
def test_sequence_must_fit_in_22_bits(sequence: int) -> None:
    with pytest.raises(ValueError, match="22 bits"):
        index_from_time(0, sequence)
