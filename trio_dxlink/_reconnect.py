"""When to reconnect: the policy and the pure decision after each failed connection.

:class:`Reconnector` is told what happened (a connection failed with this error, it had or had
not been authorized, it is now ``now``) and answers what to do next: :class:`Retry` after a
delay, or :class:`GiveUp` with the exception to raise. It reads no clock and sleeps on
nothing; the feed's connection loop does the waiting.

The rules, in one place:

* the first connection is not retried: a wrong URL, an unreachable server or a broken
  certificate fail the ``async with`` at once. The one exception is a rejected token from a
  session, which gets one fresh token at once;
* after a connection has been authorized, every failure is retried with jittered exponential
  backoff, except those reconnecting cannot cure: a server ERROR ``UNSUPPORTED_PROTOCOL``, an
  untrusted certificate, a token source that fails to produce a valid token, a fixed token the
  server rejects, or :data:`MAX_TOKEN_REJECTIONS` session tokens rejected in a row;
* ``max_attempts`` failed attempts in a row, or ``give_up_after`` seconds since the connection
  was lost, end in :class:`~trio_dxlink.GaveUpError` (``max_attempts=0``: the failure itself).
"""

from __future__ import annotations

import random

import attrs

from ._exceptions import (
    AuthenticationError,
    CertificateError,
    DXLinkError,
    GaveUpError,
    ServerError,
)

__all__ = [
    "FATAL_SERVER_ERRORS",
    "MAX_TOKEN_REJECTIONS",
    "NO_RECONNECT",
    "GiveUp",
    "ReconnectPolicy",
    "Reconnector",
    "Retry",
    "TokenRejected",
]

FATAL_SERVER_ERRORS = frozenset({"UNSUPPORTED_PROTOCOL"})
"""Connection-level ERROR codes after which reconnecting is pointless."""

MAX_TOKEN_REJECTIONS = 3
"""Fresh tokens the server may reject in a row (each retried under the reconnect policy)
before the feed ends with :class:`~trio_dxlink.AuthenticationError`."""


class TokenRejected(AuthenticationError):
    """The server rejected the token this connection used (internal: a session may renew)."""


@attrs.frozen
class ReconnectPolicy:
    """How the feed reconnects after losing a connection.

    The first connection is not retried: a wrong URL, an unreachable server or a rejected token
    fail the ``async with`` at once. After a connection has been established, losing it starts
    reconnect attempts with delays ``initial_delay * multiplier**(n-1)``, capped at
    ``max_delay``, each randomised by ``±jitter`` (a fraction). A connection that stayed up for
    ``healthy_after`` seconds resets the count.

    Attributes:
        max_attempts: give up after this many failed attempts in a row (``None``: never; ``0``:
            do not reconnect at all).
        give_up_after: give up when this many seconds have passed since the connection was lost
            (``None``: no limit).
    """

    max_attempts: int | None = None
    give_up_after: float | None = None
    initial_delay: float = 0.5
    max_delay: float = 30.0
    multiplier: float = 2.0
    jitter: float = 0.2
    healthy_after: float = 30.0

    def delay(self, attempt: int, rng: random.Random) -> float:
        """The pause before reconnect attempt ``attempt`` (1-based)."""
        base = min(self.max_delay, self.initial_delay * self.multiplier ** max(0, attempt - 1))
        return max(0.0, base * (1 + self.jitter * (2 * rng.random() - 1)))


NO_RECONNECT = ReconnectPolicy(max_attempts=0)
"""A policy that never reconnects: the first lost connection ends the feed with its error."""


@attrs.frozen
class Retry:
    """Connect again after ``delay`` seconds (``attempt``: 1-based, 0 for a free retry)."""

    delay: float
    attempt: int


@attrs.frozen
class GiveUp:
    """Stop: raise ``error``."""

    error: BaseException


def _chained(error: BaseException, cause: BaseException | None) -> BaseException:
    """``error`` as ``raise error from cause`` would leave it (``None``: ``from None``)."""
    error.__cause__ = cause
    error.__suppress_context__ = True
    return error


class Reconnector:
    """The reconnect decision for one feed: counts attempts, rejections and the time lost."""

    def __init__(
        self, policy: ReconnectPolicy, *, fixed_token: bool, rng: random.Random | None = None
    ) -> None:
        self.policy = policy
        self.fixed_token = fixed_token
        self.rng = rng or random.Random()
        self.connected_once = False
        self.attempt = 0
        self.rejected = 0  # tokens rejected in a row
        self.lost_at: float | None = None

    def failed(
        self, error: DXLinkError, *, authorized_at: float | None, now: float
    ) -> Retry | GiveUp:
        """A connection ended with ``error``; ``authorized_at`` is when it was authorized
        (``None`` if it never was)."""
        policy = self.policy
        if authorized_at is not None:
            self.connected_once = True
            self.rejected = 0
            if now - authorized_at >= policy.healthy_after:
                self.attempt = 0
            self.lost_at = now
        if isinstance(error, TokenRejected):
            self.rejected += 1
            if self.fixed_token:
                return GiveUp(_chained(AuthenticationError(str(error)), None))
            if self.rejected > (MAX_TOKEN_REJECTIONS if self.connected_once else 1):
                return GiveUp(
                    _chained(
                        AuthenticationError(
                            f"{error}: the session's last {self.rejected} tokens were all rejected"
                        ),
                        None,
                    )
                )
            if not self.connected_once:
                return Retry(0.0, 0)  # first contact: one fresh token, at once
        elif not self.connected_once or _cannot_heal(error):
            return GiveUp(error)
        self.attempt += 1
        if policy.max_attempts == 0:
            return GiveUp(error)  # reconnecting is off: the failure itself is the answer
        if policy.max_attempts is not None and self.attempt > policy.max_attempts:
            return GiveUp(
                _chained(
                    GaveUpError(f"gave up after {self.attempt - 1} reconnect attempts: {error}"),
                    error,
                )
            )
        delay = policy.delay(self.attempt, self.rng)
        if policy.give_up_after is not None and self.lost_at is not None:
            remaining = self.lost_at + policy.give_up_after - now
            if remaining <= delay:
                return GiveUp(
                    _chained(
                        GaveUpError(
                            f"gave up reconnecting after {policy.give_up_after:g} s: {error}"
                        ),
                        error,
                    )
                )
        return Retry(delay, self.attempt)


def _cannot_heal(error: DXLinkError) -> bool:
    """Whether reconnecting is pointless after ``error`` (a rejected token is handled apart)."""
    if isinstance(error, ServerError):
        return error.code in FATAL_SERVER_ERRORS
    return isinstance(error, (AuthenticationError, CertificateError))
