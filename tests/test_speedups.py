"""The optional C speedups (``trio_dxlink._speedups``) against their pure-Python twins.

Each C piece has a Python twin that the package uses when the extension is missing or turned
off (``TRIO_DXLINK_NO_SPEEDUPS=1``; CI runs the whole suite both ways). Here both run in one
process on the same inputs and must agree exactly: the same events, value types, errors and
messages.
"""

from __future__ import annotations

import gc
import math
import os
import sys
import warnings
import weakref
from typing import Any, ClassVar

import attrs
import pytest
import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trio_dxlink import Overflow, Quote, open_dxlink
from trio_dxlink._accel import speedups
from trio_dxlink._codec import Kind, _c_row_decoder, _py_row_decoder, field_kinds
from trio_dxlink._exceptions import RemoteProtocolError
from trio_dxlink._router import _py_fan_out, _py_route
from trio_dxlink._subscription import _CANCEL_CHECK_MASK, _PyCursor
from trio_dxlink.events import EVENT_TYPES, Event, event_type
from trio_dxlink.testing import ServerConfig, open_dxlink_server

from .test_properties import layouts

if os.environ.get("TRIO_DXLINK_REQUIRE_SPEEDUPS") == "1":
    # CI sets this, so a silently failed optional build cannot pass for a working one.
    assert speedups is not None, "trio_dxlink._speedups was not built (or is turned off)"

needs_speedups = pytest.mark.skipif(speedups is None, reason="trio_dxlink._speedups not built")


def c_row_decoder(cls: type[Event], layout: tuple[str, ...]) -> Any:
    from trio_dxlink._codec import _with_speedups

    return _with_speedups(cls, layout, _py_row_decoder(cls, layout))


# --- values: every kind's valid forms, and things that are not valid for it ---

_VALID: dict[Kind, st.SearchStrategy[Any]] = {
    Kind.DOUBLE: st.floats(allow_nan=True, allow_infinity=True)
    | st.integers(-(2**70), 2**70)
    | st.sampled_from(["NaN", "Infinity", "-Infinity", None]),
    Kind.LONG: st.integers(-(2**63), 2**63 - 1)
    | st.floats(-(2**60), 2**60).map(float.__floor__).map(float),
    Kind.STRING: st.none() | st.text(max_size=6),
    Kind.BOOL: st.booleans(),
}
_ANYTHING = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=6)
    | st.sampled_from(["NaN", "nan", "inf", "Infinity", "1.5"])
    | st.lists(st.integers(), max_size=2)
    | st.dictionaries(st.text(max_size=2), st.integers(), max_size=1)
)


@st.composite
def rows(draw: st.DrawFn, cls: type[Event], layout: tuple[str, ...], valid: bool) -> list[Any]:
    by_wire = {wire: name for name, wire in cls.WIRE_NAMES.items()}
    kinds = field_kinds(cls)
    out: list[Any] = []
    for wire in layout:
        name = by_wire.get(wire)
        if valid and name == "event_symbol":
            out.append(draw(st.text(max_size=8)))
        elif valid and name is not None:
            out.append(draw(_VALID[kinds[name]]))
        elif valid:
            out.append(draw(_ANYTHING))  # a column the class does not have: never looked at
        else:
            out.append(draw(_ANYTHING))
    return out


def same_event(a: Event, b: Event) -> None:
    assert type(a) is type(b)
    for f in attrs.fields(type(a)):
        x, y = getattr(a, f.name), getattr(b, f.name)
        assert type(x) is type(y), f.name
        assert x == y or (isinstance(x, float) and math.isnan(x) and math.isnan(y)), f.name


def outcome(decode: Any, values: list[Any]) -> tuple[str, Any]:
    try:
        return "ok", decode(values)
    except RemoteProtocolError as exc:
        return "error", str(exc)


@needs_speedups
@pytest.mark.parametrize("cls", EVENT_TYPES, ids=lambda c: c.__name__)
@settings(max_examples=60, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_c_and_python_decoders_agree(cls: type[Event], data: st.DataObject) -> None:
    layout = data.draw(layouts(cls), label="layout")
    valid = data.draw(st.booleans(), label="valid")
    values: list[Any] = []
    for _ in range(data.draw(st.integers(0, 4), label="rows")):
        values += data.draw(rows(cls, layout, valid), label="row")
    if data.draw(st.booleans(), label="ragged") and values:
        values = values[:-1]
    slow, fast = _py_row_decoder(cls, layout), c_row_decoder(cls, layout)
    want, got = outcome(slow, values), outcome(fast, values)
    assert got[0] == want[0], (got, want)
    # the C decoder itself (not its Python fallback) decodes exactly what Python accepts
    raw = _c_row_decoder(cls, layout)(values)
    assert (raw is not None) == (want[0] == "ok")
    if want[0] == "error":
        assert got[1] == want[1]
    else:
        assert len(got[1]) == len(want[1])
        for a, b in zip(got[1], want[1], strict=True):
            same_event(a, b)


@needs_speedups
def test_c_decoded_events_behave_like_any_other() -> None:
    layout = tuple(Quote.WIRE_NAMES.values())
    values = ["SPY", 1, 2, 3, 4, "Q", 1.5, "NaN", 5, None, 2, 3.0]
    (event,) = c_row_decoder(Quote, layout)(values)
    built = Quote("SPY", 1, 2, 3, 4, "Q", 1.5, math.nan, 5, None, 2.0, 3.0)
    assert event == built
    assert hash(event) == hash(built)
    assert type(event.ask_price) is float
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        event.bid_price = 2.0  # type: ignore[misc]
    assert not gc.is_tracked(event)  # only atoms inside: the collector need not look at it
    assert attrs.evolve(event, bid_price=9.0).bid_price == 9.0


@needs_speedups
def test_row_decoder_checks_what_it_is_given() -> None:
    assert speedups is not None
    Fields = Quote.__bases__[0]
    symbol = Fields.__dict__["event_symbol"]

    class Other:
        __slots__ = ("x",)

    K = speedups.KIND_SYMBOL
    with pytest.raises(TypeError, match="slot descriptor"):
        speedups.RowDecoder(Quote, 1, [(0, "event_symbol", K)], [])
    with pytest.raises(TypeError, match="not a writable object slot"):
        speedups.RowDecoder(Quote, 1, [(0, Other.__dict__["x"], K)], [])
    with pytest.raises(ValueError, match="twice"):
        speedups.RowDecoder(Quote, 2, [(0, symbol, K), (1, symbol, K)], [])
    with pytest.raises(ValueError, match="twice"):
        speedups.RowDecoder(Quote, 1, [(0, symbol, K)], [(symbol, "x")])
    with pytest.raises(ValueError, match="bad column"):
        speedups.RowDecoder(Quote, 1, [(1, symbol, K)], [])
    with pytest.raises(ValueError, match="bad column"):
        speedups.RowDecoder(Quote, 1, [(0, symbol, 99)], [])
    with pytest.raises(ValueError, match="width"):
        speedups.RowDecoder(Quote, 0, [], [])

    class Plain:
        pass  # has a __dict__

    class Custom:
        __slots__ = ("a",)

        def __new__(cls) -> Custom:
            return object.__new__(cls)

    class Sized(tuple):  # type: ignore[type-arg]
        __slots__ = ()

    for unsafe in (dict, int, Plain, Custom, Sized):
        with pytest.raises(TypeError, match="cannot be instantiated by filling its slots"):
            speedups.RowDecoder(unsafe, 1, [], [])
    decoder = speedups.RowDecoder(Quote, 1, [(0, symbol, K)], [])
    assert decoder.width == 1
    assert decoder(["a", 1]) is None  # the 1 is not a symbol: it gives up
    assert [e.event_symbol for e in decoder(["a", "b"]) or []] == ["a", "b"]
    assert decoder(("a",)) is None  # only lists
    with pytest.raises(TypeError):
        decoder()  # type: ignore[call-arg]


# --- freeing events ---


@needs_speedups
def test_events_freed_by_slot_dealloc_release_their_values_and_class() -> None:
    assert speedups is not None
    decoder = c_row_decoder(Quote, ("eventSymbol", "bidPrice"))  # installs the deallocator
    symbol = "".join(["SP", "Y"])  # a str of its own, so its reference count is this test's
    price = 123.25
    before = sys.getrefcount(symbol), sys.getrefcount(price)
    events = decoder([symbol, price] * 1000)
    assert sys.getrefcount(symbol) == before[0] + 1000
    holding = sys.getrefcount(Quote)  # each instance holds its class
    del events
    assert (sys.getrefcount(symbol), sys.getrefcount(price)) == before
    assert sys.getrefcount(Quote) == holding - 1000
    # events made by Python code (tracked by the garbage collector) are freed the same way
    made = [Quote(event_symbol=symbol, bid_price=price) for _ in range(100)]
    gc.collect()  # older garbage that holds the class goes first, so the count is ours alone
    holding = sys.getrefcount(Quote)
    del made
    gc.collect()
    assert (sys.getrefcount(symbol), sys.getrefcount(price)) == before
    assert sys.getrefcount(Quote) == holding - 100


@needs_speedups
def test_slot_dealloc_frees_subclass_instances_and_deep_chains() -> None:
    assert speedups is not None
    speedups.use_slot_dealloc(Quote)

    class Tagged(Quote):  # a user's subclass: adds a __dict__ and a __weakref__
        pass

    symbol = "".join(["Q", "QQ"])
    before = sys.getrefcount(symbol), sys.getrefcount(Tagged)
    tagged = Tagged(event_symbol=symbol)
    tagged.__dict__["note"] = [symbol]
    ref = weakref.ref(tagged)
    del tagged
    assert ref() is None
    assert (sys.getrefcount(symbol), sys.getrefcount(Tagged)) == before
    # A chain far deeper than the C stack: freed without recursion overflowing it.
    chain: Any = symbol
    for _ in range(200_000):
        chain = Quote(event_symbol=chain)
    del chain
    assert sys.getrefcount(symbol) == before[0]


@needs_speedups
@pytest.mark.parametrize(
    "body",
    [
        {},  # a __dict__
        {"__slots__": ("a", "__weakref__")},
        {"__slots__": ("a",), "__del__": lambda self: None},
    ],
    ids=["dict", "weakref", "finalizer"],
)
def test_slot_dealloc_refuses_classes_that_need_more(body: dict[str, Any]) -> None:
    assert speedups is not None
    cls = type("NotAnEvent", (), dict(body))
    with pytest.raises(TypeError, match="object slots only"):
        speedups.use_slot_dealloc(cls)


# --- routing ---


def routes_from(table: dict[str, list[str]], before: dict[str, int]) -> dict[str, list[Any]]:
    """A router's table: symbol -> [latest event, handles...]."""
    return {symbol: [before.get(symbol), *handles] for symbol, handles in table.items()}


@needs_speedups
@given(
    table=st.sets(st.sampled_from("ABCDEF")),
    symbols=st.lists(st.sampled_from("ABCDEFG"), max_size=12),
    before=st.dictionaries(st.sampled_from("ABCDEF"), st.integers(), max_size=3),
)
def test_c_and_python_routing_agree(
    table: set[str], symbols: list[str], before: dict[str, int]
) -> None:
    assert speedups is not None
    events: list[Any] = [(s, i) for i, s in enumerate(symbols)]
    py_routes = routes_from({key: ["h"] for key in table}, before)
    c_routes = routes_from({key: ["h"] for key in table}, before)
    want = _py_route(py_routes, symbols, events)
    got = speedups.route(c_routes, symbols, events)
    assert got == want
    assert c_routes == py_routes
    assert (want is None) == all(s in table for s in symbols)
    for symbol in table:  # each route holds its symbol's last event, or what it held before
        last = [e for e in events if e[0] == symbol]
        assert c_routes[symbol][0] == (last[-1] if last else before.get(symbol))


@needs_speedups
@given(
    table=st.dictionaries(
        st.sampled_from("ABCDEF"), st.lists(st.sampled_from(["h1", "h2", "h3"]), unique=True)
    ),
    symbols=st.lists(st.sampled_from("ABCDEFG"), max_size=12),
    before=st.dictionaries(st.sampled_from("ABCDEF"), st.integers(), max_size=3),
)
def test_c_and_python_fan_out_agree(
    table: dict[str, list[str]], symbols: list[str], before: dict[str, int]
) -> None:
    assert speedups is not None
    events: list[Any] = [(s, i) for i, s in enumerate(symbols)]
    py_routes, c_routes = routes_from(table, before), routes_from(table, before)
    want_shares, want_unrouted = _py_fan_out(py_routes, symbols, events)
    got_shares, got_unrouted = speedups.fan_out(c_routes, symbols, events)
    assert list(got_shares.items()) == list(want_shares.items())  # same order, too
    assert got_unrouted == want_unrouted == sum(s not in table for s in symbols)
    assert c_routes == py_routes


@needs_speedups
def test_route_refuses_mismatched_input() -> None:
    assert speedups is not None
    with pytest.raises(TypeError):
        speedups.route({}, ["a"], [])
    with pytest.raises(TypeError):
        speedups.route({}, ("a",), [1])  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        speedups.fan_out({}, ["a"], [])
    with pytest.raises(TypeError, match="latest event, handles"):
        speedups.fan_out({"a": ("h",)}, ["a"], [1])  # type: ignore[dict-item]
    with pytest.raises(TypeError, match="latest event, handles"):
        speedups.route({"a": []}, ["a"], [1])


# --- the async-for cursor ---


def cursors() -> list[Any]:
    out: list[Any] = [_PyCursor]
    if speedups is not None:
        out.append(speedups.Cursor)
    return out


@pytest.mark.parametrize("Cursor", cursors(), ids=lambda c: c.__module__)
async def test_cursor_takes_the_slow_path_every_256th_event_and_at_the_end(Cursor: Any) -> None:
    slow_calls: list[int] = []

    async def slow() -> Any:
        pos = cursor.pos
        slow_calls.append(pos)
        if pos < len(cursor.ready):
            cursor.pos = pos + 1
            return cursor.ready[pos]
        raise StopAsyncIteration

    cursor = Cursor(slow)
    cursor.ready = list(range(600))
    got = [x async for x in cursor]
    assert got == list(range(600))
    mask = _CANCEL_CHECK_MASK
    assert slow_calls == [i for i in range(600) if i & mask == mask] + [600] == [255, 511, 600]


@pytest.mark.parametrize("Cursor", cursors(), ids=lambda c: c.__module__)
async def test_cursor_hands_out_each_value_once_even_when_awaits_overlap(Cursor: Any) -> None:
    async def slow() -> Any:
        raise StopAsyncIteration

    cursor = Cursor(slow)
    tup, exc = ("a tuple",), ValueError("an exception as a value")
    cursor.ready = [tup, exc, None, 4]
    first, second = cursor.__anext__(), cursor.__anext__()  # both pending at once
    assert [await second, await first] == [tup, exc]  # each takes its event when awaited
    assert await cursor.__anext__() is None
    assert await cursor.__anext__() == 4
    with pytest.raises(StopAsyncIteration):
        await cursor.__anext__()


@pytest.mark.parametrize("Cursor", cursors(), ids=lambda c: c.__module__)
async def test_an_awaitable_from_the_cursor_gives_its_event_once(Cursor: Any) -> None:
    async def slow() -> Any:
        raise StopAsyncIteration

    cursor = Cursor(slow)
    cursor.ready = ["a", "b"]
    awaitable = cursor.__anext__()
    assert await awaitable == "a"
    with pytest.raises(RuntimeError, match="already awaited"):
        await awaitable
    assert await cursor.__anext__() == "b"


@needs_speedups
def test_the_cursors_awaitable_also_works_as_a_plain_iterator() -> None:
    # What `await` uses where it does not look for am_send (CPython 3.12 and later).
    assert speedups is not None
    values: list[Any] = [("a", "tuple"), KeyError("k"), None, 7]
    cursor = speedups.Cursor(lambda: None)  # type: ignore[arg-type,return-value]
    cursor.ready = list(values)
    for value in values:
        iterator = cursor.__anext__().__await__()  # type: ignore[attr-defined]
        with pytest.raises(StopIteration) as stop:
            next(iterator)
        assert stop.value.value is value
        with pytest.raises(RuntimeError, match="already awaited"):
            next(iterator)


@pytest.mark.parametrize("Cursor", cursors(), ids=lambda c: c.__module__)
async def test_an_anext_that_is_never_awaited_takes_nothing(Cursor: Any) -> None:
    async def slow() -> Any:
        raise StopAsyncIteration

    cursor = Cursor(slow)
    cursor.ready = [1, 2, 3]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # Python: "never awaited"
        cursor.__anext__()
        gc.collect()
    assert [x async for x in cursor] == [1, 2, 3]


@needs_speedups
async def test_overlapping_anext_calls_that_run_out_are_an_error() -> None:
    assert speedups is not None
    cursor = speedups.Cursor(lambda: None)  # type: ignore[arg-type,return-value]
    cursor.ready = ["only"]
    first, second = cursor.__anext__(), cursor.__anext__()
    assert await first == "only"
    with pytest.raises(RuntimeError, match="overlapping"):
        await second


@needs_speedups
def test_cursor_checks_what_it_is_given() -> None:
    assert speedups is not None
    with pytest.raises(TypeError, match="callable"):
        speedups.Cursor(42)  # type: ignore[arg-type]
    cursor = speedups.Cursor(lambda: None)  # type: ignore[arg-type,return-value]
    with pytest.raises(TypeError, match="list"):
        cursor.ready = (1, 2)  # type: ignore[assignment]
    cursor.pos = -5  # out of range: the slow path decides
    assert cursor.__anext__() is None


async def test_a_consumer_cancelled_at_a_check_loses_no_event() -> None:
    """The cancellation check every 256 events comes before the event is taken."""
    config = ServerConfig(simulate=False, max_events_per_message=1000)  # 300 events, one frame
    async with (
        open_dxlink_server(config=config, in_memory=True) as server,
        open_dxlink(server.url, connector=server.connector()) as feed,
        feed.subscribe(Quote, ["SPY"], overflow=Overflow.LOSSLESS) as rx,
    ):
        with trio.fail_after(5):
            await server.wait_for(lambda: ("Quote", "SPY") in server.subscriptions())
        server.publish(*(Quote("SPY", bid_price=float(i)) for i in range(300)))  # one frame
        seen: list[float] = []
        with trio.CancelScope() as scope:
            async for quote in rx:
                seen.append(quote.bid_price)
                if len(seen) == 10:
                    scope.cancel()  # noticed at the next check, at index 255
        assert scope.cancelled_caught
        assert seen == [float(i) for i in range(255)]
        assert (await rx.receive()).bid_price == 255.0
        rest = [q.bid_price for q in await rx.receive_batch()]
        assert rest == [float(i) for i in range(256, 300)]


def test_the_choice_follows_the_environment() -> None:
    turned_off = os.environ.get("TRIO_DXLINK_NO_SPEEDUPS", "") not in ("", "0")
    if turned_off:
        assert speedups is None
    elif os.environ.get("TRIO_DXLINK_REQUIRE_SPEEDUPS") == "1":
        assert speedups is not None
    else:
        pytest.skip("the extension is optional outside CI")


def test_a_module_built_from_other_sources_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys
    import types

    import trio_dxlink
    from trio_dxlink import _accel

    stale = types.ModuleType("trio_dxlink._speedups")
    stale.__file__ = "/somewhere/_speedups.so"
    stale.API_VERSION = _accel.API_VERSION - 1  # type: ignore[attr-defined]
    monkeypatch.delenv("TRIO_DXLINK_NO_SPEEDUPS", raising=False)
    monkeypatch.setitem(sys.modules, "trio_dxlink._speedups", stale)
    monkeypatch.setattr(trio_dxlink, "_speedups", stale, raising=False)
    with pytest.warns(RuntimeWarning, match="built from other sources"):
        assert _accel._load() is None
    stale.API_VERSION = _accel.API_VERSION  # type: ignore[attr-defined]
    assert _accel._load() is stale


@event_type("FinalizedNote")
class FinalizedNote(Event):
    """A declared type with a finalizer: it keeps CPython's deallocator, and the C decoder."""

    event_symbol: str
    event_time: int = 0
    priority: int = 0
    FINALIZED: ClassVar[list[str]] = []

    def __del__(self) -> None:
        FinalizedNote.FINALIZED.append(self.event_symbol)


@needs_speedups
def test_an_event_type_with_a_finalizer_keeps_the_c_decoder_and_its_finalizer() -> None:
    assert speedups is not None
    fast = _c_row_decoder(FinalizedNote, ("eventSymbol", "priority"))  # refuses no class
    decode = c_row_decoder(FinalizedNote, ("eventSymbol", "priority"))
    assert fast(["A", 1]) is not None  # a C decoder was built (it returns None only on bad rows)
    with pytest.raises(TypeError, match="object slots only"):
        speedups.use_slot_dealloc(FinalizedNote)
    FinalizedNote.FINALIZED.clear()
    events = decode(["A", 1, "B", 2])
    assert [e.priority for e in events] == [1, 2]
    del events
    gc.collect()
    assert sorted(FinalizedNote.FINALIZED) == ["A", "B"]


# --- the recorder's batch writes: join_text / write_text ---

_PIECES = st.lists(
    st.text(max_size=40) | st.binary(max_size=40) | st.sampled_from(["x" * 70_000, b"y" * 70_000]),
    max_size=30,
)
"""Pieces of every kind, some batches past the size ``join_text`` copies without the GIL."""


def _text_writers() -> list[Any]:
    from trio_dxlink._record import _write_text

    c_writer = getattr(speedups, "write_text", None)  # not built on Windows
    return [_write_text] + ([c_writer] if c_writer is not None else [])


@needs_speedups
@settings(max_examples=200, deadline=None)
@given(pieces=_PIECES)
def test_c_and_python_join_text_agree(pieces: list[str | bytes]) -> None:
    from trio_dxlink._record import _join_text

    assert speedups is not None
    assert speedups.join_text(pieces) == _join_text(pieces)


@pytest.mark.parametrize("write_text", _text_writers(), ids=lambda f: f.__module__)
def test_write_text_writes_every_piece_of_a_large_batch(write_text: Any, tmp_path: Any) -> None:
    # more pieces than one writev takes (IOV_MAX), empty ones among them, text as UTF-8
    pieces: list[str | bytes] = []
    for i in range(3000):
        pieces += [b'{"k":"in","t":%d,"j":' % i, f'"é€ {i}' + "x" * 50 + '"', b"}\n", "", b""]
    expected = b"".join(p.encode() if isinstance(p, str) else p for p in pieces)
    path = tmp_path / "out"
    with open(path, "wb", buffering=0) as file:
        assert write_text(file.fileno(), pieces) == len(expected)
        assert write_text(file.fileno(), ["", b""]) == 0
    assert path.read_bytes() == expected


@needs_speedups
def test_join_and_write_text_refuse_what_they_cannot_write(tmp_path: Any) -> None:
    assert speedups is not None
    with pytest.raises(TypeError, match="takes a list, not tuple"):
        speedups.join_text(("a",))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="pieces are str or bytes, not int"):
        speedups.join_text(["a", 1])  # type: ignore[list-item]
    with pytest.raises(UnicodeEncodeError):
        speedups.join_text(["\udc80"])
    with open(tmp_path / "ro", "wb"):
        pass
    with open(tmp_path / "ro", "rb", buffering=0) as read_only:
        with pytest.raises(TypeError, match="pieces are str or bytes, not bytearray"):
            speedups.write_text(read_only.fileno(), [bytearray(b"x")])  # type: ignore[list-item]
        with pytest.raises(OSError, match="Bad file descriptor"):
            speedups.write_text(read_only.fileno(), ["x"])
