"""Errors of the compile step; all are :class:`~skyclass.errors.SkyclassError`."""

from __future__ import annotations

from skyclass.errors import SkyclassError


class CompileError(SkyclassError, ValueError):
    """A model cannot become a native library (unsupported, unfitted, or the build failed)."""
