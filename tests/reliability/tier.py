"""The reliability tier: a small count by default, the full count under ``make reliability``."""

from __future__ import annotations

import os

FULL = os.environ.get("SKYCLASS_RELIABILITY", "") == "full"


def count(default: int, full: int) -> int:
    """``full`` when ``SKYCLASS_RELIABILITY=full`` is set, else ``default``."""
    return full if FULL else default
