"""Database access: the embedded cluster, connections, schema and migrations."""
