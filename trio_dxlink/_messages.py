"""DXLink wire messages (channel 0, the FEED and the DOM services) and their JSON codec.

Each message is a small frozen attrs class; :func:`encode` turns one into the text of a WebSocket
frame and :func:`decode` turns a frame back into one, both through this module's single cattrs
converter. The client and the local test server share this codec.

Tolerance follows the protocol: keys a message does not define are ignored, and a message type
nobody here knows becomes an :class:`UnknownMessage` (callers skip it). A frame that is not a JSON
object with a string ``type`` and an integer ``channel``, or a known message whose fields have the
wrong shape, raises :class:`~trio_dxlink.RemoteProtocolError` naming what was wrong.

``FEED_DATA`` is the hot path: :func:`decode` hands its ``data`` array over untouched, and the
connection decodes it by the negotiated fields (``trio_dxlink._codec``). ``DOM_SNAPSHOT`` is data
too: its ``time``, ``bids`` and ``asks`` are handed over as they came (``trio_dxlink._dom_channel``
checks them, and skips a bad snapshot without ending the connection).
"""

from __future__ import annotations

import math
import re
from typing import Any, Literal, TypeAlias

import attrs
import cattrs
import orjson
from cattrs.gen import make_dict_structure_fn, make_dict_unstructure_fn, override

from ._exceptions import RemoteProtocolError
from ._util import clip, describe

__all__ = [
    "Auth",
    "AuthState",
    "ChannelCancel",
    "ChannelClosed",
    "ChannelOpened",
    "ChannelRequest",
    "DomConfig",
    "DomSetup",
    "DomSnapshot",
    "Error",
    "FeedConfig",
    "FeedData",
    "FeedSetup",
    "FeedSubscription",
    "Keepalive",
    "Message",
    "Setup",
    "SubscriptionEntry",
    "UnknownMessage",
    "decode",
    "encode",
]

DataFormat: TypeAlias = Literal["FULL", "COMPACT"]


@attrs.frozen
class Setup:
    """``SETUP``: both sides announce version and keepalive timeouts (seconds)."""

    version: str
    keepalive_timeout: float | None = None
    accept_keepalive_timeout: float | None = None
    channel: int = 0


@attrs.frozen
class Auth:
    """``AUTH``: the client presents its token. The token never appears in a repr."""

    token: str = attrs.field(repr=False)
    channel: int = 0


@attrs.frozen
class AuthState:
    """``AUTH_STATE``: ``"AUTHORIZED"`` or ``"UNAUTHORIZED"``."""

    state: str
    user_id: str | None = None
    channel: int = 0


@attrs.frozen
class Keepalive:
    """``KEEPALIVE``: traffic that keeps an idle connection alive."""

    channel: int = 0


@attrs.frozen
class Error:
    """``ERROR``: a problem on the connection (channel 0) or on one channel."""

    error: str
    message: str
    channel: int = 0


@attrs.frozen
class ChannelRequest:
    """``CHANNEL_REQUEST``: the client asks to open a service channel."""

    channel: int
    service: str
    parameters: dict[str, Any] = attrs.field(factory=dict)


@attrs.frozen
class ChannelOpened:
    """``CHANNEL_OPENED``: the server opened the channel (parameters echoed, maybe extended)."""

    channel: int
    service: str = "FEED"
    parameters: dict[str, Any] = attrs.field(factory=dict)


@attrs.frozen
class ChannelCancel:
    """``CHANNEL_CANCEL``: the client closes a channel."""

    channel: int


@attrs.frozen
class ChannelClosed:
    """``CHANNEL_CLOSED``: the channel is closed (a reply to cancel, or the server's decision)."""

    channel: int


@attrs.frozen
class FeedSetup:
    """``FEED_SETUP``: what the client would like the feed on this channel to look like."""

    channel: int
    accept_aggregation_period: float | None = None
    accept_data_format: str | None = None
    accept_event_fields: dict[str, list[str]] | None = None


@attrs.frozen
class FeedConfig:
    """``FEED_CONFIG``: the feed configuration in force; absent parts are unchanged."""

    channel: int
    aggregation_period: float | None = None
    data_format: str | None = None
    event_fields: dict[str, list[str]] | None = None


@attrs.frozen
class SubscriptionEntry:
    """One item of a ``FEED_SUBSCRIPTION`` add/remove list."""

    type: str
    symbol: str
    from_time: int | None = None
    source: str | None = None

    @property
    def key(self) -> tuple[str, str, str | None]:
        """The subscription's identity: (type, symbol, source); ``from_time`` is not part."""
        return (self.type, self.symbol, self.source)


@attrs.frozen
class FeedSubscription:
    """``FEED_SUBSCRIPTION``: reset, then remove, then add subscriptions on a channel."""

    channel: int
    add: list[SubscriptionEntry] | None = None
    remove: list[SubscriptionEntry] | None = None
    reset: bool | None = None


@attrs.frozen
class FeedData:
    """``FEED_DATA``: events, as the raw COMPACT or FULL ``data`` array."""

    channel: int
    data: list[Any]


@attrs.frozen
class DomSetup:
    """``DOM_SETUP``: what the client would like the book on a DOM channel to look like (every
    field optional; ``accept_depth_limit=0`` asks for no limit)."""

    channel: int
    accept_aggregation_period: float | None = None
    accept_depth_limit: int | None = None
    accept_data_format: str | None = None
    accept_order_fields: list[str] | None = None


@attrs.frozen
class DomConfig:
    """``DOM_CONFIG``: the DOM configuration in force; absent parts are unchanged."""

    channel: int
    aggregation_period: float | None = None
    depth_limit: int | None = None
    data_format: str | None = None
    order_fields: list[str] | None = None


@attrs.frozen
class DomSnapshot:
    """``DOM_SNAPSHOT``: a whole book (not an update), its values as they came on the wire."""

    channel: int
    time: Any = None
    bids: Any = None
    asks: Any = None


@attrs.frozen
class UnknownMessage:
    """A message of a type this library does not know; the protocol says to skip it."""

    type: str
    channel: int
    payload: dict[str, Any] = attrs.field(factory=dict, repr=False)


Message: TypeAlias = (
    Setup
    | Auth
    | AuthState
    | Keepalive
    | Error
    | ChannelRequest
    | ChannelOpened
    | ChannelCancel
    | ChannelClosed
    | FeedSetup
    | FeedConfig
    | FeedSubscription
    | FeedData
    | DomSetup
    | DomConfig
    | DomSnapshot
    | UnknownMessage
)

_TYPES: dict[str, type[Any]] = {
    "SETUP": Setup,
    "AUTH": Auth,
    "AUTH_STATE": AuthState,
    "KEEPALIVE": Keepalive,
    "ERROR": Error,
    "CHANNEL_REQUEST": ChannelRequest,
    "CHANNEL_OPENED": ChannelOpened,
    "CHANNEL_CANCEL": ChannelCancel,
    "CHANNEL_CLOSED": ChannelClosed,
    "FEED_SETUP": FeedSetup,
    "FEED_CONFIG": FeedConfig,
    "FEED_SUBSCRIPTION": FeedSubscription,
    "FEED_DATA": FeedData,
    "DOM_SETUP": DomSetup,
    "DOM_CONFIG": DomConfig,
    "DOM_SNAPSHOT": DomSnapshot,
}
_NAMES = {cls: name for name, cls in _TYPES.items()}


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


_SPECIAL_DOUBLES = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


def _strict_float(value: Any, _: type) -> float:
    if value.__class__ in (int, float):
        return float(value)
    if value.__class__ is str and value in _SPECIAL_DOUBLES:
        return _SPECIAL_DOUBLES[value]  # dxLink writes special doubles as strings
    raise TypeError(f"expected a number, got {describe(value)}")


def _strict_int(value: Any, _: type) -> int:
    if value.__class__ is int:
        return int(value)
    raise TypeError(f"expected an integer, got {describe(value)}")


def _strict_str(value: Any, _: type) -> str:
    if value.__class__ is str:
        return str(value)
    raise TypeError(f"expected a string, got {describe(value)}")


def _strict_bool(value: Any, _: type) -> bool:
    if value.__class__ is bool:
        return bool(value)
    raise TypeError(f"expected a boolean, got {describe(value)}")


def _dict_any(value: Any, _: type) -> dict[str, Any]:
    if isinstance(value, dict):
        return value
    raise TypeError(f"expected an object, got {describe(value)}")


def _list_any(value: Any, _: type) -> list[Any]:
    if isinstance(value, list):
        return value
    raise TypeError(f"expected an array, got {describe(value)}")


_converter = cattrs.Converter(forbid_extra_keys=False)
_converter.register_structure_hook(float, _strict_float)
_converter.register_structure_hook(int, _strict_int)
_converter.register_structure_hook(str, _strict_str)
_converter.register_structure_hook(bool, _strict_bool)
_converter.register_structure_hook_func(lambda t: t == dict[str, Any], _dict_any)


def _string_list(value: Any, _: type) -> list[str]:
    if value.__class__ is not list or any(item.__class__ is not str for item in value):
        raise TypeError(f"expected a list of strings, got {describe(value)}")
    return list(value)


_converter.register_structure_hook_func(lambda t: t == list[str], _string_list)


def _event_fields(value: Any, _: type) -> dict[str, list[str]]:
    fields = _dict_any(value, _)
    for name, names in fields.items():
        if names.__class__ is not list or any(n.__class__ is not str for n in names):
            raise TypeError(
                f"event fields of {describe(name)} are not a list of strings: {describe(names)}"
            )
    return fields


def _entries(value: Any, _: type) -> list[SubscriptionEntry]:
    return [_converter.structure(item, SubscriptionEntry) for item in _list_any(value, _)]


_converter.register_structure_hook_func(lambda t: t == dict[str, list[str]], _event_fields)
_converter.register_structure_hook_func(lambda t: t == list[SubscriptionEntry], _entries)

for _cls in (*_TYPES.values(), SubscriptionEntry):
    _renames = {f.name: override(rename=_camel(f.name)) for f in attrs.fields(_cls)}
    _converter.register_structure_hook(
        _cls,
        make_dict_structure_fn(
            _cls,
            _converter,
            _cattrs_detailed_validation=False,
            **_renames,  # type: ignore[arg-type]
        ),
    )
    _converter.register_unstructure_hook(
        _cls,
        make_dict_unstructure_fn(
            _cls,
            _converter,
            _cattrs_omit_if_default=False,
            **_renames,  # type: ignore[arg-type]
        ),
    )
del _cls, _renames


def _drop_none(obj: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in obj.items() if v is not None}


def to_wire_entry(entry: SubscriptionEntry) -> dict[str, Any]:
    """The JSON object for one subscription entry (``None`` fields left out)."""
    return _drop_none(_converter.unstructure(entry))


def to_wire(message: Message) -> dict[str, Any]:
    """The JSON object for ``message`` (``None`` fields left out)."""
    if isinstance(message, UnknownMessage):
        return {**message.payload, "type": message.type, "channel": message.channel}
    if isinstance(message, FeedData):  # the hot path: the data array goes out untouched
        return {"type": "FEED_DATA", "channel": message.channel, "data": message.data}
    if isinstance(message, FeedSubscription):
        obj: dict[str, Any] = {"type": "FEED_SUBSCRIPTION", "channel": message.channel}
        if message.reset is not None:
            obj["reset"] = message.reset
        if message.remove is not None:
            obj["remove"] = [to_wire_entry(e) for e in message.remove]
        if message.add is not None:
            obj["add"] = [to_wire_entry(e) for e in message.add]
        return obj
    obj = _drop_none(_converter.unstructure(message))
    return {"type": _NAMES[type(message)], **obj}


def encode(message: Message) -> str:
    """The text of one WebSocket frame carrying ``message``."""
    return orjson.dumps(to_wire(message)).decode()


def parse_json(frame: str | bytes) -> dict[str, Any]:
    """Parse a frame into its JSON object, checking the ``type``/``channel`` envelope."""
    try:
        obj = orjson.loads(frame)
    except orjson.JSONDecodeError as exc:
        raise RemoteProtocolError(f"message is not valid JSON: {exc}") from exc
    if obj.__class__ is not dict:
        raise RemoteProtocolError(f"message is not a JSON object: {_clip(frame)}")
    kind = obj.get("type")
    if kind.__class__ is not str:
        raise RemoteProtocolError(f"message has no string 'type': {_clip(frame)}")
    channel = obj.get("channel")
    if channel.__class__ is not int or channel < 0:
        raise RemoteProtocolError(f"{kind} message has no valid 'channel': {_clip(frame)}")
    return obj


def decode(frame: str | bytes) -> Message:
    """Decode one frame into a message.

    Raises:
        RemoteProtocolError: the frame is not JSON, not an object, lacks a valid envelope, or a
            known message type has fields of the wrong shape.
    """
    return from_wire(parse_json(frame))


def from_wire(obj: dict[str, Any]) -> Message:
    """Structure a parsed JSON object (envelope already checked) into a message."""
    kind: str = obj["type"]
    if kind == "FEED_DATA":
        data = obj.get("data")
        if data.__class__ is not list:
            raise RemoteProtocolError(
                f"FEED_DATA without a 'data' array on channel {obj['channel']}"
            )
        return FeedData(obj["channel"], data)
    if kind == "DOM_SNAPSHOT":  # data: checked where it is read, never fatal here
        return DomSnapshot(obj["channel"], obj.get("time"), obj.get("bids"), obj.get("asks"))
    cls = _TYPES.get(kind)
    if cls is None:
        return UnknownMessage(kind, obj["channel"], obj)
    try:
        message: Message = _converter.structure(obj, cls)
    except (KeyError, TypeError, ValueError, cattrs.BaseValidationError) as exc:
        raise RemoteProtocolError(f"malformed {kind} message: {_describe(exc)}") from exc
    return message


def _describe(exc: BaseException) -> str:
    if isinstance(exc, KeyError):
        return f"missing field {describe(exc.args[0])}"
    return str(exc) or type(exc).__name__


_TOKEN_VALUE = re.compile(r'("token"\s*:\s*)"(?:[^"\\]|\\.)*"')


def _clip(frame: str | bytes, limit: int = 200) -> str:
    """A short, token-free excerpt of a frame for error messages."""
    text = frame if isinstance(frame, str) else frame.decode("utf-8", "replace")
    return clip(_TOKEN_VALUE.sub(r'\1"<redacted>"', text), limit)
