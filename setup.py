"""Declares the optional C extension; everything else is in pyproject.toml.

``trio_dxlink._speedups`` is built when a C compiler is at hand. If building it fails, the
install goes on without it and trio_dxlink runs in pure Python (same results, slower per
event). Set ``TRIO_DXLINK_NO_EXTENSIONS=1`` to skip building it.
"""

import os

from setuptools import Extension, setup

extensions = []
if os.environ.get("TRIO_DXLINK_NO_EXTENSIONS", "") in ("", "0"):
    extensions.append(
        Extension(
            "trio_dxlink._speedups",
            ["trio_dxlink/_speedups.c", "trio_dxlink/_speedups_text.c"],
            optional=True,
        )
    )

setup(ext_modules=extensions)
