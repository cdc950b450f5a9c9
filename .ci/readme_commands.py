"""Print the README's set-up commands, one per line, for .ci/run to execute as written.

The set-up commands are the ```sh blocks of README.md's "## Set up" section, in order; this is
the one place that says so, so the README and CI cannot drift apart. With ``--bounded``, a
command that runs ``trio_dxlink stream`` with neither ``--duration`` nor ``--count`` (which
would stream until Ctrl-C) gets ``--count 5`` appended; the others are printed unchanged.

Exits non-zero, saying why, if the section or its commands are missing.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"
SECTION = "## Set up"


def setup_commands(text: str) -> list[str]:
    """The commands of the ```sh blocks in the "## Set up" section (a block's lines joined)."""
    start = text.find(f"\n{SECTION}\n")
    if start < 0:
        raise SystemExit(f"readme_commands: README.md has no {SECTION!r} section")
    end = text.find("\n## ", start + 1)
    section = text[start : end if end >= 0 else len(text)]
    blocks = re.findall(r"^```sh\n(.*?)^```$", section, re.S | re.M)
    commands = [" ".join(line.strip() for line in b.splitlines() if line.strip()) for b in blocks]
    if not commands:
        raise SystemExit(f"readme_commands: the {SECTION!r} section has no ```sh block")
    return commands


def bounded(command: str) -> str:
    """``command``, made to end by itself if it would stream forever."""
    if "trio_dxlink stream" in command and not re.search(r"--(duration|count)\b", command):
        return f"{command} --count 5"
    return command


def main(argv: list[str]) -> int:
    commands = setup_commands(README.read_text(encoding="utf-8"))
    for command in commands:
        print(bounded(command) if "--bounded" in argv else command)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
