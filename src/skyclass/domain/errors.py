"""Errors of the domain-shift package."""

from __future__ import annotations

from skyclass.errors import SkyclassError


class DomainError(SkyclassError, ValueError):
    """Domain-classifier arguments or data are invalid; the message says what to do."""
