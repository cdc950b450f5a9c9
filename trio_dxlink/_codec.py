"""How dxLink wire values become event fields, and back.

This module is the one place that defines the mapping. Each event field has a *kind* taken from
its annotation (double, long, string, boolean; ``trio_dxlink._registry`` says which annotation
has which); the kind decides how a wire value is checked and converted:

* double: JSON numbers, or the strings ``"NaN"``, ``"Infinity"``, ``"-Infinity"``; ``null`` is
  read as NaN. Ints become floats.
* long: JSON integers (an integral float is accepted and made an int, and so is a decimal
  string: real servers were seen sending the 64-bit ``index`` as one, reference §12).
* string: JSON strings or ``null``.
* boolean: JSON ``true``/``false``.

Two decoders use those rules:

* FULL objects go through the module's cattrs converter (one structure hook per event class,
  renaming camelCase keys, ignoring keys it does not know, defaulting keys that are absent).
* COMPACT rows go through a decoder *compiled* per (event class, field layout) by a structure
  hook factory registered on the same converter (for :class:`CompactRows` types; use
  :func:`compile_row_decoder` to get one): straight-line code that
  unpacks each row, checks each value with the kind's rule and builds the frozen event without
  going through the frozen ``__init__``. It is several times faster than structuring a dict per
  row, and it is what keeps decoding close to the speed of ``orjson.loads`` itself.

Anything that breaks the rules raises :class:`~trio_dxlink.RemoteProtocolError` naming the event
type, field and value.
"""

from __future__ import annotations

import contextlib
import itertools
import linecache
import logging
import math
import re
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, TypeVar

import attrs
import cattrs
from cattrs.gen import make_dict_structure_fn, override

from ._accel import speedups
from ._exceptions import RemoteProtocolError
from ._registry import Kind, field_kind
from ._util import describe
from .events import Event

__all__ = [
    "Kind",
    "RowDecoder",
    "compile_row_decoder",
    "converter",
    "decode_full",
    "encode_compact",
    "encode_full",
    "field_kinds",
]

E = TypeVar("E", bound=Event)

log = logging.getLogger("trio_dxlink")

RowDecoder = Callable[[list[Any]], list[Event]]
"""Decodes one COMPACT value array (N rows back to back) into N events."""


_DECIMAL_LONG = re.compile(r"-?[0-9]{1,19}")
_LONG_MIN, _LONG_MAX = -(2**63), 2**63 - 1
_SPECIAL_DOUBLES = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


_KINDS: dict[type[Event], dict[str, Kind]] = {}


def field_kinds(cls: type[Event]) -> dict[str, Kind]:
    """The wire kind of each field of an event class, in declaration order."""
    cached = _KINDS.get(cls)
    if cached is not None:
        return cached
    kinds: dict[str, Kind] = {}
    for f in attrs.fields(cls):  # type: ignore[arg-type]
        kind = field_kind(f.type)
        if kind is None:
            raise TypeError(f"{cls.__name__}.{f.name} has no wire kind (not an event class?)")
        kinds[f.name] = kind
    _KINDS[cls] = kinds
    return kinds


# --- per-kind conversion of one value (the slow path; the compiled decoders inline the checks) ---


def _bad(kind: str, value: object) -> RemoteProtocolError:
    return RemoteProtocolError(f"expected a {kind}, got {describe(value)}")


def to_double(value: Any) -> float:
    """Convert a dxLink JSONDouble to a float."""
    cls = value.__class__
    if cls is float:
        return value  # type: ignore[no-any-return,unused-ignore]
    if cls is int:
        try:
            return float(value)
        except OverflowError:
            raise _bad("double", value) from None
    if cls is str:
        try:
            return _SPECIAL_DOUBLES[value]
        except KeyError:
            raise _bad("double", value) from None
    if value is None:
        return math.nan
    raise _bad("double", value)


def to_long(value: Any) -> int:
    """Convert a dxLink integer to an int."""
    cls = value.__class__
    if cls is int:
        return value  # type: ignore[no-any-return,unused-ignore]
    if cls is float and value.is_integer():
        return int(value)
    if cls is str and _DECIMAL_LONG.fullmatch(value):
        number = int(value)
        if _LONG_MIN <= number <= _LONG_MAX:
            return number
    raise _bad("integer", value)


def to_string(value: Any) -> str | None:
    """Check a dxLink string (``null`` allowed)."""
    if value is None or value.__class__ is str:
        return value  # type: ignore[no-any-return,unused-ignore]
    raise _bad("string or null", value)


def to_bool(value: Any) -> bool:
    """Check a dxLink boolean."""
    if value.__class__ is bool:
        return value  # type: ignore[no-any-return,unused-ignore]
    raise _bad("boolean", value)


def to_symbol(value: Any) -> str:
    """Check an event symbol (a non-null string)."""
    if value.__class__ is str:
        return value  # type: ignore[no-any-return,unused-ignore]
    raise _bad("symbol string", value)


_CONVERT: dict[Kind, Callable[[Any], Any]] = {
    Kind.DOUBLE: to_double,
    Kind.LONG: to_long,
    Kind.STRING: to_string,
    Kind.BOOL: to_bool,
}

# The inline check for each kind in compiled code: the value passes untouched when the test is
# false, otherwise the slow-path converter decides (convert, or raise).
_INLINE_CHECK = {
    Kind.DOUBLE: "{v}.__class__ is not float",
    Kind.LONG: "{v}.__class__ is not int",
    Kind.STRING: "{v}.__class__ is not str and {v} is not None",
    Kind.BOOL: "{v}.__class__ is not bool",
}


def _default(cls: type[Event], name: str) -> Any:
    return attrs.fields_dict(cls)[name].default  # type: ignore[arg-type]


# --- FULL: the cattrs converter ---


def _structure_double(value: Any, _: type) -> float:
    return to_double(value)


def _structure_long(value: Any, _: type) -> int:
    return to_long(value)


def _structure_bool(value: Any, _: type) -> bool:
    return to_bool(value)


converter = cattrs.Converter(forbid_extra_keys=False)
"""The converter that defines how dxLink values map to event fields."""
converter.register_structure_hook(float, _structure_double)
converter.register_structure_hook(int, _structure_long)
converter.register_structure_hook(bool, _structure_bool)


def _optional_str(value: Any, _: type) -> str | None:
    return to_string(value)


converter.register_structure_hook(str | None, _optional_str)


def _symbol(value: Any, _: type) -> str:
    return to_symbol(value)


converter.register_structure_hook(str, _symbol)


def _make_full_hook(cls: type[Event]) -> Callable[[Any, type], Event]:
    renames = {name: override(rename=wire) for name, wire in cls.WIRE_NAMES.items()}
    fn: Callable[[Any, type], Event] = make_dict_structure_fn(
        cls,
        converter,
        _cattrs_detailed_validation=False,
        **renames,  # type: ignore[arg-type]
    )
    return fn


converter.register_structure_hook_factory(
    lambda t: isinstance(t, type) and issubclass(t, Event) and attrs.has(t),
    _make_full_hook,
)


def decode_full(cls: type[E], obj: dict[str, Any]) -> E:
    """Structure one FULL-format event object into ``cls``.

    Raises:
        RemoteProtocolError: the object is missing ``eventSymbol`` or has a value of the wrong kind.
    """
    try:
        return converter.structure(obj, cls)
    except RemoteProtocolError as exc:
        raise RemoteProtocolError(f"bad {cls.EVENT_TYPE} event {describe(obj)}: {exc}") from None
    except (KeyError, TypeError, ValueError, RecursionError, cattrs.BaseValidationError) as exc:
        reason = f"{type(exc).__name__}: {describe(str(exc))}"
        raise RemoteProtocolError(f"bad {cls.EVENT_TYPE} event {describe(obj)}: {reason}") from exc


def encode_full(event: Event) -> dict[str, Any]:
    """The FULL-format object for an event (special doubles as strings, ``None`` left out)."""
    cls = type(event)
    out: dict[str, Any] = {"eventType": cls.EVENT_TYPE}
    for name, wire in cls.WIRE_NAMES.items():
        out[wire] = _wire_value(getattr(event, name))
    return {k: v for k, v in out.items() if v is not None}


def _wire_value(value: Any) -> Any:
    if value.__class__ is float and not math.isfinite(value):
        if math.isnan(value):
            return "NaN"
        return "Infinity" if value > 0 else "-Infinity"
    return value


# --- COMPACT: compiled row decoders and encoders ---


def _twin_for(cls: type[Event]) -> type:
    """The slot-holding base of ``cls``: same layout, no frozen ``__setattr__``.

    The compiled decoder fills one with plain attribute stores and then re-labels it as
    ``cls`` (see ``trio_dxlink._registry._build``). The result is an ordinary frozen instance of
    ``cls``: it compares, hashes, pickles and refuses mutation like any other.
    """
    (storage,) = cls.__bases__
    if storage.__dict__.get("__slots__") != tuple(attrs.fields_dict(cls)):  # type: ignore[arg-type]
        raise TypeError(f"{cls.__name__} was not declared with trio_dxlink.events.event_type")
    return storage


class CompactRows:
    """A COMPACT value array of ``event_class`` rows laid out as ``layout`` (a marker type).

    ``converter.structure(values, rows_type(Quote, layout))`` decodes one; the converter's hook
    factory for these types compiles the decoder, so the COMPACT path is defined in the same
    converter as the FULL one.
    """

    event_class: ClassVar[type[Event]]
    layout: ClassVar[tuple[str, ...]]


def _is_rows_type(t: Any) -> bool:
    return isinstance(t, type) and issubclass(t, CompactRows) and t is not CompactRows


def _make_rows_hook(t: type[CompactRows]) -> Callable[[Any, type], list[Event]]:
    decode = _compile_row_decoder(t.event_class, t.layout)

    def structure_rows(values: Any, _: type) -> list[Event]:
        if values.__class__ is not list:
            raise RemoteProtocolError(f"{t.event_class.EVENT_TYPE} values are not an array")
        return decode(values)

    return structure_rows


converter.register_structure_hook_factory(_is_rows_type, _make_rows_hook)

_MAX_LAYOUTS = 1024
_DECODER_IDS = itertools.count(1)
_SOURCES: list[str] = []  # the linecache entries of the generated decoders
_DECODERS: dict[tuple[type[Event], tuple[str, ...]], RowDecoder] = {}


def rows_type(cls: type[Event], layout: tuple[str, ...]) -> type[CompactRows]:
    """The :class:`CompactRows` type for ``cls`` rows laid out as ``layout``."""
    name = f"{cls.EVENT_TYPE}Rows"
    return type(name, (CompactRows,), {"event_class": cls, "layout": layout})


def compile_row_decoder(cls: type[Event], layout: tuple[str, ...]) -> RowDecoder:
    """The COMPACT decoder for ``cls`` rows laid out as ``layout``, from the converter's hook.

    Decoders are cached here per (class, layout), in a bounded cache; the converter is asked
    not to cache the hook of each layout's one-off type, so a server that keeps inventing
    layouts cannot grow either without bound.
    """
    key = (cls, layout)
    decoder = _DECODERS.get(key)
    if decoder is None:
        if len(_DECODERS) >= _MAX_LAYOUTS:
            _DECODERS.clear()
            while _SOURCES:
                linecache.cache.pop(_SOURCES.pop(), None)
        t = rows_type(cls, layout)
        hook = converter.get_structure_hook(t, cache_result=False)

        def decoder(values: list[Any], _hook: Any = hook, _t: Any = t) -> list[Event]:
            return _hook(values, _t)  # type: ignore[no-any-return]

        _DECODERS[key] = decoder
    return decoder


def _compile_row_decoder(cls: type[Event], layout: tuple[str, ...]) -> RowDecoder:
    """The COMPACT decoder for ``cls`` rows laid out as ``layout``: the C one when the
    speedups are built (falling back to Python for errors), else the Python one."""
    decoder = _py_row_decoder(cls, layout)
    if speedups is not None:
        try:
            return _with_speedups(cls, layout, decoder)
        except (TypeError, ValueError) as exc:  # a class the C decoder cannot fill
            log.debug("no C row decoder for %s: %s", cls.EVENT_TYPE, exc)
    return decoder


def _row_plan(cls: type[Event], layout: tuple[str, ...]) -> dict[int, str]:
    """Which field each column of ``layout`` fills: ``{column index: field name}``.

    Wire fields the class does not know (``eventType`` included) fill nothing, nor does a
    repeated one (the first wins). Both row decoders, C and Python, follow this plan.
    """
    by_wire = {wire: name for name, wire in cls.WIRE_NAMES.items()}
    plan: dict[int, str] = {}
    for i, wire in enumerate(layout):
        name = by_wire.get(wire)
        if name is not None and name not in plan.values():
            plan[i] = name
    return plan


def _py_row_decoder(cls: type[Event], layout: tuple[str, ...]) -> RowDecoder:
    """Compile the COMPACT decoder for ``cls`` rows laid out as ``layout`` (dxLink names).

    Wire fields the class does not know (``eventType`` included) are skipped; class fields the
    layout lacks get their defaults. The decoder raises :class:`RemoteProtocolError` for a ragged
    value array or a value of the wrong kind.
    """
    width = len(layout)
    if width == 0:
        raise RemoteProtocolError(f"empty field list for {cls.EVENT_TYPE}")
    if "eventSymbol" not in layout:
        raise RemoteProtocolError(f"{cls.EVENT_TYPE} field list lacks eventSymbol: {list(layout)}")
    kinds = field_kinds(cls)
    ns: dict[str, Any] = {
        "_new": object.__new__,
        "_Twin": _twin_for(cls),
        "_Cls": cls,
        "_RemoteProtocolError": RemoteProtocolError,
        "_to_symbol": to_symbol,
        "_layout_text": ", ".join(layout),
    }
    for kind, fn in _CONVERT.items():
        ns[f"_to_{kind.value}"] = fn
    plan = _row_plan(cls, layout)
    columns = []
    checks = []
    stores = []
    for i, wire in enumerate(layout):
        name = plan.get(i)
        if name is None:
            columns.append("_")
            continue
        var = f"v{i}"
        columns.append(var)
        if name == "event_symbol":
            test, convert = f"{var}.__class__ is not str", "_to_symbol"
        else:
            kind = kinds[name]
            test, convert = _INLINE_CHECK[kind].format(v=var), f"_to_{kind.value}"
        # Slow path only: name the field when the value is of the wrong kind.
        checks += [
            f"        if {test}:",
            f"          try: {var} = {convert}({var})",
            "          except _RemoteProtocolError as e:",
            f"            raise _RemoteProtocolError({wire + ': '!r} + str(e)) from None",
        ]
        stores.append(f"        o.{name} = {var}")
    for name in kinds:
        if name not in plan.values():
            const = f"_d_{name}"
            ns[const] = _default(cls, name)
            stores.append(f"        o.{name} = {const}")
    unpack = ", ".join(columns) + ("," if width == 1 else "")
    src = "\n".join(
        [
            "def decode(values):",
            f"    if len(values) % {width}:",
            "        raise _RemoteProtocolError(",
            f"            '{cls.EVENT_TYPE} values: ' + str(len(values)) +",
            f"            ' values is not a multiple of the {width} fields ' + _layout_text",
            "        )",
            "    out = []",
            "    append = out.append",
            "    try:",
            f"      for {unpack} in zip(*[iter(values)] * {width}):",
            *["  " + line for line in checks],
            "          o = _new(_Twin)",
            *["  " + line for line in stores],
            "          o.__class__ = _Cls",
            "          append(o)",
            "    except _RemoteProtocolError as exc:",
            f"        raise _RemoteProtocolError('{cls.EVENT_TYPE} row ' + str(len(out)) + ': ' "
            "+ str(exc)) from None",
            "    return out",
        ]
    )
    filename = f"<trio_dxlink row decoder {cls.EVENT_TYPE} {next(_DECODER_IDS)}>"
    # Registered with linecache, so a traceback through the decoder shows its source.
    linecache.cache[filename] = (len(src), None, src.splitlines(keepends=True), filename)
    _SOURCES.append(filename)
    exec(compile(src, filename, "exec"), ns)
    decoder: RowDecoder = ns["decode"]
    return decoder


_SPEEDUP_KINDS = {
    Kind.DOUBLE: "KIND_DOUBLE",
    Kind.LONG: "KIND_LONG",
    Kind.STRING: "KIND_STRING",
    Kind.BOOL: "KIND_BOOL",
}


def _c_row_decoder(cls: type[Event], layout: tuple[str, ...]) -> Any:
    """The C ``RowDecoder`` for ``cls`` rows laid out as ``layout`` (the speedups must be on).

    It returns the events, or ``None`` for anything the Python decoder would reject.
    """
    assert speedups is not None
    slots = _twin_for(cls).__dict__
    kinds = field_kinds(cls)
    plan = _row_plan(cls, layout)
    columns: list[tuple[int, Any, int]] = []
    for i, name in plan.items():
        kind = "KIND_SYMBOL" if name == "event_symbol" else _SPEEDUP_KINDS[kinds[name]]
        columns.append((i, slots[name], getattr(speedups, kind)))
    filled = set(plan.values())
    defaults = [(slots[name], _default(cls, name)) for name in kinds if name not in filled]
    decoder = speedups.RowDecoder(cls, len(layout), columns, defaults)
    # Freeing events is as hot as making them: clear their slots directly (same result). A class
    # that needs more (a finalizer, say) keeps CPython's deallocator.
    with contextlib.suppress(TypeError):
        speedups.use_slot_dealloc(cls)
    return decoder


def _with_speedups(cls: type[Event], layout: tuple[str, ...], slow: RowDecoder) -> RowDecoder:
    """The C decoder for the same rows, falling back to ``slow`` for anything it refuses.

    The C decoder accepts exactly the values the compiled Python decoder accepts without
    raising and converts them the same way; on anything else it gives up (returns ``None``) and
    the Python decoder runs, so error messages come from one place.
    """
    fast: Callable[[list[Any]], list[Event] | None] = _c_row_decoder(cls, layout)

    def decode(values: list[Any]) -> list[Event]:
        events = fast(values)
        if events is None:
            return slow(values)  # raises the detailed error
        return events

    return decode


def encode_compact(events: Sequence[Event], layout: Sequence[str]) -> list[Any]:
    """The flat COMPACT value array for ``events`` laid out as ``layout`` (dxLink names).

    Fields the event class does not have are sent as ``null``; special doubles as strings.
    """
    if not events:
        return []
    cls = type(events[0])
    by_wire = {wire: name for name, wire in cls.WIRE_NAMES.items()}
    getters = [by_wire.get(wire) for wire in layout]
    out: list[Any] = []
    append = out.append
    for event in events:
        for wire, name in zip(layout, getters, strict=True):
            if name is not None:
                append(_wire_value(getattr(event, name)))
            else:
                append(cls.EVENT_TYPE if wire == "eventType" else None)
    return out
