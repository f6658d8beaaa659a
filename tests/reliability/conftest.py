"""Fixtures of the reliability suite: the scoring tests' extension fixture."""

from tests.score.conftest import skyclass_extension

__all__ = ["skyclass_extension"]
