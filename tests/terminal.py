"""A command run in a pseudo-terminal, its screen read through a terminal emulator (pyte): how
the CLI tests check what a person would see of a live table or ladder."""

from __future__ import annotations

import fcntl
import os
import struct
import subprocess
import termios

import pyte
import trio

__all__ = ["COLUMNS", "ROWS", "Terminal", "status_line"]

ROWS, COLUMNS = 30, 150


class Terminal:
    """A subprocess on a pseudo-terminal, its output fed into a terminal emulator (pyte)."""

    def __init__(self, argv: list[str]) -> None:
        master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", ROWS, COLUMNS, 0, 0))
        env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES", "NO_COLOR")}
        env["TERM"] = "xterm-256color"
        self.process = subprocess.Popen(
            argv, stdin=slave, stdout=slave, stderr=slave, env=env, close_fds=True
        )
        os.close(slave)
        self.output = trio.lowlevel.FdStream(master)
        self.screen = pyte.Screen(COLUMNS, ROWS)
        self.stream = pyte.ByteStream(self.screen)
        self.closed = False

    async def read(self) -> None:
        """Feed the next output to the emulator (sets ``closed`` at the end of the output)."""
        try:
            data = await self.output.receive_some()
        except trio.BrokenResourceError:  # EIO: the other side of the pty closed
            data = b""
        if not data:
            self.closed = True
        self.stream.feed(data)

    def lines(self) -> list[str]:
        return [line.rstrip() for line in self.screen.display]

    async def until(self, predicate: object) -> None:
        while not predicate(self.lines()):  # type: ignore[operator]
            assert not self.closed, "\n".join(self.lines())
            await self.read()

    async def finish(self) -> int:
        while not self.closed:
            await self.read()
        await self.output.aclose()
        return self.process.wait()


def status_line(lines: list[str]) -> str:
    found = [line for line in lines if "events/s" in line]
    return found[-1] if found else ""
