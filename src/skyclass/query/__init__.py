"""Queries on registered catalogs: cone search and cross-match.

``cone_search`` and ``crossmatch`` call the SQL functions of the same names
(schema ``skyclass``) and return astropy Tables with units; ``write_table``
renders a result as a text table, CSV, JSON or VOTable. The names are imported
lazily, so that importing this package (as the command line does) does not
load astropy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from skyclass.lazy import lazy_getattr

if TYPE_CHECKING:
    from skyclass.query.output import FORMATS as FORMATS
    from skyclass.query.output import render as render
    from skyclass.query.output import write_table as write_table
    from skyclass.query.spatial import cone_search as cone_search
    from skyclass.query.spatial import crossmatch as crossmatch
    from skyclass.query.spatial import parse_coordinates as parse_coordinates
    from skyclass.query.spatial import parse_radius as parse_radius

_EXPORTS = {
    "FORMATS": "skyclass.query.output",
    "render": "skyclass.query.output",
    "write_table": "skyclass.query.output",
    "cone_search": "skyclass.query.spatial",
    "crossmatch": "skyclass.query.spatial",
    "parse_coordinates": "skyclass.query.spatial",
    "parse_radius": "skyclass.query.spatial",
}

__all__ = sorted(_EXPORTS)


__getattr__ = lazy_getattr(__name__, _EXPORTS)
