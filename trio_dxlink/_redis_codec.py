"""How events are laid out in Redis Streams: the stream keys and the entry encoding.

This is the one home of the format the bridge writes and :func:`open_redis_feed` reads, so that
programs in other languages can read it too (see "A broker: the Redis Streams bridge" in
docs/scaling.md):

* **Stream keys.** With ``stream_per="type"`` every event of one type goes to
  ``{prefix}:{eventType}`` (``dxlink:Quote``); with ``stream_per="symbol"`` to
  ``{prefix}:{eventType}:{eventSymbol}`` (``dxlink:Quote:SPY``). The prefix defaults to
  ``dxlink``.
* **Entries.** One stream entry per event. Its field names are the dxLink field names
  (``eventType``, ``eventSymbol``, ``bidPrice``, ...), each value the JSON encoding of the field's
  value (so a string is ``"SPY"`` with its quotes, a number ``1.5``, and the special doubles the
  JSON strings ``"NaN"``, ``"Infinity"``, ``"-Infinity"``, as on the DXLink wire). Fields with no
  value (``null``) are left out. ``eventType`` is always present.
"""

from __future__ import annotations

from typing import Any, Literal

import orjson

from ._codec import decode_full, encode_full
from ._exceptions import RemoteProtocolError
from ._registry import event_class
from .events import Event

__all__ = ["DEFAULT_PREFIX", "StreamPer", "decode_entry", "encode_entry", "stream_key"]

DEFAULT_PREFIX = "dxlink"

StreamPer = Literal["type", "symbol"]


def stream_key(prefix: str, event_type: str, symbol: str, stream_per: StreamPer) -> str:
    """The Redis stream an event of ``event_type`` for ``symbol`` is published to."""
    if stream_per == "type":
        return f"{prefix}:{event_type}"
    return f"{prefix}:{event_type}:{symbol}"


def check_stream_per(stream_per: str) -> StreamPer:
    """``stream_per`` if it is ``"type"`` or ``"symbol"``; ``ValueError`` otherwise."""
    if stream_per == "type":
        return "type"
    if stream_per == "symbol":
        return "symbol"
    raise ValueError(f"stream_per must be 'type' or 'symbol', got {stream_per!r}")


def encode_entry(event: Event) -> dict[str, bytes]:
    """The stream entry for ``event``: dxLink field name → JSON-encoded value."""
    dumps = orjson.dumps
    return {name: dumps(value) for name, value in encode_full(event).items()}


def decode_entry(fields: dict[Any, Any]) -> Event:
    """The event a stream entry holds (field names and values as ``bytes`` or ``str``).

    Raises:
        RemoteProtocolError: the entry is not a valid event (bad JSON, unknown ``eventType``,
            a value of the wrong kind).
    """
    try:
        obj = {
            (k.decode() if isinstance(k, bytes) else k): orjson.loads(v) for k, v in fields.items()
        }
    except (orjson.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RemoteProtocolError(f"stream entry is not JSON-encoded: {exc}") from exc
    name = obj.get("eventType")
    if not isinstance(name, str):
        raise RemoteProtocolError("stream entry has no eventType")
    try:
        cls = event_class(name)
    except KeyError as exc:
        raise RemoteProtocolError(f"stream entry has an unknown eventType {name!r}") from exc
    del obj["eventType"]
    return decode_full(cls, obj)
