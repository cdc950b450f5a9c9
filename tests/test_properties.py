"""Property tests: encoding then decoding any event under any field layout gives it back, and
the connection's event stream does not depend on how the server splits it into messages."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any

import attrs
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trio_dxlink._codec import (
    Kind,
    compile_row_decoder,
    decode_full,
    encode_compact,
    encode_full,
    field_kinds,
)
from trio_dxlink._connection import ClientConnection, FeedEvents
from trio_dxlink._exceptions import RemoteProtocolError
from trio_dxlink._messages import SubscriptionEntry
from trio_dxlink.events import EVENT_TYPES, Candle, Event, Greeks, Quote, Trade

SETTINGS = settings(max_examples=50, deadline=None)
STREAM_SETTINGS = settings(max_examples=80, deadline=None)

# Wire names no event class has: decoders must skip them.
EXTRA_WIRE_NAMES = ("eventType", "someFutureField", "x")

_NAN = object()  # stands for NaN in comparison keys, so that NaN matches NaN


def key(event: Event) -> tuple[Any, ...]:
    """A comparison key for an event: the class, then (type, value) per field, NaN-aware."""
    values = attrs.astuple(event, recurse=False)
    return (
        type(event),
        *((type(v), _NAN if isinstance(v, float) and math.isnan(v) else v) for v in values),
    )


def keys(events: Sequence[Event]) -> list[tuple[Any, ...]]:
    return [key(e) for e in events]


# --- strategies ---

_BY_KIND: dict[Kind, st.SearchStrategy[Any]] = {
    Kind.DOUBLE: st.floats(allow_nan=True, allow_infinity=True),
    Kind.LONG: st.integers(min_value=-(2**63), max_value=2**63 - 1),
    Kind.STRING: st.none() | st.text(max_size=8),
    Kind.BOOL: st.booleans(),
}


def events_of(cls: type[Event]) -> st.SearchStrategy[Event]:
    fields = {
        name: st.text(max_size=12) if name == "event_symbol" else _BY_KIND[kind]
        for name, kind in field_kinds(cls).items()
    }
    return st.fixed_dictionaries(fields).map(lambda kwargs: cls(**kwargs))


@st.composite
def layouts(draw: st.DrawFn, cls: type[Event]) -> tuple[str, ...]:
    """A random subset of ``cls``'s wire fields plus unknown names, in random order, always
    with ``eventSymbol``."""
    optional = [w for w in cls.wire_fields() if w != "eventSymbol"] + list(EXTRA_WIRE_NAMES)
    chosen = draw(st.lists(st.sampled_from(optional), unique=True))
    return tuple(draw(st.permutations(["eventSymbol", *chosen])))


def trimmed(event: Event, wire_names: Sequence[str]) -> Event:
    """``event`` with every field whose wire name is not in ``wire_names`` set to its default."""
    cls = type(event)
    present = set(wire_names)
    kwargs = {
        f.name: getattr(event, f.name) if cls.WIRE_NAMES[f.name] in present else f.default
        for f in attrs.fields(cls)
    }
    return cls(**kwargs)


def through_json(value: Any) -> Any:
    return orjson.loads(orjson.dumps(value))


# --- the codec round trip ---


@pytest.mark.parametrize("cls", EVENT_TYPES, ids=lambda c: c.__name__)
@SETTINGS
@given(data=st.data())
def test_compact_round_trip(cls: type[Event], data: st.DataObject) -> None:
    events = data.draw(st.lists(events_of(cls), max_size=5), label="events")
    layout = data.draw(layouts(cls), label="layout")
    values = through_json(encode_compact(events, layout))
    assert len(values) == len(events) * len(layout)
    decoded = compile_row_decoder(cls, layout)(values)
    assert keys(decoded) == keys([trimmed(e, layout) for e in events])


@pytest.mark.parametrize("cls", EVENT_TYPES, ids=lambda c: c.__name__)
@SETTINGS
@given(data=st.data())
def test_full_round_trip(cls: type[Event], data: st.DataObject) -> None:
    event = data.draw(events_of(cls), label="event")
    obj = encode_full(event)
    assert obj["eventType"] == cls.EVENT_TYPE
    # a FULL object may leave fields out (empty ones always are) and carry unknown keys
    kept = data.draw(layouts(cls), label="kept")
    obj = {k: v for k, v in obj.items() if k in kept or k == "eventType"}
    obj["someFutureField"] = [1, {"a": None}]
    decoded = decode_full(cls, through_json(obj))
    assert key(decoded) == key(trimmed(event, kept))


@pytest.mark.parametrize("cls", [Quote, Candle], ids=lambda c: c.__name__)
@SETTINGS
@given(data=st.data())
def test_ragged_arrays_always_raise(cls: type[Event], data: st.DataObject) -> None:
    layout = data.draw(layouts(cls).filter(lambda names: len(names) > 1), label="layout")
    events = data.draw(st.lists(events_of(cls), min_size=1, max_size=4), label="events")
    values = through_json(encode_compact(events, layout))
    off_by = data.draw(st.integers(1, len(layout) - 1), label="off by")
    ragged = data.draw(
        st.sampled_from([values[:-off_by], values + values[:off_by]]), label="ragged"
    )
    with pytest.raises(RemoteProtocolError, match="not a multiple"):
        compile_row_decoder(cls, layout)(ragged)


# --- the connection: whole vs. split messages ---

STREAM_TYPES: tuple[type[Event], ...] = (Quote, Trade, Greeks)


def runs(events: Sequence[Event]) -> list[list[Event]]:
    """Consecutive runs of events of the same type."""
    out: list[list[Event]] = []
    for event in events:
        if out and type(out[-1][0]) is type(event):
            out[-1].append(event)
        else:
            out.append([event])
    return out


def compact_data(events: Sequence[Event], layouts_by_type: dict[str, tuple[str, ...]]) -> list[Any]:
    data: list[Any] = []
    for run in runs(events):
        name = type(run[0]).EVENT_TYPE
        data += [name, encode_compact(run, layouts_by_type[name])]
    return data


def full_data(events: Sequence[Event]) -> list[Any]:
    return [encode_full(e) for e in events]


def connected(layouts_by_type: dict[str, tuple[str, ...]] | None) -> tuple[ClientConnection, int]:
    """An authorized connection with an open channel subscribed to every stream type; when
    given, the server reports ``layouts_by_type`` in FEED_CONFIG."""
    conn = ClientConnection(None)
    conn.start(0.0)
    conn.receive_message('{"type":"SETUP","channel":0,"version":"test"}', 0.0)
    conn.receive_message('{"type":"AUTH_STATE","channel":0,"state":"AUTHORIZED"}', 0.0)
    cid = conn.open_channel()
    conn.subscribe(cid, [SubscriptionEntry(cls.EVENT_TYPE, "*") for cls in STREAM_TYPES])
    conn.receive_message(
        orjson.dumps({"type": "CHANNEL_OPENED", "channel": cid, "service": "FEED"}).decode(), 0.0
    )
    config: dict[str, Any] = {"type": "FEED_CONFIG", "channel": cid, "dataFormat": "COMPACT"}
    if layouts_by_type is not None:
        config["eventFields"] = {name: list(fields) for name, fields in layouts_by_type.items()}
    conn.receive_message(orjson.dumps(config).decode(), 0.0)
    conn.data_to_send(0.0)
    return conn, cid


def deliver(
    messages: Sequence[list[Any]], layouts_by_type: dict[str, tuple[str, ...]] | None
) -> list[Event]:
    conn, cid = connected(layouts_by_type)
    out: list[Event] = []
    for data in messages:
        frame = orjson.dumps({"type": "FEED_DATA", "channel": cid, "data": data})
        for item in conn.receive_message(frame, 1.0):
            assert isinstance(item, FeedEvents)
            assert item.channel == cid
            assert all(type(e) is item.event_type for e in item.events)
            out += item.events
    assert conn.statistics.events_received == len(out)
    return out


@st.composite
def splits(draw: st.DrawFn, n: int) -> list[tuple[int, int]]:
    """A random partition of ``range(n)`` into consecutive slices, as (start, stop) pairs."""
    cuts = sorted(draw(st.sets(st.integers(1, max(n - 1, 1)), max_size=n)) - {n})
    bounds = [0, *cuts, n]
    return [(a, b) for a, b in itertools.pairwise(bounds) if b > a]


@STREAM_SETTINGS
@given(data=st.data())
def test_compact_stream_is_independent_of_message_boundaries(data: st.DataObject) -> None:
    events = data.draw(
        st.lists(st.one_of([events_of(cls) for cls in STREAM_TYPES]), min_size=1, max_size=20),
        label="events",
    )
    reported = data.draw(st.booleans(), label="server reports eventFields")
    layouts_by_type = {
        cls.EVENT_TYPE: data.draw(layouts(cls), label=f"{cls.EVENT_TYPE} layout")
        if reported
        else cls.wire_fields()
        for cls in STREAM_TYPES
    }
    expected = keys([trimmed(e, layouts_by_type[type(e).EVENT_TYPE]) for e in events])
    config = layouts_by_type if reported else None

    whole = deliver([compact_data(events, layouts_by_type)], config)
    one_each = deliver([compact_data([e], layouts_by_type) for e in events], config)
    parts = data.draw(splits(len(events)), label="splits")
    random_split = deliver([compact_data(events[a:b], layouts_by_type) for a, b in parts], config)

    assert keys(whole) == expected
    assert keys(one_each) == expected
    assert keys(random_split) == expected


@STREAM_SETTINGS
@given(data=st.data())
def test_full_stream_is_independent_of_message_boundaries(data: st.DataObject) -> None:
    events = data.draw(
        st.lists(st.one_of([events_of(cls) for cls in STREAM_TYPES]), min_size=1, max_size=20),
        label="events",
    )
    expected = keys(events)
    whole = deliver([full_data(events)], None)
    one_each = deliver([full_data([e]) for e in events], None)
    parts = data.draw(splits(len(events)), label="splits")
    random_split = deliver([full_data(events[a:b]) for a, b in parts], None)
    assert keys(whole) == expected
    assert keys(one_each) == expected
    assert keys(random_split) == expected
