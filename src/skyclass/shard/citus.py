"""The set-up step of the ``citus`` compose profile: migrate the coordinator, then distribute.

``python -m skyclass.shard.citus SETUP.sql`` runs ``skyclass db migrate`` against
``SKYCLASS_DATABASE_URL`` (the Citus coordinator) and then executes the SQL file
(``docker/citus-setup.sql``: worker nodes, reference tables, distributed tables and
functions) in one transaction. Nothing here runs on the development machines (no
Docker engine, no Citus); see docs/scale-out.md.
"""

from __future__ import annotations

import sys
from pathlib import Path

import psycopg

from skyclass.db.connect import database_url
from skyclass.db.migrate import upgrade


def main(argv: list[str] | None = None) -> int:
    """Migrate the database at ``SKYCLASS_DATABASE_URL`` and run the set-up SQL file given."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m skyclass.shard.citus SETUP.sql", file=sys.stderr)
        return 2
    url = database_url(start=False)
    upgrade(url)
    text = Path(args[0]).read_text(encoding="utf-8")
    with psycopg.connect(url) as conn:
        conn.execute(text.encode())
    print(f"distributed skyclass over the Citus workers ({args[0]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
