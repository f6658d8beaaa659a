"""The registry: catalogs (ingested or registered in place) and their names.

:mod:`.catalogs` lists, describes and locks catalogs; :mod:`.register`
registers an existing table as a catalog without copying it; :mod:`.drop`
lists what depends on a catalog and drops it (``cascade``) without orphans.
The names are imported lazily.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from skyclass.lazy import lazy_getattr

if TYPE_CHECKING:
    from skyclass.registry.catalogs import CatalogDescription as CatalogDescription
    from skyclass.registry.catalogs import CatalogSummary as CatalogSummary
    from skyclass.registry.catalogs import describe_catalog as describe_catalog
    from skyclass.registry.catalogs import list_catalogs as list_catalogs
    from skyclass.registry.drop import CatalogDependents as CatalogDependents
    from skyclass.registry.drop import catalog_dependents as catalog_dependents
    from skyclass.registry.drop import drop_catalog as drop_catalog
    from skyclass.registry.register import Registration as Registration
    from skyclass.registry.register import register_catalog as register_catalog

_EXPORTS = {
    "CatalogDescription": "skyclass.registry.catalogs",
    "CatalogSummary": "skyclass.registry.catalogs",
    "describe_catalog": "skyclass.registry.catalogs",
    "list_catalogs": "skyclass.registry.catalogs",
    "CatalogDependents": "skyclass.registry.drop",
    "catalog_dependents": "skyclass.registry.drop",
    "drop_catalog": "skyclass.registry.drop",
    "Registration": "skyclass.registry.register",
    "register_catalog": "skyclass.registry.register",
}

__all__ = sorted(_EXPORTS)


__getattr__ = lazy_getattr(__name__, _EXPORTS)
