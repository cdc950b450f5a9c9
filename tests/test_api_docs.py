"""The API reference: every public event field documented with its unit, every public name in
docs/api.rst."""

from __future__ import annotations

import importlib
import re
from pathlib import Path
from typing import Any

import attrs
import pytest

from trio_dxlink import _field_docs
from trio_dxlink.events import EVENT_TYPES, Event, IndexedEvent, TimeSeriesEvent

ROOT = Path(__file__).resolve().parent.parent
API_RST = ROOT / "docs" / "api.rst"

BASES = (Event, IndexedEvent, TimeSeriesEvent)
BASE_FIELDS = {
    Event: ["event_symbol", "event_time"],
    IndexedEvent: ["event_symbol", "event_time", "event_flags", "index"],
    TimeSeriesEvent: ["event_symbol", "event_time", "event_flags", "index", "time", "sequence"],
}


def public_fields(cls: type) -> list[str]:
    if attrs.has(cls):
        return [field.name for field in attrs.fields(cls)]
    return BASE_FIELDS[cls]


EVERY_FIELD = [(cls, name) for cls in (*BASES, *EVENT_TYPES) for name in public_fields(cls)]


@pytest.mark.parametrize(
    ("cls", "name"), EVERY_FIELD, ids=[f"{c.__name__}.{n}" for c, n in EVERY_FIELD]
)
def test_every_event_field_is_documented_in_its_class_docstring(cls: type, name: str) -> None:
    doc = _field_docs.field_doc(cls, name)
    assert doc, f"{cls.__name__}.{name} has no entry in trio_dxlink/_field_docs.py"
    annotation = {"event_symbol": "str"}.get(name, "")
    assert re.search(rf"^    {name} \({annotation}[^)]*\): ", cls.__doc__ or "", re.M), (
        f"{cls.__name__}'s docstring does not list {name}"
    )


@pytest.mark.parametrize(
    ("cls", "name"), EVERY_FIELD, ids=[f"{c.__name__}.{n}" for c, n in EVERY_FIELD]
)
def test_every_field_doc_states_its_unit(cls: type, name: str) -> None:
    doc = _field_docs.field_doc(cls, name) or ""
    kind = attrs.fields_dict(cls)[name].type if attrs.has(cls) else "int"
    if name == "time" or (name.endswith("_time") and name != "event_time"):
        assert "epoch milliseconds, UTC" in doc
    elif name.endswith("day_id") or name == "expiration":
        assert "days since 1970-01-01" in doc
    elif name.endswith("nano_part"):
        assert "nanoseconds" in doc
    elif "volatility" in name:
        assert "fraction" in doc
    elif kind == "float":
        assert "NaN" in doc, f"{cls.__name__}.{name}: say what NaN means"
        if name.endswith("price") or name in {"open", "high", "low", "close", "vwap"}:
            assert "currency" in doc
        if name.endswith(("size", "volume")):
            assert "shares" in doc or "contracts" in doc


def test_the_field_table_names_only_fields_that_exist() -> None:
    # A renamed or removed field must take its entry with it.
    by_name = {cls.__name__: cls for cls in (*BASES, *EVENT_TYPES)}
    for owner, entries in _field_docs.BY_CLASS.items():
        cls = by_name[owner]
        subclasses = [c for c in by_name.values() if issubclass(c, cls)]
        for name in entries:
            assert any(name in public_fields(c) for c in subclasses), f"{owner}.{name}"
    for name in _field_docs.COMMON:
        assert any(name in public_fields(c) for c in EVENT_TYPES), name


def test_a_class_level_meaning_wins_over_the_common_one() -> None:
    from trio_dxlink import Greeks, TimeAndSale

    assert _field_docs.field_doc(Greeks, "price") != _field_docs.field_doc(TimeAndSale, "price")
    assert "Implied volatility of the option" in (_field_docs.field_doc(Greeks, "volatility") or "")
    assert _field_docs.field_doc(Greeks, "no_such_field") is None


def test_documenting_twice_changes_nothing() -> None:
    before = [cls.__doc__ for cls in EVENT_TYPES]
    _field_docs.document_fields(EVENT_TYPES)
    assert [cls.__doc__ for cls in EVENT_TYPES] == before
    assert all((doc or "").count("\nAttributes:\n") == 1 for doc in before)


# --- docs/api.rst covers the public API -------------------------------------------------------

PUBLIC_MODULES = [
    "trio_dxlink",
    "trio_dxlink.events",
    "trio_dxlink.symbols",
    "trio_dxlink.testing",
    "trio_dxlink.arrow",
    "trio_dxlink.tastytrade",
    "trio_dxlink.pytest_plugin",
]
DIRECTIVE = re.compile(r"^\.\. (auto\w+|py:\w+):: (\S+)\n((?:   :.*\n)*)", re.M)


def documented_objects() -> tuple[list[Any], list[str]]:
    """The objects docs/api.rst documents, and the names it documents by hand (py:...)."""
    objects: list[Any] = []
    by_hand: list[str] = []
    module = ""
    for directive, target, options in DIRECTIVE.findall(API_RST.read_text(encoding="utf-8")):
        if directive == "py:module" or directive == "py:currentmodule":
            module = target
            continue
        if directive.startswith("py:"):
            by_hand.append(target if "." in target else f"{module}.{target}")
            continue
        if directive == "automodule":
            if ":members:" in options:
                excluded = re.search(r":exclude-members: (.*)", options)
                skip = {n.strip() for n in excluded.group(1).split(",")} if excluded else set()
                mod = importlib.import_module(target)
                objects += [getattr(mod, n) for n in mod.__all__ if n not in skip]
            continue
        module_name, _, name = target.rpartition(".")
        objects.append(getattr(importlib.import_module(module_name), name))
    return objects, by_hand


def test_api_rst_documents_every_public_name() -> None:
    objects, by_hand = documented_objects()
    missing = []
    for module_name in PUBLIC_MODULES:
        module = importlib.import_module(module_name)
        for name in module.__all__:
            value = getattr(module, name)
            if name.startswith("__") or any(value is o for o in objects):
                continue
            if f"{module_name}.{name}" not in by_hand:
                missing.append(f"{module_name}.{name}")
    assert not missing, f"docs/api.rst lacks {missing}"
