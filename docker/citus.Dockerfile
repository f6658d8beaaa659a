# Citus 13 (PostgreSQL 17) with q3c, pgvector, pg_cron and the skyclass extension: the
# coordinator and worker image of the `citus` compose profile (docs/scale-out.md). Every
# node needs the same extensions (Citus propagates CREATE EXTENSION, not the files).
# Same install script as the README set-up and the `db` image (tests/docs/test_compose.py).
FROM citusdata/citus:13.0.3
COPY .ci/install-system.sh /opt/skyclass/.ci/install-system.sh
RUN PG_MAJOR=17 bash /opt/skyclass/.ci/install-system.sh
COPY src/pg_skyclass /opt/skyclass/src/pg_skyclass
RUN make -C /opt/skyclass/src/pg_skyclass PG_CONFIG=/usr/lib/postgresql/17/bin/pg_config clean \
 && make -C /opt/skyclass/src/pg_skyclass PG_CONFIG=/usr/lib/postgresql/17/bin/pg_config install
# citus must come first in shared_preload_libraries.
CMD ["postgres", "-c", "shared_preload_libraries=citus,pg_cron", "-c", "cron.database_name=skyclass"]
