"""Loads the optional C speedups, ``trio_dxlink._speedups``.

The extension is built when trio_dxlink is installed from source with a C compiler at hand. It
speeds up the per-event steps (COMPACT rows into events, ``async for`` over a subscription, and
routing a decoded batch to one handle or splitting it among several) and the recorder's batch
writes (``join_text`` / ``write_text``: without the GIL, see ``_record._Sink``), and changes
nothing else:
every result, error and counter is the same without it. Each part stays only while the
end-to-end benchmark shows its gain (``benchmarks/README.md``).
Set ``TRIO_DXLINK_NO_SPEEDUPS=1`` in the environment to use the pure-Python code even when the
extension is there (the test suite runs both ways).
"""

from __future__ import annotations

import os
import warnings
from types import ModuleType

__all__ = ["API_VERSION", "speedups"]

API_VERSION = 5
"""The ``API_VERSION`` of the ``_speedups`` module this Python code was written against."""


def _load() -> ModuleType | None:
    if os.environ.get("TRIO_DXLINK_NO_SPEEDUPS", "") not in ("", "0"):
        return None
    try:
        from . import _speedups
    except ImportError:
        return None
    if getattr(_speedups, "API_VERSION", None) != API_VERSION:
        warnings.warn(
            f"ignoring {_speedups.__file__}: it was built from other sources (a stale build?);"
            " reinstall trio_dxlink to rebuild it",
            RuntimeWarning,
            stacklevel=2,
        )
        return None
    return _speedups


speedups: ModuleType | None = _load()
"""The ``trio_dxlink._speedups`` module, or ``None`` when it is not built or is turned off."""
