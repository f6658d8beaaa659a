# PostgreSQL 17 with q3c, pgvector, pg_cron and the skyclass extension.
# Uses the same install script as the README set-up (.ci/install-system.sh);
# PostgreSQL's own apt repository, configured in the official image, has
# binary packages of q3c, pgvector and pg_cron for 17.
FROM postgres:17-bookworm
COPY .ci/install-system.sh /opt/skyclass/.ci/install-system.sh
RUN PG_MAJOR=17 bash /opt/skyclass/.ci/install-system.sh
COPY . /opt/skyclass
RUN if [ -f /opt/skyclass/src/pg_skyclass/Makefile ]; then \
        make -C /opt/skyclass/src/pg_skyclass PG_CONFIG=/usr/lib/postgresql/17/bin/pg_config install; \
    fi
CMD ["postgres", "-c", "shared_preload_libraries=pg_cron", "-c", "cron.database_name=skyclass"]
