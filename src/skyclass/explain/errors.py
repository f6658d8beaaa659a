"""The error of the explain step."""

from __future__ import annotations

from skyclass.errors import SkyclassError


class ExplainError(SkyclassError):
    """A model, object or request that cannot be explained."""
