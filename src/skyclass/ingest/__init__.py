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
    from skyclass.registry.catalogs import CatalogDescription as CatalogDescription
    from skyclass.registry.catalogs import CatalogSummary as CatalogSummary
    from skyclass.registry.catalogs import describe_catalog as describe_catalog
    from skyclass.registry.catalogs import list_catalogs as list_catalogs
    from skyclass.registry.drop import drop_catalog as drop_catalog

_EXPORTS = {
    "LoadReport": "skyclass.ingest.load",
    "ingest_file": "skyclass.ingest.load",
    "CatalogDescription": "skyclass.registry.catalogs",
    "CatalogSummary": "skyclass.registry.catalogs",
    "describe_catalog": "skyclass.registry.catalogs",
    "drop_catalog": "skyclass.registry.drop",
    "list_catalogs": "skyclass.registry.catalogs",
}

__all__ = sorted(_EXPORTS)


__getattr__ = lazy_getattr(__name__, _EXPORTS)
