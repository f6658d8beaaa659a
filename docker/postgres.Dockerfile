# PostgreSQL 17 with q3c, pgvector, pg_cron and the skyclass extension.
# Uses the same install script as the README set-up (.ci/install-system.sh), so the
# two cannot drift (tests/docs/test_compose.py checks it); PostgreSQL's own apt
# repository, configured in the official image, has binary packages of q3c, pgvector
# and pg_cron for 17. The script runs as root here, so it needs no sudo.
FROM postgres:17-bookworm
COPY .ci/install-system.sh /opt/skyclass/.ci/install-system.sh
RUN PG_MAJOR=17 bash /opt/skyclass/.ci/install-system.sh
# Only the extension's folder (sources, control file, SQL scripts): the build context is the whole repository (with its
# virtualenv), and objects left in a developer's tree were built for another server
# version, hence the `clean` before building for 17.
COPY src/pg_skyclass /opt/skyclass/src/pg_skyclass
RUN make -C /opt/skyclass/src/pg_skyclass PG_CONFIG=/usr/lib/postgresql/17/bin/pg_config clean \
 && make -C /opt/skyclass/src/pg_skyclass PG_CONFIG=/usr/lib/postgresql/17/bin/pg_config install
CMD ["postgres", "-c", "shared_preload_libraries=pg_cron", "-c", "cron.database_name=skyclass"]
