# Stand-in for postgres:16-bookworm (deploy/compose/local-images.yml): Debian bookworm's
# PostgreSQL 15 with the official image's contract that docker-compose.yml relies on: data in
# /var/lib/postgresql/data, POSTGRES_USER/POSTGRES_DB/POSTGRES_PASSWORD applied on the first start
# (postgres-entrypoint.sh), password authentication over TCP, pg_isready for the health check.
ARG DEBIAN_IMAGE=evp-local/debian:bookworm
FROM ${DEBIAN_IMAGE}
# hadolint ignore=DL3008
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends postgresql-15 \
 && rm -rf /var/lib/apt/lists/* \
 && install -d -o postgres -g postgres -m 0700 /var/lib/postgresql/data \
 && install -d -o postgres -g postgres /var/run/postgresql
COPY postgres-entrypoint.sh /usr/local/bin/postgres-entrypoint.sh
RUN chmod 0755 /usr/local/bin/postgres-entrypoint.sh
ENV PATH=/usr/lib/postgresql/15/bin:$PATH \
    PGDATA=/var/lib/postgresql/data
VOLUME ["/var/lib/postgresql/data"]
# hadolint ignore=DL3066
USER postgres
EXPOSE 5432
ENTRYPOINT ["/usr/local/bin/postgres-entrypoint.sh"]
