"""What each tastytrade API failure means, as an exception a person can act on.

One function, :func:`api_error`, reads a failed reply (any of the API's error shapes: OAuth's
``error_code``/``error_description``, the ``{"error": {"code", "message", "errors"}}``
envelope, the 406's integer code, nginx's HTML page) and picks the exception and the advice.
Replies are quoted only by their ``code`` and ``message`` (clipped); bodies are never echoed,
so a secret a server might repeat cannot reach a message.
"""

from __future__ import annotations

from typing import Any

import orjson

from .._exceptions import TastytradeAuthenticationError, TastytradeError, TastytradeRateLimitError
from .._util import clip

__all__ = ["CUSTOMER_NOT_FOUND", "api_error", "error_code_and_message"]

CUSTOMER_NOT_FOUND = "quote_streamer.customer_not_found_error"

_GRANT_ADVICE = (
    "the grant was revoked, or the refresh token is not for this environment"
    " (production and sandbox have separate grants). Create a new grant in your OAuth"
    " application on my.tastytrade.com and pass its refresh token (refresh_token= or TT_REFRESH)"
)
_SECRET_ADVICE = (
    "check the client secret (client_secret= or TT_SECRET; it is shown once, when the OAuth"
    " application is created) and that it belongs to this environment (production or sandbox)"
)


def error_code_and_message(body: bytes) -> tuple[str | None, str | None]:
    """The API's error code and message in a reply body, whichever shape it has."""
    try:
        reply: Any = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None, None
    if not isinstance(reply, dict):
        return None, None
    if "error_code" in reply or "error_description" in reply:
        return _text(reply.get("error_code")), _text(reply.get("error_description"))
    error = reply.get("error")
    if isinstance(error, dict):
        inner = error.get("errors")
        if isinstance(inner, list) and inner and isinstance(inner[0], dict):
            first = inner[0]
            code = _text(first.get("code") or first.get("domain"))
            message = _text(first.get("message") or first.get("reason"))
            return code or _text(error.get("code")), message or _text(error.get("message"))
        return _text(error.get("code")), _text(error.get("message"))
    return None, None


def _text(value: object) -> str | None:
    if value is None or isinstance(value, (dict, list)):
        return None
    return clip(str(value), 160)


def api_error(
    status: int,
    body: bytes,
    content_type: str,
    *,
    what: str,
    sandbox: bool,
) -> TastytradeError:
    """The exception for a failed reply to ``what`` (``"POST /oauth/token"``, say)."""
    code, message = error_code_and_message(body)
    said = f" ({code}: {message})" if code and message else f" ({code or message})"
    if code is None and message is None:
        said = ""
    sign_in = what.endswith("/oauth/token")
    if status == 401 and "json" not in content_type:
        return TastytradeAuthenticationError(
            f"tastytrade answered {what} with HTTP 401 and a web page instead of JSON: the"
            " User-Agent header was missing or malformed (use user_agent='name/version')",
            status_code=status,
        )
    if status == 429:
        return TastytradeRateLimitError(
            f"tastytrade is rate limiting this client (HTTP 429 on {what}): wait and retry"
            " with a growing, jittered delay; cache chains and stream instead of polling"
            " (many failed sign-ins can block your IP address for hours)",
            status_code=status,
            code=code,
        )
    if status >= 500:
        return TastytradeError(
            f"tastytrade had a server error on {what} (HTTP {status}){said}; try again later",
            status_code=status,
            code=code,
        )
    if sign_in:
        if code == "invalid_request":
            return TastytradeError(
                f"tastytrade refused to sign in{said}. The sandbox has been seen answering this"
                " for a healthy grant for a few minutes (near the market's open): try again"
                " later; if it persists, the login is not a tastytrade customer",
                status_code=status,
                code=code,
            )
        if status == 401 or code == "invalid_client":
            return TastytradeAuthenticationError(
                f"tastytrade rejected the client secret (HTTP {status}){said}: {_SECRET_ADVICE}",
                status_code=status,
                code=code,
            )
        return TastytradeAuthenticationError(
            f"tastytrade refused the refresh token (HTTP {status}){said}: {_GRANT_ADVICE}",
            status_code=status,
            code=code,
        )
    quote_token = what.endswith("/api-quote-tokens")
    if code == CUSTOMER_NOT_FOUND:
        return TastytradeAuthenticationError(
            f"this tastytrade login is not entitled to market data{said}: quote tokens are"
            " issued to customers with an opened (and funded) account, not to a bare login;"
            " open an account, or use a grant of a login that has one",
            status_code=status,
            code=code,
        )
    if quote_token and sandbox and status in (403, 404):
        return TastytradeAuthenticationError(
            f"the tastytrade sandbox has no market data (HTTP {status} on {what}){said}: quote"
            " tokens come from production; sign in with a production grant (sandbox=False)",
            status_code=status,
            code=code,
        )
    if status == 401:
        return TastytradeAuthenticationError(
            f"tastytrade rejected the access token on {what} even after a fresh sign-in"
            f" (HTTP 401){said}: the grant may have been revoked; create a new one",
            status_code=status,
            code=code,
        )
    if status == 403:
        return TastytradeAuthenticationError(
            f"tastytrade does not permit {what} for this login (HTTP 403){said}: the grant's"
            " scopes or the account's permissions do not cover it",
            status_code=status,
            code=code,
        )
    if status == 406:
        return TastytradeError(
            f"tastytrade no longer supports the API version this client asked for (HTTP 406 on"
            f" {what}){said}: upgrade trio-dxlink",
            status_code=status,
            code=code,
        )
    if status == 404:
        return TastytradeError(
            f"tastytrade has nothing at {what} (HTTP 404){said}: check the symbol",
            status_code=status,
            code=code,
        )
    return TastytradeError(
        f"tastytrade refused {what} (HTTP {status}){said}", status_code=status, code=code
    )
