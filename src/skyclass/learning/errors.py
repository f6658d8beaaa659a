"""The error of the active-learning step."""

from __future__ import annotations

from skyclass.errors import SkyclassError


class QueueError(SkyclassError):
    """A queue, label file or simulation request that cannot be carried out."""
