"""The catalog registry helpers that ingest uses, from :mod:`skyclass.registry.catalogs`.

Kept so that ``skyclass.ingest.registry`` imports keep working; the registry
package owns the code.
"""

from __future__ import annotations

from skyclass.registry.catalogs import (
    drop_table as drop_table,
)
from skyclass.registry.catalogs import (
    table_exists as table_exists,
)
from skyclass.registry.locks import lock_catalog as lock_catalog
