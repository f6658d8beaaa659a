"""Catalogs sharded by sky region over several PostgreSQL databases with postgres_fdw.

The coordinator (the database ``skyclass`` is pointed at) registers shards
(``servers.py``: a postgres_fdw foreign server each), attaches a catalog that
each shard holds part of (``catalogs.py``: a table partitioned by Q3C pixel
range whose partitions are foreign tables, registered as a catalog so
``cone_search`` works through it, and the same for the shards' current
classifications) and rescores it on every shard at once, in place
(``rescore.py``: one chunked, resumable job per shard). ``skyclass shard``
(``cli.py``) is the command line. See docs/scale-out.md.
"""

from skyclass.shard.catalogs import AttachedCatalog, ShardPart, attach_catalog, detach_catalog
from skyclass.shard.rescore import ShardRun, rescore_shards
from skyclass.shard.servers import ShardInfo, add_shard, list_shards, remove_shard, shard_url

__all__ = [
    "AttachedCatalog",
    "ShardInfo",
    "ShardPart",
    "ShardRun",
    "add_shard",
    "attach_catalog",
    "detach_catalog",
    "list_shards",
    "remove_shard",
    "rescore_shards",
    "shard_url",
]
