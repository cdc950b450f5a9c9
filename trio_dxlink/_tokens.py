"""Tokens and where they come from: the token source protocol, a fixed token, renewal timing.

A connection needs a token and the URL it is valid for. Either the user gave both (a URL and
``token=``: :class:`FixedToken`), or an object hands them out on request (a
:class:`TokenSource`, such as a tastytrade session), asked before every connection and again
before a token expires. :func:`fetch_token` asks, and turns whatever goes wrong into the
library's errors; :func:`renewal_delay` says when to ask again.

The names before 0.2, ``QuoteToken``, ``QuoteTokenSource`` and its ``get_quote_token`` method
(tastytrade's word for the token), still work, with a :class:`DeprecationWarning`:
:func:`as_token_source` adapts an object that only has ``get_quote_token``.
"""

from __future__ import annotations

import ipaddress
import urllib.parse
import warnings
from typing import Protocol, runtime_checkable

import attrs
import trio

from ._exceptions import AuthenticationError, ConnectError, DXLinkError

__all__ = [
    "FixedToken",
    "LegacyTokenSource",
    "Token",
    "TokenSource",
    "as_token_source",
    "fetch_token",
    "renewal_delay",
]


@attrs.frozen
class Token:
    """A DXLink token and where to use it.

    Attributes:
        token: the AUTH token (never shown in reprs or logs).
        url: the DXLink WebSocket URL this token is for.
        expires_at: when the token stops working, in epoch seconds, if known; the feed renews
            the token on a live connection before then.
    """

    token: str = attrs.field(repr=False)
    url: str
    expires_at: float | None = None


@runtime_checkable
class TokenSource(Protocol):
    """Anything that can hand out DXLink tokens: a tastytrade session, for example.

    ``get_token`` is called before every connection attempt and before a token expires. It
    returns a :class:`Token` or a ``(token, url)`` pair.
    """

    async def get_token(self) -> Token | tuple[str, str]:
        """A current token and the DXLink URL to use it on."""


@runtime_checkable
class LegacyTokenSource(Protocol):
    """The token source protocol before 0.2 (deprecated; exported as ``QuoteTokenSource``).

    Implement :class:`TokenSource` (``get_token``) instead.
    """

    async def get_quote_token(self) -> Token | tuple[str, str]:
        """A current token and the DXLink URL to use it on."""


@attrs.frozen
class _LegacyAdapter:
    """A :class:`TokenSource` over an object that only has ``get_quote_token``."""

    legacy: LegacyTokenSource

    async def get_token(self) -> Token | tuple[str, str]:
        return await self.legacy.get_quote_token()


def as_token_source(target: object) -> TokenSource | None:
    """``target`` as a :class:`TokenSource`, or ``None`` if it is not one.

    An object with only the deprecated ``get_quote_token`` method is adapted, with a
    :class:`DeprecationWarning`.
    """
    if isinstance(target, TokenSource):
        return target
    from ._tastytrade_tokens import SDKSessionSource, is_sdk_session

    if is_sdk_session(target):  # tastytrade's own SDK Session
        return SDKSessionSource(target)
    if isinstance(target, LegacyTokenSource):
        warnings.warn(
            f"{type(target).__name__}.get_quote_token() is deprecated: name the method"
            " get_token() (the trio_dxlink.TokenSource protocol)",
            DeprecationWarning,
            stacklevel=5,  # as_token_source ← token_source_for ← open_dxlink ← contextlib ← user
        )
        return _LegacyAdapter(target)
    return None


@attrs.frozen
class FixedToken:
    """The source behind ``open_dxlink(url, token=...)``: the same token every time."""

    url: str
    token: str | None = attrs.field(repr=False)

    async def get_token(self) -> Token | tuple[str, str]:
        await trio.lowlevel.checkpoint()
        return Token(self.token or "", self.url)


async def fetch_token(source: TokenSource) -> Token:
    """Ask ``source`` for a token.

    Raises:
        ConnectError: the source failed (retryable: a token service may come back).
        AuthenticationError: the source returned something that is not a token and a
            ``ws://``/``wss://`` URL, or a token for a ``ws://`` URL whose host is not
            loopback (a token travels in clear text only within this machine).
    """
    try:
        token = await source.get_token()
    except (trio.Cancelled, DXLinkError):
        raise
    except Exception as exc:
        raise ConnectError(
            f"the session could not supply a token: {type(exc).__name__}: {exc}"
        ) from exc
    if isinstance(token, tuple) and len(token) == 2:
        token = Token(*token)
    if not (
        isinstance(token, Token)
        and isinstance(token.token, str)
        and isinstance(token.url, str)
        and token.url.startswith(("ws://", "wss://"))
    ):
        raise AuthenticationError(
            "get_token() must return a Token or a (token, url) pair with a"
            f" ws:// or wss:// URL, not a {type(token).__name__}"
        )
    if token.token and not may_carry_secret(token.url):
        raise AuthenticationError(
            f"refusing to send a token in clear text to {_host(token.url)!r}: a ws:// URL is"
            " only allowed for loopback addresses; use wss://"
        )
    return token


def _host(url: str) -> str:
    try:
        return urllib.parse.urlsplit(url).hostname or ""
    except ValueError:
        return ""


def may_carry_secret(url: str) -> bool:
    """Whether a secret (a token, credentials) may be sent to ``url``: over TLS (``wss://``,
    ``https://``), or in clear text (``ws://``, ``http://``) to a loopback address only."""
    if url.startswith(("wss://", "https://")):
        return True
    host = _host(url)
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def renewal_delay(token: Token, now: float, margin: float) -> float | None:
    """Seconds from ``now`` (epoch) until ``token`` should be renewed; ``None``: never."""
    if token.expires_at is None:
        return None
    return max(0.0, token.expires_at - now - margin)
