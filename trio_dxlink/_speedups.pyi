from collections.abc import Awaitable, Callable, Sequence
from typing import Any

KIND_SYMBOL: int
KIND_DOUBLE: int
KIND_LONG: int
KIND_STRING: int
KIND_BOOL: int
CANCEL_CHECK_MASK: int

class RowDecoder:
    width: int
    def __init__(
        self,
        cls: type,
        width: int,
        columns: Sequence[tuple[int, Any, int]],
        defaults: Sequence[tuple[Any, Any]],
    ) -> None: ...
    def __call__(self, values: list[Any], /) -> list[Any] | None: ...

class Cursor:
    ready: list[Any]
    pos: int
    def __init__(self, slow: Callable[[], Awaitable[Any]]) -> None: ...
    def __aiter__(self) -> Cursor: ...
    def __anext__(self) -> Awaitable[Any]: ...

def route(
    table: dict[str, list[Any]], symbols: list[str], events: list[Any], /
) -> list[Any] | None: ...

API_VERSION: int

def fan_out(
    table: dict[str, list[Any]], symbols: list[str], events: list[Any], /
) -> tuple[dict[Any, list[Any]], int]: ...
def use_slot_dealloc(cls: type, /) -> None: ...
def join_text(pieces: list[str | bytes], /) -> bytes: ...
def write_text(fd: int, pieces: list[str | bytes], /) -> int: ...
