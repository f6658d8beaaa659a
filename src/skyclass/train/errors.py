"""Errors raised by the training core; all are :class:`~skyclass.errors.SkyclassError`."""

from __future__ import annotations

from skyclass.errors import SkyclassError


class TrainError(SkyclassError, ValueError):
    """Training or evaluation arguments are invalid (estimator, parameters, labels, arrays)."""


class LeakageError(TrainError):
    """A feature would leak the label or identify objects; the message names each one."""

    def __init__(self, message: str, refused: tuple[str, ...]) -> None:
        self.refused = refused
        super().__init__(message)
