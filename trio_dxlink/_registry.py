"""Which event types exist: how an event class is built and checked, and the lookup by name.

Every event class, shipped or declared by a user with :func:`event_type`, is built here by the
same code, under the same rules:

* it subclasses exactly one of :class:`~trio_dxlink.Event`, :class:`~trio_dxlink.IndexedEvent`
  and :class:`~trio_dxlink.TimeSeriesEvent`, and declares every field that base promises
  (``event_symbol`` first and without a default; ``event_time``; ``event_flags`` and ``index``
  for indexed events; ``time`` and ``sequence`` for time series);
* each field has one of the wire *kinds* (:class:`Kind`): ``float`` (double), ``int`` (long),
  ``bool``, ``str | None`` (string); ``event_symbol`` alone is a plain ``str``;
* every field but ``event_symbol`` has a default of its kind (a row may leave any field out);
* it becomes a frozen, slotted attrs class whose slots live in a private base class of the same
  layout (see :func:`_build`), which the COMPACT decoders in ``trio_dxlink._codec`` rely on.

Declared types are looked up by :func:`event_class` exactly like shipped ones, so the codec,
the feed's subscribe path and the local test server handle them with no further registration.
"""

from __future__ import annotations

import enum
import inspect
import types
import typing
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

import attrs

from ._eventbase import Event, IndexedEvent, TimeSeriesEvent
from ._exceptions import EventDeclarationError

if TYPE_CHECKING:
    from typing_extensions import dataclass_transform
else:

    def dataclass_transform(**_: object) -> Callable[[Any], Any]:
        """Typing only: tells type checkers that :func:`event_type` makes attrs-like classes."""
        return lambda fn: fn


__all__ = ["Kind", "event_class", "event_type", "field_kind", "shipped_event"]

_E = TypeVar("_E", bound=Event)


class Kind(enum.Enum):
    """The wire kind of an event field."""

    DOUBLE = "double"
    LONG = "long"
    STRING = "string"
    BOOL = "bool"


# The annotation spellings an event field may use (spaces removed), and the canonical one the
# built class carries; "str" (not null) is for event_symbol only.
_SPELLINGS = {
    "float": "float",
    "int": "int",
    "bool": "bool",
    "str": "str",
    "str|None": "str | None",
    "None|str": "str | None",
    "Optional[str]": "str | None",
    "Union[str,None]": "str | None",
    "Union[None,str]": "str | None",
}
_KINDS = {
    "float": Kind.DOUBLE,
    "int": Kind.LONG,
    "bool": Kind.BOOL,
    "str": Kind.STRING,
    "str | None": Kind.STRING,
}


def _canonical(annotation: object) -> str | None:
    """The canonical spelling of a field annotation, or ``None`` if no wire kind fits it."""
    if isinstance(annotation, str):
        return _SPELLINGS.get(annotation.replace(" ", "").removeprefix("typing."))
    if annotation in (float, int, bool, str):
        return typing.cast("type", annotation).__name__
    union = isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union
    if union and set(typing.get_args(annotation)) == {str, type(None)}:
        return "str | None"
    return None


def field_kind(annotation: object) -> Kind | None:
    """The wire kind of an event field annotated ``annotation`` (``None``: no kind fits)."""
    canonical = _canonical(annotation)
    return None if canonical is None else _KINDS[canonical]


# --- building an event class ---------------------------------------------------------------


_WIRE_OVERRIDES = {
    "vwap": "VWAP",
    "high_52_week_price": "high52WeekPrice",
    "low_52_week_price": "low52WeekPrice",
}


def _camel(name: str) -> str:
    if name in _WIRE_OVERRIDES:
        return _WIRE_OVERRIDES[name]
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


class _NaN:
    """Stands in for NaN when events are compared, so that equal-looking events are equal."""

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _NaN)

    def __hash__(self) -> int:
        return 0x7FF8


_NAN_KEY = _NaN()


def _float_key(value: float) -> object:
    return _NAN_KEY if value != value else value


_BASES = (Event, IndexedEvent, TimeSeriesEvent)
_RESERVED = ("__slots__", "__init__", "__new__", "__setattr__", "__delattr__")
_DEFAULT_TYPES: dict[str, tuple[type, ...]] = {
    "float": (float, int),
    "int": (int,),
    "bool": (bool,),
    "str | None": (str, type(None)),
}


def _is_classvar(annotation: object) -> bool:
    if isinstance(annotation, str):
        return annotation.replace(" ", "").removeprefix("typing.").startswith("ClassVar")
    return annotation is typing.ClassVar or typing.get_origin(annotation) is typing.ClassVar


def _promised(base: type[Event]) -> dict[str, str]:
    """The fields every subclass of ``base`` must declare, with their canonical annotations."""
    promised: dict[str, str] = {}
    for klass in reversed(base.__mro__):
        if klass in _BASES:
            for name, annotation in inspect.get_annotations(klass).items():
                if not _is_classvar(annotation):
                    promised[name] = _canonical(annotation) or str(annotation)
    return promised


def _check(cls: object, name: object, wire_names: Mapping[str, str]) -> dict[str, str]:
    """Check a declaration; return the class's fields with their canonical annotations.

    Raises:
        EventDeclarationError: which rule the declaration breaks.
    """

    def fail(why: str) -> EventDeclarationError:
        label = cls.__qualname__ if isinstance(cls, type) else repr(cls)
        return EventDeclarationError(f"event type {label}: {why}")

    if not isinstance(cls, type):
        raise fail("only a class can be declared an event type")
    if not isinstance(name, str) or not name.isidentifier():
        raise fail(f"the event type name must be an identifier such as 'Message', not {name!r}")
    if attrs.has(cls):
        raise fail(
            "it is already an attrs class: declare its fields as plain annotations (event_type"
            " makes it a frozen attrs class) and subclass Event, IndexedEvent or TimeSeriesEvent,"
            " not a shipped event class"
        )
    if len(cls.__bases__) != 1 or cls.__bases__[0] not in _BASES:
        raise fail("it must subclass exactly one of Event, IndexedEvent and TimeSeriesEvent")
    if reserved := [r for r in _RESERVED if r in cls.__dict__]:
        raise fail(f"it may not define {', '.join(reserved)} (the event machinery does)")
    fields: dict[str, str] = {}
    for field, annotation in inspect.get_annotations(cls).items():
        if _is_classvar(annotation):
            continue
        canonical = _canonical(annotation)
        if canonical is None or (canonical == "str" and field != "event_symbol"):
            raise fail(
                f"field {field}: {annotation!r} is not a type the wire carries; use float,"
                " int, bool or str | None (event_symbol alone is a plain str)"
            )
        fields[field] = canonical
    if next(iter(fields), None) != "event_symbol":
        raise fail("its first field must be event_symbol: str (with no default)")
    if "event_symbol" in cls.__dict__:
        raise fail("event_symbol may not have a default")
    base: type[Event] = cls.__bases__[0]
    for field, annotation in _promised(base).items():
        if fields.get(field) != annotation:
            raise fail(f"a {base.__name__} must have the field {field}: {annotation}")
    for field in list(fields)[1:]:
        if field not in cls.__dict__:
            raise fail(f"field {field} needs a default (a server may leave any field out)")
        default = cls.__dict__[field]
        allowed = _DEFAULT_TYPES[fields[field]]
        if type(default) not in allowed:
            kinds = " or ".join("None" if t is type(None) else t.__name__ for t in allowed)
            raise fail(f"the default of {field} must be a plain {kinds}, not {default!r}")
    for field, wire in wire_names.items():
        if field not in fields or field in _promised(base):
            raise fail(f"wire_names may rename only the type's own fields, not {field!r}")
        if not isinstance(wire, str) or not wire:
            raise fail(f"the wire name of {field} must be a non-empty string, not {wire!r}")
    wires = [wire_names.get(field) or _camel(field) for field in fields]
    if len(set(wires)) != len(wires):
        raise fail(f"two fields have the same wire name: {wires}")
    return fields


def _build(cls: type[Any], fields: dict[str, str]) -> type[Any]:
    """Make ``cls`` a frozen, slotted attrs class whose slots live in a private base.

    ``Quote`` ends up as ``Quote(_QuoteFields(Event))``: ``_QuoteFields`` holds the slots and
    nothing else, ``Quote`` adds attrs' frozen methods and no storage. Both share one memory
    layout, so the COMPACT decoder (``trio_dxlink._codec``) can fill a ``_QuoteFields`` with
    plain attribute stores and re-label it a ``Quote`` cheaply. Users only ever see
    ``Quote``, which behaves exactly like any frozen attrs class.
    """
    for field, annotation in fields.items():
        if annotation == "float":  # NaN-aware equality and hashing for doubles
            default = float(getattr(cls, field))
            setattr(cls, field, attrs.field(default=default, eq=_float_key))
    storage = type(f"_{cls.__name__}Fields", cls.__bases__, {"__slots__": tuple(fields)})
    storage.__module__ = cls.__module__
    storage.__qualname__ = f"_{cls.__qualname__}Fields"
    body = {k: v for k, v in cls.__dict__.items() if k not in ("__dict__", "__weakref__")}
    body["__annotations__"] = dict(fields)  # canonical spellings, resolvable anywhere
    metaclass: Any = type(cls)
    rebuilt: type[Any] = metaclass(cls.__name__, (storage,), body)
    rebuilt.__qualname__ = cls.__qualname__
    return attrs.frozen(slots=True, weakref_slot=False)(rebuilt)


def _declare(cls: type[Any], name: str, wire_names: Mapping[str, str]) -> type[Event]:
    fields = _check(cls, name, wire_names)
    built: type[Event] = _build(cls, fields)
    built.EVENT_TYPE = name
    built.WIRE_NAMES = {field: wire_names.get(field) or _camel(field) for field in fields}
    return built


# --- the registry ----------------------------------------------------------------------------

_REGISTRY: dict[str, type[Event]] = {}
_SHIPPED: set[str] = set()


def shipped_event(cls: type[Any]) -> type[Any]:
    """Build and register one of trio_dxlink's own event classes (named after the class)."""
    built = _declare(cls, cls.__name__, {})
    _REGISTRY[built.EVENT_TYPE] = built
    _SHIPPED.add(built.EVENT_TYPE)
    return built


@dataclass_transform(frozen_default=True)
def event_type(
    name: str | None = None, *, wire_names: Mapping[str, str] | None = None
) -> Callable[[type[_E]], type[_E]]:
    """Declare an event type trio_dxlink does not ship, so a feed can subscribe to it.

    dxFeed has more event types than the fifteen in :data:`~trio_dxlink.EVENT_TYPES`
    (``Message``, ``Configuration``, ``OtcMarketsOrder``, ...). Declare one as a class with
    annotated fields, like the shipped ones, and subscribe to it like any other::

        @event_type("Message")
        class Message(Event):
            event_symbol: str
            event_time: int = 0
            attachment: str | None = None

    The decorated class becomes a frozen attrs class (do not decorate it with attrs yourself)
    and :func:`event_class` finds it by ``name``. Rules (the shipped classes follow them too):

    * subclass exactly one of :class:`~trio_dxlink.Event`, :class:`~trio_dxlink.IndexedEvent`
      and :class:`~trio_dxlink.TimeSeriesEvent`, and declare the fields it promises:
      ``event_symbol: str`` first, with no default; ``event_time: int``; for indexed events
      ``event_flags: int`` and ``index: int``; for time series also ``time: int`` and
      ``sequence: int``;
    * every other field is ``float`` (a dxLink double; ``NaN`` when absent), ``int`` (long),
      ``bool`` or ``str | None``, with a default of that type;
    * a field's wire name is its camelCase form (``attachment_size`` → ``attachmentSize``);
      ``wire_names`` overrides that for the class's own fields.

    Args:
        name: the dxLink event type name (default: the class's name). It may not be the name of
            a shipped type. Declaring the same class again (same module and qualified name, as
            when a notebook cell is re-run) replaces the earlier declaration; any other class
            with a taken name is refused.
        wire_names: dxLink field names for fields whose name is not the camelCase form.

    Raises:
        EventDeclarationError: the declaration breaks one of the rules (it is also a
            ``TypeError``).
    """
    if isinstance(name, type):
        raise EventDeclarationError(
            f"use @event_type() or @event_type('Name') on {name.__qualname__}, not @event_type"
        )
    renames = dict(wire_names or {})

    def declare(cls: type[_E]) -> type[_E]:
        built = _declare(cls, cls.__name__ if name is None else name, renames)
        _register(built)
        return built  # type: ignore[return-value]

    return declare


def _register(cls: type[Event]) -> None:
    name = cls.EVENT_TYPE
    old = _REGISTRY.get(name)
    if old is not None:
        where = f"{old.__module__}.{old.__qualname__}"
        if name in _SHIPPED:
            raise EventDeclarationError(f"{name!r} is an event type trio_dxlink ships ({where})")
        if (old.__module__, old.__qualname__) != (cls.__module__, cls.__qualname__):
            raise EventDeclarationError(f"event type {name!r} is already declared by {where}")
    _REGISTRY[name] = cls


def event_class(name: str) -> type[Event]:
    """The event class for a dxLink event type name (``"Quote"`` → :class:`Quote`).

    Shipped types and those declared with :func:`event_type` alike.

    Raises:
        KeyError: the name is not an event type trio_dxlink knows.
    """
    try:
        return _REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(_REGISTRY))
        raise KeyError(f"unknown event type {name!r}; known types: {known}") from None
