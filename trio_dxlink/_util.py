"""The one helper that turns a nursery's exception group back into a single exception."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import trio

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup

__all__ = ["collapse", "unwrap_group"]


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


class unwrap_group:
    """A context manager that re-raises a single exception out of an exception group."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        if isinstance(exc, BaseExceptionGroup):
            single = collapse(exc)
            if single is not exc:
                raise single from None
