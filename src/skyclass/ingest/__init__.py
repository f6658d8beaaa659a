"""Validated catalog ingest: a FITS, VOTable, CSV or ECSV file becomes a catalog table.

``ingest_file`` loads a file atomically (table, Q3C index, registry rows, or
an :class:`~skyclass.errors.IngestError` and an unchanged database);
``list_catalogs``, ``describe_catalog`` and ``drop_catalog`` manage what was
loaded. The names are imported lazily, so that importing this package (as the
command line does) does not load astropy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from skyclass.lazy import lazy_getattr

if TYPE_CHECKING:
    from skyclass.ingest.load import LoadReport as LoadReport
    from skyclass.ingest.load import ingest_file as ingest_file
    from skyclass.ingest.registry import CatalogDescription as CatalogDescription
    from skyclass.ingest.registry import CatalogSummary as CatalogSummary
    from skyclass.ingest.registry import describe_catalog as describe_catalog
    from skyclass.ingest.registry import drop_catalog as drop_catalog
    from skyclass.ingest.registry import list_catalogs as list_catalogs

_EXPORTS = {
    "LoadReport": "skyclass.ingest.load",
    "ingest_file": "skyclass.ingest.load",
    "CatalogDescription": "skyclass.ingest.registry",
    "CatalogSummary": "skyclass.ingest.registry",
    "describe_catalog": "skyclass.ingest.registry",
    "drop_catalog": "skyclass.ingest.registry",
    "list_catalogs": "skyclass.ingest.registry",
}

__all__ = sorted(_EXPORTS)


__getattr__ = lazy_getattr(__name__, _EXPORTS)
