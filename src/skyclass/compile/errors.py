"""Errors of the compile step (kept as an import location; defined in :mod:`skyclass.errors`)."""

from __future__ import annotations

from skyclass.errors import CompileError

__all__ = ["CompileError"]
