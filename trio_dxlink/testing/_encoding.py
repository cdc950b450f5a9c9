"""How the local server lays market events out on the wire: COMPACT rows and FULL objects.

A client names the fields it wants per event type (FEED_SETUP ``acceptEventFields``), in its own
spelling: :func:`compact_values` and :func:`full_object` resolve those names onto the type's
wire names ignoring case (tastyware asks for ``vwap``), once per (type, layout), and fill a
name the type lacks with ``"NaN"`` when it is a double elsewhere in the catalog (null
otherwise), as dxFeed's servers do.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, TypeAlias

from .._codec import Kind, encode_compact, encode_full, field_kinds
from ..events import EVENT_TYPES, Event

__all__ = ["chunks", "compact_values", "full_object"]

_CATALOG_KINDS: dict[str, Kind] = {}
for _cls in EVENT_TYPES:
    for _name, _wire in _cls.WIRE_NAMES.items():
        _CATALOG_KINDS.setdefault(_wire.lower(), field_kinds(_cls)[_name])
del _cls, _name, _wire


_Plan: TypeAlias = "tuple[tuple[str, ...], tuple[int, ...]]"
_PLANS: dict[tuple[str, tuple[str, ...]], _Plan] = {}


def _resolve(cls: type[Event], layout: tuple[str, ...]) -> _Plan:
    """Map requested names onto ``cls``'s wire names, ignoring case (tastyware asks for
    ``vwap``). Returns the resolved layout and the positions of names the type lacks but that
    are doubles elsewhere in the catalog (sent as ``"NaN"``; other unknown names go as null)."""
    key = (cls.EVENT_TYPE, layout)
    plan = _PLANS.get(key)
    if plan is None:
        if len(_PLANS) >= 512:
            _PLANS.clear()
        plan = _PLANS[key] = _make_plan(cls, layout)
    return plan


def _make_plan(cls: type[Event], layout: tuple[str, ...]) -> _Plan:
    canonical = {wire.lower(): wire for wire in ("eventType", *cls.wire_fields())}
    resolved: list[str] = []
    nans: list[int] = []
    for position, name in enumerate(layout):
        wire = canonical.get(name.lower())
        if wire is None:
            resolved.append(name)
            if _CATALOG_KINDS.get(name.lower()) is Kind.DOUBLE:
                nans.append(position)
        else:
            resolved.append(wire)
    return tuple(resolved), tuple(nans)


def compact_values(
    events: Sequence[Event], layout: tuple[str, ...], *, index_as_string: bool = False
) -> list[Any]:
    """The COMPACT value array of ``events`` (all of one type) laid out as ``layout``; with
    ``index_as_string``, ``index`` as a decimal string (as a real server was seen to send it)."""
    resolved, nans = _resolve(type(events[0]), layout)
    values = encode_compact(events, resolved)
    width = len(layout)
    if nans:
        for row in range(0, len(values), width):
            for position in nans:
                values[row + position] = "NaN"
    if index_as_string and "index" in resolved:
        position = resolved.index("index")
        for row in range(position, len(values), width):
            values[row] = str(values[row])
    return values


def full_object(
    event: Event, layout: tuple[str, ...] | None, *, index_as_string: bool = False
) -> dict[str, Any]:
    """The FULL object of ``event``: every field, or (given a ``layout``) the fields it names
    plus ``eventType`` and ``eventSymbol``; with ``index_as_string``, ``index`` as a string."""
    obj = encode_full(event)
    if layout is not None:
        keep = {"eventType", "eventSymbol", *_resolve(type(event), layout)[0]}
        obj = {key: value for key, value in obj.items() if key in keep}
    if index_as_string and "index" in obj:
        obj["index"] = str(obj["index"])
    return obj


def chunks(items: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    """``items`` in slices of at most ``size``."""
    for start in range(0, len(items), size):
        yield items[start : start + size]
