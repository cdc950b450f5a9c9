"""Event types trio_dxlink does not ship: declared with ``event_type``, decoded, subscribed.

Each test declares types under names of its own (the registry is process-wide, and the docs'
examples declare ``Message``).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, Optional

import attrs
import pytest
import trio

from trio_dxlink import (
    Event,
    EventDeclarationError,
    IndexedEvent,
    Quote,
    RemoteProtocolError,
    TimeSeriesEvent,
    event_class,
    open_dxlink,
)
from trio_dxlink import _codec as codec
from trio_dxlink._accel import speedups
from trio_dxlink._codec import compile_row_decoder, decode_full, encode_compact, field_kinds
from trio_dxlink.events import EVENT_TYPES, event_type
from trio_dxlink.testing import DXLinkServer, ServerConfig, open_dxlink_server

from .conftest import pinned_market, until

NAN = math.nan


@event_type("NewsMessage")
class NewsMessage(Event):
    event_symbol: str
    event_time: int = 0
    attachment: str | None = None
    priority: int = 0
    weight: float = NAN
    urgent: bool = False
    CATEGORY: ClassVar[str] = "test"  # not a field

    @property
    def summary(self) -> str:
        return f"{self.event_symbol}: {self.attachment}"


@event_type("OtcOrder", wire_names={"otc_price_type": "otcMarketsPriceType"})
class OtcOrder(IndexedEvent):
    event_symbol: str
    event_time: int = 0
    event_flags: int = 0
    index: int = 0
    price: float = NAN
    otc_price_type: str | None = None


def test_a_declared_type_is_a_frozen_event_found_by_name() -> None:
    assert event_class("NewsMessage") is NewsMessage
    assert NewsMessage.EVENT_TYPE == "NewsMessage"
    assert NewsMessage not in EVENT_TYPES  # the shipped catalog is unchanged
    assert NewsMessage.wire_fields() == (
        "eventSymbol",
        "eventTime",
        "attachment",
        "priority",
        "weight",
        "urgent",
    )
    message = NewsMessage("news", attachment="hello")
    assert message.summary == "news: hello"
    assert NewsMessage.CATEGORY == "test"
    assert message == NewsMessage("news", attachment="hello")  # NaN weights compare equal
    assert hash(message) == hash(NewsMessage("news", attachment="hello"))
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        message.priority = 3  # type: ignore[misc]
    assert OtcOrder.WIRE_NAMES["otc_price_type"] == "otcMarketsPriceType"
    assert OtcOrder("X", event_flags=0x04).snapshot_begin


def test_annotations_may_be_real_types_or_strings_in_any_spelling() -> None:
    namespace = {
        "__annotations__": {
            "event_symbol": str,
            "event_time": int,
            "a": float,
            "b": Optional[str],  # noqa: UP045 - the old spelling is what this test is about
            "c": str | None,
            "d": "typing.Optional[str]",
            "e": "bool",
        },
        "__module__": __name__,
        "event_time": 0,
        "a": 1,  # an int default of a double becomes a float
        "b": None,
        "c": "x",
        "d": None,
        "e": True,
    }
    cls = event_type("SpellingsEvent")(type("SpellingsEvent", (Event,), namespace))
    assert {name: kind.value for name, kind in field_kinds(cls).items()} == {
        "event_symbol": "string",
        "event_time": "long",
        "a": "double",
        "b": "string",
        "c": "string",
        "d": "string",
        "e": "bool",
    }
    event = cls("S")
    assert event.a == 1.0
    assert type(event.a) is float
    assert cls.__annotations__["b"] == "str | None"


@pytest.mark.parametrize("speedups_on", [False, True], ids=["python", "c"])
def test_compact_and_full_rows_decode_into_the_declared_class(
    speedups_on: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    if speedups_on and speedups is None:
        pytest.skip("trio_dxlink._speedups not built")
    if not speedups_on:
        monkeypatch.setattr(codec, "speedups", None)
    layout = ("eventType", "eventSymbol", "attachment", "weight", "urgent", "bogus")
    values = ["NewsMessage", "A", "hi", "NaN", True, 1, "NewsMessage", "B", None, 2, False, None]
    decode = codec._compile_row_decoder(NewsMessage, layout)
    a, b = decode(values)
    assert type(a) is NewsMessage
    assert (a.event_symbol, a.attachment, a.urgent, a.priority) == ("A", "hi", True, 0)
    assert math.isnan(a.weight)
    assert b == NewsMessage("B", weight=2.0)
    assert encode_compact([a, b], layout)[:6] == ["NewsMessage", "A", "hi", "NaN", True, None]
    full = decode_full(NewsMessage, {"eventSymbol": "C", "priority": 7, "other": "x"})
    assert full == NewsMessage("C", priority=7)
    with pytest.raises(RemoteProtocolError, match="NewsMessage row 0: urgent: expected a boolean"):
        decode(["NewsMessage", "A", "hi", "NaN", "not a bool", None])
    with pytest.raises(RemoteProtocolError, match="bad NewsMessage event"):
        decode_full(NewsMessage, {"eventSymbol": "C", "priority": "high"})


def test_a_class_the_c_decoder_refuses_falls_back_to_python(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def refuse(*_: Any) -> Any:
        raise TypeError("cannot fill it")

    monkeypatch.setattr(codec, "_c_row_decoder", refuse)
    monkeypatch.setattr(codec, "speedups", object())
    decode = codec._compile_row_decoder(NewsMessage, ("eventSymbol", "priority"))
    assert decode(["A", 1]) == [NewsMessage("A", priority=1)]
    assert compile_row_decoder(NewsMessage, ("eventSymbol",))(["B"]) == [NewsMessage("B")]


# --- bad declarations --------------------------------------------------------------------------


def declare(name: str, base: type = Event, **fields: Any) -> Any:
    """Declare a type from ``name=(annotation, default)`` pairs (``...``: no default)."""
    namespace: dict[str, Any] = {"__annotations__": {}, "__module__": __name__}
    for field, (annotation, default) in fields.items():
        namespace["__annotations__"][field] = annotation
        if default is not ...:
            namespace[field] = default
    return event_type(name)(type(name, (base,), namespace))


GOOD: dict[str, Any] = {"event_symbol": ("str", ...), "event_time": ("int", 0)}


@pytest.mark.parametrize(
    ("name", "base", "fields", "match"),
    [
        ("Quote", Event, GOOD, "'Quote' is an event type trio_dxlink ships"),
        ("Bad Name", Event, GOOD, "must be an identifier"),
        ("NoSymbol", Event, {"event_time": ("int", 0)}, "first field must be event_symbol"),
        (
            "SymbolLast",
            Event,
            {"event_time": ("int", 0), "event_symbol": ("str", ...)},
            "first field must be event_symbol",
        ),
        ("SymbolDefault", Event, {**GOOD, "event_symbol": ("str", "X")}, "may not have a default"),
        ("NoTime", Event, {"event_symbol": ("str", ...)}, "must have the field event_time: int"),
        ("NoIndex", IndexedEvent, {**GOOD, "event_flags": ("int", 0)}, "field index: int"),
        (
            "NoSeries",
            TimeSeriesEvent,
            {**GOOD, "event_flags": ("int", 0), "index": ("int", 0)},
            "field time: int",
        ),
        (
            "AList",
            Event,
            {**GOOD, "legs": ("list[int]", None)},
            "legs: 'list\\[int\\]' is not a type",
        ),
        ("PlainStr", Event, {**GOOD, "text": ("str", "")}, "text: 'str' is not a type"),
        ("NoDefault", Event, {**GOOD, "price": ("float", ...)}, "price needs a default"),
        (
            "BadDefault",
            Event,
            {**GOOD, "count": ("int", 1.5)},
            "default of count must be a plain int",
        ),
        (
            "Factory",
            Event,
            {**GOOD, "note": ("str | None", attrs.field(default=None))},
            "default of note must be a plain str or None",
        ),
        ("NotEvent", object, GOOD, "must subclass exactly one of Event"),
        ("OfQuote", Quote, GOOD, "already an attrs class"),
    ],
)
def test_bad_declarations_are_refused_with_the_reason(
    name: str, base: type, fields: dict[str, Any], match: str
) -> None:
    with pytest.raises(EventDeclarationError, match=match) as caught:
        declare(name, base, **fields)
    assert isinstance(caught.value, TypeError)
    if name == "Quote":
        assert event_class(name) is Quote  # the shipped class keeps its name
    else:
        with pytest.raises(KeyError):
            event_class(name)


def test_an_attrs_class_a_bare_decorator_and_reserved_methods_are_refused() -> None:
    with pytest.raises(EventDeclarationError, match="already an attrs class"):

        @event_type("AttrsMade")
        @attrs.frozen
        class AttrsMade(Event):
            event_symbol: str
            event_time: int = 0

    with pytest.raises(EventDeclarationError, match="use @event_type\\(\\)"):
        event_type(NewsMessage)  # type: ignore[arg-type]
    with pytest.raises(EventDeclarationError, match="may not define __init__"):

        @event_type("WithInit")
        class WithInit(Event):
            event_symbol: str
            event_time: int = 0

            def __init__(self) -> None:
                pass

    with pytest.raises(EventDeclarationError, match="wire_names may rename only"):
        event_type("Renamed", wire_names={"event_symbol": "sym"})(
            type(
                "Renamed",
                (Event,),
                {"__annotations__": {"event_symbol": "str", "event_time": "int"}, "event_time": 0},
            )
        )


def test_a_taken_name_is_refused_unless_the_same_class_is_declared_again() -> None:
    first = declare("TakenEvent", **GOOD)
    again = declare("TakenEvent", **GOOD, extra=("float", 0.0))  # same module and name: re-run
    assert event_class("TakenEvent") is again is not first
    impostor = type(
        "Impostor",
        (Event,),
        {"__annotations__": {"event_symbol": "str", "event_time": "int"}, "event_time": 0},
    )
    with pytest.raises(EventDeclarationError, match="'NewsMessage' is already declared by"):
        event_type("NewsMessage")(impostor)
    assert event_class("NewsMessage") is NewsMessage


# --- end to end ----------------------------------------------------------------------------


@pytest.mark.parametrize("data_format", ["COMPACT", "FULL"])
async def test_a_declared_type_streams_from_the_local_server(data_format: str) -> None:
    config = ServerConfig(simulate=False, data_format_override=data_format)
    async with (
        open_dxlink_server(config=config, market=pinned_market()) as server,
        open_dxlink(server.url) as feed,
        feed.subscribe(NewsMessage, ["news"]) as messages,
        feed.subscribe(OtcOrder, ["OTCX"]) as orders,
    ):
        await until(server, lambda: ("NewsMessage", "news") in server.subscriptions())
        await until(server, lambda: ("OtcOrder", "OTCX") in server.subscriptions())
        sent = NewsMessage("news", attachment="halt lifted", priority=2, weight=0.5, urgent=True)
        order = OtcOrder("OTCX", index=7, price=1.25, otc_price_type="BID")
        server.publish(sent, NewsMessage("other"), order)
        with trio.fail_after(5):
            assert await messages.receive() == sent
            received = await orders.receive()
        assert received == order
        assert type(received) is OtcOrder
        assert await feed.get_event(NewsMessage, "news") == sent


async def test_subscribing_an_undeclared_subclass_is_still_refused(server: DXLinkServer) -> None:
    class Undeclared(Event):
        pass

    async with open_dxlink(server.url) as feed:
        with pytest.raises(TypeError, match=r"declare it with trio_dxlink\.events\.event_type"):
            feed.subscribe(Undeclared, ["X"])
