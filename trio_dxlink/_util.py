"""Small shared helpers: collapsing a nursery's exception group, describing wire values."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator

import trio

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup

__all__ = ["LogLimiter", "clip", "collapse", "describe", "raise_single", "unwrap_group"]


def collapse(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The one exception to raise for ``group``, which escaped one of our nurseries.

    ``Cancelled`` leaves are set aside (they belong to trio). If exactly one other exception
    remains it is returned alone, so callers see ``AuthenticationError`` or their own
    ``ValueError`` rather than a group; if only ``Cancelled`` remains, the group is returned
    unchanged for trio to handle; several real errors stay a group.
    """
    rest: BaseException | None = group.split(trio.Cancelled)[1]
    if rest is None:
        return group
    leaves = list(_leaves(rest))
    if len(leaves) == 1:
        return leaves[0]
    return rest


def _leaves(exc: BaseException) -> Iterator[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        inner: tuple[BaseException, ...] = exc.exceptions
        for child in inner:
            yield from _leaves(child)
    else:
        yield exc


def raise_single(
    group: BaseExceptionGroup[BaseException], primary: BaseException | None = None
) -> None:
    """Raise :func:`collapse` of ``group``, keeping the single exception's cause and context.

    ``primary`` is the exception the user's own code raised into the nursery, if any. When it
    is in ``group`` alongside the library's errors, it is raised as itself, with the library's
    error attached as its ``__context__`` (unless it already has a context of its own that is
    not a cancellation), just as if the user's code had raised it in a ``finally`` block.

    Called from an ``except`` clause: the group itself is re-raised when it cannot be collapsed.
    """
    single = collapse(group)
    if single is group:
        raise group
    if isinstance(single, BaseExceptionGroup) and primary is not None:
        leaves = list(_leaves(single))
        if any(leaf is primary for leaf in leaves):
            others = [leaf for leaf in leaves if leaf is not primary]
            if primary.__context__ is None or isinstance(primary.__context__, trio.Cancelled):
                primary.__context__ = (
                    others[0]
                    if len(others) == 1
                    else BaseExceptionGroup("errors while the block was failing", others)
                )
            single = primary
    if isinstance(single, BaseExceptionGroup):
        raise single
    context = single.__context__
    try:
        raise single
    finally:
        single.__context__ = context  # not the group we are unwrapping
        del single, context


class unwrap_group:
    """A context manager that re-raises a single exception out of an exception group."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        if isinstance(exc, BaseExceptionGroup) and collapse(exc) is not exc:
            raise_single(exc)


def clip(text: str, limit: int = 200) -> str:
    """``text`` cut to ``limit`` characters, saying how long it was (a peer's text for
    messages and logs)."""
    return text if len(text) <= limit else text[:limit] + f"\u2026 ({len(text)} chars)"


_DESCRIBE_DEPTH = 3
_DESCRIBE_ITEMS = 8


def describe(value: object, limit: int = 120) -> str:
    """A short, bounded description of a value that came off the wire, for error messages.

    ``repr`` of a JSON value is unbounded in both size and depth: a frame nested 1,000 levels
    deep makes it raise ``RecursionError``, and a 50 MB array makes a 50 MB message. This walks
    at most a few levels and items and cuts the text at ``limit`` characters, so it is safe for
    any value orjson can produce (and for anything else: only ``str``/``bytes`` and scalars are
    ever formatted with ``repr``, and those after truncation).
    """
    text = _describe(value, _DESCRIBE_DEPTH)
    if len(text) > limit:
        text = text[: max(0, limit - 1)] + "…"
    return text


def _describe(value: object, depth: int) -> str:
    if isinstance(value, (list, tuple)):
        if not value:
            return "[]"
        if depth <= 0:
            return f"[…{len(value)} items]"
        parts = [_describe(item, depth - 1) for item in value[:_DESCRIBE_ITEMS]]
        if len(value) > _DESCRIBE_ITEMS:
            parts.append(f"…{len(value) - _DESCRIBE_ITEMS} more")
        return "[" + ", ".join(parts) + "]"
    if isinstance(value, dict):
        if not value:
            return "{}"
        if depth <= 0:
            return f"{{…{len(value)} keys}}"
        parts = []
        for count, (key, item) in enumerate(value.items()):
            if count == _DESCRIBE_ITEMS:
                parts.append(f"…{len(value) - _DESCRIBE_ITEMS} more")
                break
            parts.append(f"{_describe(key, 0)}: {_describe(item, depth - 1)}")
        return "{" + ", ".join(parts) + "}"
    if isinstance(value, (str, bytes)):
        if len(value) > 60:
            return repr(value[:60])[:-1] + f"…' ({len(value)} chars)"
        return repr(value)
    if isinstance(value, int) and value.bit_length() > 128:
        return f"<an integer of {value.bit_length()} bits>"  # repr could raise ValueError
    if value is None or isinstance(value, (bool, int, float)):
        text = repr(value)
        return text if len(text) <= 40 else text[:39] + "…"
    return f"<{type(value).__name__}>"


class LogLimiter:
    """Logs a repeated warning at a bounded rate; the clock is the caller's (``now``).

    At most ``burst`` messages are logged per ``window`` seconds; the ones held back are
    counted, and the next message that is logged says how many were suppressed. A server that
    sends a bad value a thousand times a second costs a few log lines a minute, not a thousand.
    """

    def __init__(self, logger: logging.Logger, *, burst: int = 5, window: float = 60.0) -> None:
        self._log = logger
        self._burst = burst
        self._window = window
        self._window_start: float | None = None
        self._logged = 0
        self.suppressed = 0
        """Messages held back since the last one logged."""

    def warning(self, now: float, message: str, *args: object) -> None:
        if self._window_start is None or now - self._window_start >= self._window:
            self._window_start = now
            self._logged = 0
        if self._logged >= self._burst:
            self.suppressed += 1
            return
        self._logged += 1
        if self.suppressed:
            message += " (%d similar messages suppressed)"
            args = (*args, self.suppressed)
            self.suppressed = 0
        self._log.warning(message, *args)
