"""Fuzzing the sans-I/O client core with mutated server frames.

Whatever a server sends, the core may only raise :class:`~trio_dxlink.DXLinkError` subclasses
(or return events): never ``RecursionError``, ``KeyError``, ``TypeError``... The frames are
real server frames from a scripted session, mutated structurally (any sub-value replaced by
any JSON value, deep nesting included) and textually (truncated, bytes changed).
"""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trio_dxlink._connection import ClientConnection
from trio_dxlink._exceptions import DXLinkError
from trio_dxlink._messages import SubscriptionEntry

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

SESSION: list[Any] = [
    {"type": "SETUP", "channel": 0, "version": "1.0", "keepaliveTimeout": 60},
    {"type": "AUTH_STATE", "channel": 0, "state": "UNAUTHORIZED"},
    {"type": "AUTH_STATE", "channel": 0, "state": "AUTHORIZED", "userId": "u"},
    {"type": "CHANNEL_OPENED", "channel": 1, "service": "FEED", "parameters": {}},
    {
        "type": "FEED_CONFIG",
        "channel": 1,
        "dataFormat": "COMPACT",
        "aggregationPeriod": 0.1,
        "eventFields": {"Quote": ["eventType", "eventSymbol", "bidPrice", "askPrice"]},
    },
    {"type": "FEED_DATA", "channel": 1, "data": ["Quote", ["Quote", "SPY", 1.5, "NaN"]]},
    {
        "type": "FEED_DATA",
        "channel": 1,
        "data": [{"eventType": "Quote", "eventSymbol": "SPY", "bidPrice": 1.0}],
    },
    {"type": "KEEPALIVE", "channel": 0},
    {"type": "ERROR", "channel": 1, "error": "BAD_ACTION", "message": "x"},
    {"type": "CHANNEL_CLOSED", "channel": 1},
]


def nested(depth: int, inner: Any) -> Any:
    for _ in range(depth):
        inner = [inner] if depth % 2 else {"k": inner}
    return inner


json_leaf = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
    | st.sampled_from(["NaN", "Infinity", "-Infinity", "Quote", "FEED_DATA", "eventSymbol"])
)
json_value = st.recursive(
    json_leaf,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
# Deep nesting: up to what orjson accepts (1,024 levels) and past it.
deep_value = st.builds(nested, st.integers(min_value=100, max_value=1100), json_leaf)
any_value = json_value | deep_value


def paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(value, dict):
        for key, item in value.items():
            out += paths(item, (*prefix, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            out += paths(item, (*prefix, i))
    return out


def replaced(value: Any, path: tuple[Any, ...], new: Any) -> Any:
    if not path:
        return new
    head, rest = path[0], path[1:]
    if isinstance(value, dict):
        return {**value, head: replaced(value[head], rest, new)}
    copy = list(value)
    copy[head] = replaced(copy[head], rest, new)
    return copy


@st.composite
def mutated_frame(draw: st.DrawFn) -> str | bytes:
    original = draw(st.sampled_from(SESSION))
    how = draw(st.sampled_from(["replace", "replace", "add", "truncate", "flip"]))
    if how in ("replace", "add"):
        if how == "add":
            path: tuple[Any, ...] = (draw(st.text(min_size=1, max_size=12)),)
            obj: Any = {**original, path[0]: None}
        else:
            obj = original
            path = draw(st.sampled_from(paths(original)))
        try:
            return orjson.dumps(replaced(obj, path, draw(any_value))).decode()
        except orjson.JSONEncodeError:  # deeper than orjson writes: send the text form
            return '{"type":"FEED_DATA","channel":1,"data":' + "[" * 1100 + "]" * 1100 + "}"
    text = orjson.dumps(original)
    if how == "truncate":
        return text[: draw(st.integers(min_value=0, max_value=len(text) - 1))]
    i = draw(st.integers(min_value=0, max_value=len(text) - 1))
    return text[:i] + bytes([draw(st.integers(0, 255))]) + text[i + 1 :]


def connection() -> ClientConnection:
    conn = ClientConnection("token")
    conn.start(0.0)
    conn.open_channel()
    conn.subscribe(1, [SubscriptionEntry("Quote", "SPY")])
    return conn


@SETTINGS
@given(frames=st.lists(st.sampled_from(SESSION).map(orjson.dumps) | mutated_frame(), max_size=12))
def test_only_dxlink_errors_escape_the_core(frames: list[str | bytes]) -> None:
    conn = connection()
    for now, frame in enumerate(frames):
        try:
            conn.receive_message(frame, float(now))
            conn.handle_timers(float(now))
            conn.data_to_send(float(now))
        except DXLinkError:
            return  # the connection is unusable now; the driver would reconnect


@SETTINGS
@given(frame=mutated_frame())
def test_mutated_frames_on_an_open_channel(frame: str | bytes) -> None:
    conn = connection()
    for obj in SESSION[:5]:
        conn.receive_message(orjson.dumps(obj), 0.0)
    message = ""
    try:
        conn.receive_message(frame, 1.0)
    except DXLinkError as exc:
        message = str(exc)
    assert len(message) < 1000  # a bounded description, however big the value
