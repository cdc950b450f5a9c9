"""What the command line's subcommands share: the one-line usage error, the help layout, and
how a time typed on the command line (``--from-time``) becomes epoch milliseconds.

Times on the command line follow the library's rules (:mod:`trio_dxlink._arguments`) once they
are read: an epoch number is milliseconds (a number that can only be seconds is refused), and
the result names one instant. What the command line adds is text:

* ``-2h``, ``-30m``, ``-1d``, ``-45s``, ``-1w``: that long before now;
* an ISO datetime (``2024-01-05T09:30``, ``2024-01-05 09:30:00+00:00``, ``2024-01-05``,
  ``...Z``): with no offset it is local time;
* digits only: epoch milliseconds.
"""

from __future__ import annotations

import argparse
import datetime as dt
import re
import sys
from collections.abc import Sequence
from typing import NoReturn

from ._arguments import epoch_ms

__all__ = ["HelpFormatter", "OneLineErrorParser", "UsageError", "parse_time_argument"]


_RELATIVE = re.compile(r"^-(\d+(?:\.\d+)?)([smhdw])$")
"""A time before now typed on the command line: ``-2h``, ``-30m``, ``-1.5d``."""


class UsageError(Exception):
    """A bad command-line argument (reported in one line, exit status 2)."""


class OneLineErrorParser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (``prog: error: ...``), exit status 2.

    Subcommand parsers made with ``add_subparsers().add_parser`` are of the same class.
    """

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        # argparse takes "-2h" for an option: "--from-time -2h" becomes "--from-time=-2h".
        given = list(sys.argv[1:] if args is None else args)
        joined: list[str] = []
        for arg in given:
            after_option = joined and joined[-1].startswith("--") and "=" not in joined[-1]
            if after_option and _RELATIVE.match(arg):
                joined[-1] += "=" + arg
                continue
            joined.append(arg)
        return super().parse_known_args(joined, namespace)

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Help text as written (descriptions and epilogs keep their lines), with each option's
    default appended where it has a meaningful one (not ``None`` or ``False``)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        if (
            action.option_strings
            and default is not None
            and default is not False
            and default != argparse.SUPPRESS
            and "default" not in text
        ):
            text += " (default: %(default)s)"
        return text


_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_time_argument(text: str, option: str, now: dt.datetime | None = None) -> int:
    """A time typed on the command line as epoch milliseconds (see the module docstring).

    ``now`` (an aware datetime) is what relative times count back from (default: the clock).

    Raises:
        UsageError: text that is none of the accepted forms, or a time the library's rules
            refuse (a number that can only be seconds, ...).
    """
    text = text.strip()
    relative = _RELATIVE.match(text)
    if relative is not None:
        now = now or dt.datetime.now(dt.timezone.utc)
        seconds = float(relative[1]) * _UNIT_SECONDS[relative[2]]
        return epoch_ms(now - dt.timedelta(seconds=seconds), option)
    if text.isdigit():
        try:
            return epoch_ms(int(text), option)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    try:
        moment = dt.datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith("Z") else text)
    except ValueError:
        raise UsageError(
            f"{option} must be an ISO datetime (2024-01-05T09:30, local time unless it has an"
            f" offset), a relative time (-2h, -30m, -1d) or epoch milliseconds, got {text!r}"
        ) from None
    if moment.tzinfo is None:
        moment = moment.astimezone()  # local time
    return epoch_ms(moment, option)
