"""The skyclass error hierarchy.

Every error a user can cause is a :class:`SkyclassError`; the CLI prints its
message (which says what was wrong, where, and what to do) without a traceback.
The subclasses also derive from the matching built-in exception so callers can
catch them the usual way.
"""

from __future__ import annotations


class SkyclassError(Exception):
    """Base class of every error skyclass reports to a user."""


class ConfigError(SkyclassError, ValueError):
    """A setting or environment variable is wrong."""


class DatabaseError(SkyclassError, RuntimeError):
    """The database cannot be reached, started or brought to the current schema."""


class MissingExtensionError(DatabaseError):
    """A PostgreSQL extension skyclass needs is not installed on the server."""


class IngestError(SkyclassError, ValueError):
    """A catalog file cannot be loaded; the message names file, column and row."""

    def __init__(
        self,
        message: str,
        *,
        path: str | None = None,
        column: str | None = None,
        row: int | None = None,
    ) -> None:
        self.path = path
        self.column = column
        self.row = row
        where = []
        if path is not None:
            where.append(path)
        if column is not None:
            where.append(f"column {column!r}")
        if row is not None:
            where.append(f"row {row}")
        prefix = ", ".join(where)
        super().__init__(f"{prefix}: {message}" if prefix else message)


class CatalogNotFoundError(SkyclassError, LookupError):
    """A catalog name is not registered."""


class InvalidModelRef(SkyclassError, ValueError):
    """A model version is not written ``MODEL``, ``MODEL:VERSION`` or as an id."""


class ModelNotFoundError(SkyclassError, LookupError):
    """A model or model version named by the user is not registered."""


class UnknownModel(ModelNotFoundError):
    """No model of that name is registered; the message lists the known models."""


class UnknownVersion(ModelNotFoundError):
    """The model exists but not that version (or version id); the message lists its versions."""


class UnknownDeployment(SkyclassError, LookupError):
    """No deployment has that name; the message lists the deployments."""


class UnknownTarget(SkyclassError, LookupError):
    """No deployment, MODEL:VERSION or model_version_id of that name (a scoring target)."""


class UnknownRun(SkyclassError, LookupError):
    """No scoring run has that id."""


class RegistryAccessError(SkyclassError, PermissionError):
    """The role may not read the registry table a name is looked up in; the message says how."""


class RegistryError(SkyclassError, ValueError):
    """A catalog cannot be registered or dropped; the message says why and what to do."""


class ShardError(SkyclassError, ValueError):
    """A shard cannot be added or used, or a catalog attached or rescored over shards."""


class QueryError(SkyclassError, ValueError):
    """A query's arguments are invalid (coordinates, radius, units, names)."""


class FeatureSpecError(SkyclassError, ValueError):
    """A feature-set spec is invalid; the message names file, line and what is allowed."""

    def __init__(self, message: str, *, path: str | None = None, line: int | None = None) -> None:
        self.path = path
        self.line = line
        where = [] if path is None else [path]
        if line is not None:
            where.append(f"line {line}")
        prefix = ", ".join(where)
        super().__init__(f"{prefix}: {message}" if prefix else message)


class FeatureSetNotFoundError(SkyclassError, LookupError):
    """A feature set (name, or name and version) is not registered."""


class AmbiguousName(SkyclassError, LookupError):
    """A name fits several registry rows (builds on several catalogs, a short hash prefix)."""


class CompileError(SkyclassError, ValueError):
    """A model cannot be compiled or registered (unsupported, unknown, failed build, no role)."""


class ModelOutputError(SkyclassError, ValueError):
    """A calibration map, redshift grid or PDF that is not valid."""
