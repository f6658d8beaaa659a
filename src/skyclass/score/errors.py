"""Errors of the scoring jobs, deployments and schedules."""

from __future__ import annotations

from skyclass.errors import SkyclassError


class ScoringError(SkyclassError, RuntimeError):
    """A scoring job, deployment or schedule cannot be started, run or changed."""


class AlreadyRunningError(ScoringError):
    """The same scoring job (model version and catalog) is already running elsewhere."""


class ConnectionLostError(ScoringError):
    """A scoring job lost its connection to the server; starting it again resumes the run."""
