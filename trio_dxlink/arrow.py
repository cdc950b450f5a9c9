"""Events as columns: Apache Arrow tables and Parquet files (``pip install 'trio-dxlink[arrow]'``).

:func:`to_arrow` turns a list of events, a :class:`~trio_dxlink.History` or a recording
(``.dxrec``) into one :class:`pyarrow.Table` per event type; :func:`write_parquet` writes such
tables as one Parquet file per type. From there ``polars.from_arrow(table)`` and
``table.to_pandas()`` give DataFrames.

Every table has, in this order:

``ts_event`` (``timestamp[ns, tz=UTC]``)
    The event's own time: ``time`` (+ ``time_nano_part``) for types with a ``time`` field (Trade,
    TradeETH, TimeAndSale, Candle, Greeks, TheoPrice, Underlying, Order, SpreadOrder,
    AnalyticOrder, OptionSale, Series); the later of ``bid_time`` and ``ask_time`` (+
    ``time_nano_part``) for Quote; ``event_time`` for the others (Summary, Profile). Where that
    time is 0 (the server did not send it), ``event_time``; where that is 0 too, null.
``ts_recv`` (``timestamp[ns, tz=UTC]``)
    When the frame holding the event was received (a recording's wall-clock time for it); null
    where it is not known (events given as a list or a history).
the event's fields
    In the class's declaration order (``event_symbol`` first; ``event_flags`` and ``index`` for
    indexed events), with the names of the event class's attributes: doubles as ``double``
    (NaN stored as null), longs and epoch-millisecond times as ``int64``, strings (enumerated
    values as the server's string) as ``string``, booleans as ``bool``.

pyarrow is imported only when a function needs it; without it they raise :class:`ImportError`
naming the extra to install.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from operator import attrgetter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._codec import field_kinds
from ._eventbase import Event
from ._history import History
from ._registry import Kind

if TYPE_CHECKING:
    import pyarrow

__all__ = ["event_schema", "to_arrow", "ts_event_field", "write_parquet"]

_NS_PER_MS = 1_000_000


def _pyarrow() -> Any:
    try:
        import pyarrow
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "trio_dxlink.arrow needs pyarrow: pip install 'trio-dxlink[arrow]'"
        ) from exc
    return pyarrow


def _arrow_type(pa: Any, kind: Kind) -> Any:
    return {
        Kind.DOUBLE: pa.float64(),
        Kind.LONG: pa.int64(),
        Kind.STRING: pa.string(),
        Kind.BOOL: pa.bool_(),
    }[kind]


def ts_event_field(event_type: type[Event]) -> str:
    """The field ``ts_event`` is taken from for ``event_type``: ``"time"``,
    ``"bid_time/ask_time"`` (Quote: the later of the two) or ``"event_time"``."""
    kinds = field_kinds(event_type)
    if "time" in kinds:
        return "time"
    if "bid_time" in kinds and "ask_time" in kinds:
        return "bid_time/ask_time"
    return "event_time"


def event_schema(event_type: type[Event]) -> pyarrow.Schema:
    """The schema of :func:`to_arrow`'s table for ``event_type`` (see the module docstring)."""
    pa = _pyarrow()
    timestamp = pa.timestamp("ns", tz="UTC")
    fields = [pa.field("ts_event", timestamp), pa.field("ts_recv", timestamp)]
    for name, kind in field_kinds(event_type).items():
        fields.append(pa.field(name, _arrow_type(pa, kind), nullable=name != "event_symbol"))
    metadata = {
        "trio_dxlink.event_type": event_type.EVENT_TYPE,
        "trio_dxlink.ts_event": ts_event_field(event_type),
    }
    return pa.schema(fields, metadata=metadata)


def to_arrow(
    source: Iterable[Event] | History[Any] | str | os.PathLike[str],
) -> dict[str, pyarrow.Table]:
    """One Arrow table per event type (keyed by type name, ``"Quote"``), rows in arrival order.

    ``source`` is a list (or any iterable) of events, a :class:`~trio_dxlink.History`, or the
    path of a recording, whose received events are decoded by the library's decoder (see
    :func:`~trio_dxlink.iter_recorded_events`) with ``ts_recv`` from the recording.
    """
    _pyarrow()
    grouped: dict[type[Event], tuple[list[Event], list[int | None]]] = {}
    if isinstance(source, (str, os.PathLike)):
        from ._recorded_events import iter_recorded_events

        for batch in iter_recorded_events(source):
            events, received = grouped.setdefault(type(batch.events[0]), ([], []))
            events.extend(batch.events)
            received.extend([batch.received_ns] * len(batch.events))
    else:
        for event in source.events if isinstance(source, History) else source:
            events, received = grouped.setdefault(type(event), ([], []))
            events.append(event)
            received.append(None)
    return {
        cls.EVENT_TYPE: _table(cls, events, received) for cls, (events, received) in grouped.items()
    }


def _table(cls: type[Event], events: list[Event], received: list[int | None]) -> Any:
    pa = _pyarrow()
    schema = event_schema(cls)
    names = list(field_kinds(cls))
    if len(names) == 1:
        columns: dict[str, Any] = {names[0]: [getattr(e, names[0]) for e in events]}
    else:
        columns = dict(zip(names, zip(*map(attrgetter(*names), events), strict=True), strict=True))
    arrays = [pa.array(columns[n], type=schema.field(n).type, from_pandas=True) for n in names]
    by_name = dict(zip(names, arrays, strict=True))
    ts_recv = pa.array(received, type=pa.int64()).cast(schema.field("ts_recv").type)
    ts_event = _ts_event(cls, by_name).cast(schema.field("ts_event").type)
    return pa.Table.from_arrays([ts_event, ts_recv, *arrays], schema=schema)


def _ts_event(cls: type[Event], columns: Mapping[str, Any]) -> Any:
    """``ts_event`` (int64 ns) for each row, by the rule :func:`ts_event_field` names."""
    pa = _pyarrow()
    import pyarrow.compute as pc

    source = ts_event_field(cls)
    event_time = pc.multiply(columns["event_time"], _NS_PER_MS)
    if source == "event_time":
        own = event_time
    else:
        millis = (
            columns["time"]
            if source == "time"
            else pc.max_element_wise(columns["bid_time"], columns["ask_time"])
        )
        own = pc.multiply(millis, _NS_PER_MS)
        if "time_nano_part" in columns:
            own = pc.add(own, columns["time_nano_part"])
        own = pc.if_else(pc.equal(millis, 0), event_time, own)
    null = pa.scalar(None, type=pa.int64())
    return pc.if_else(pc.equal(own, 0), null, own)


def write_parquet(
    tables: Mapping[str, pyarrow.Table], directory: str | os.PathLike[str]
) -> dict[str, Path]:
    """Write each table to ``directory/<type>.parquet`` (the directory is created if needed);
    returns the path written for each type."""
    _pyarrow()
    import pyarrow.parquet as pq

    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    for name, table in tables.items():
        path = root / f"{name}.parquet"
        pq.write_table(table, path)
        written[name] = path
    return written
