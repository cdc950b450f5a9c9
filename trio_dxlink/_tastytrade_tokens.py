"""tastytrade's quote-token reply, and tastytrade's own SDK ``Session`` as a token source.

Both :class:`trio_dxlink.tastytrade.TastytradeSession` and the adapter for the tastytrade SDK
(``tastytrade.Session``, 13.x) read ``GET /api-quote-tokens`` the same way, here: the token,
the ``dxlink-url`` to use it on, and ``expires-at`` (24 hours after ``issued-at``, or after now,
when the API leaves it out). Nothing here imports httpx or the SDK.
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Mapping
from typing import Any

from ._exceptions import AuthenticationError
from ._tokens import Token

__all__ = [
    "QUOTE_TOKEN_LIFETIME",
    "SDKSessionSource",
    "is_sdk_session",
    "parse_api_datetime",
    "token_from_reply",
]

QUOTE_TOKEN_LIFETIME = 24 * 3600.0
"""Seconds a quote token lasts when the reply does not say (tastytrade documents 24 hours)."""


def parse_api_datetime(text: object) -> float | None:
    """``"2023-07-17T20:00:00.000+00:00"`` → epoch seconds; ``None`` if absent or unreadable."""
    if not isinstance(text, str) or not text:
        return None
    try:
        moment = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.timezone.utc)
    return moment.timestamp()


def token_from_reply(data: Mapping[str, Any], *, now: float | None = None) -> Token:
    """The :class:`~trio_dxlink.Token` in the ``data`` of a ``/api-quote-tokens`` reply.

    Raises:
        AuthenticationError: the reply holds no token or no ``dxlink-url``.
    """
    token = data.get("token")
    url = data.get("dxlink-url")
    if not isinstance(token, str) or not token or not isinstance(url, str) or not url:
        raise AuthenticationError(
            "tastytrade's quote-token reply lacks a token or a dxlink-url"
            f" (it has the keys {sorted(str(key) for key in data)})"
        )
    expires_at = parse_api_datetime(data.get("expires-at"))
    if expires_at is None:
        issued_at = parse_api_datetime(data.get("issued-at"))
        start = issued_at if issued_at is not None else (time.time() if now is None else now)
        expires_at = start + QUOTE_TOKEN_LIFETIME
    return Token(token, url, expires_at=expires_at)


class SDKSessionSource:
    """tastytrade's own SDK ``Session`` (13.x) as a token source.

    The SDK's streamer asks ``await session._get("/api-quote-tokens")`` (which refreshes the
    access token first and returns the reply's ``data``); so does this. The session's repr,
    which would show nothing secret, is not used either: this object shows only the class.
    """

    def __init__(self, session: Any) -> None:
        self._session = session

    def __repr__(self) -> str:
        return f"<SDKSessionSource for {type(self._session).__name__}>"

    async def get_token(self) -> Token:
        data = await self._session._get("/api-quote-tokens")
        if not isinstance(data, Mapping):
            raise AuthenticationError(
                f"tastytrade's SDK returned a {type(data).__name__} for /api-quote-tokens"
            )
        return token_from_reply(data)


def is_sdk_session(target: object) -> bool:
    """Whether ``target`` is a ``tastytrade.Session`` (by its class, without importing it)."""
    return any(
        cls.__name__ == "Session" and cls.__module__.split(".")[0] == "tastytrade"
        for cls in type(target).__mro__
    ) and callable(getattr(target, "_get", None))
