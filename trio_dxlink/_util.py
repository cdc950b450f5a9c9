"""The one helper that turns a nursery's exception group back into a single exception."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import trio

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup

__all__ = ["collapse", "raise_single", "unwrap_group"]


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


def raise_single(group: BaseExceptionGroup[BaseException]) -> None:
    """Raise :func:`collapse` of ``group``, keeping the single exception's cause and context.

    Called from an ``except`` clause: the group itself is re-raised when it cannot be collapsed.
    """
    single = collapse(group)
    if single is group:
        raise group
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
