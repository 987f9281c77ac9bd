#!/bin/sh
# First start (empty $PGDATA): initdb, then POSTGRES_USER with POSTGRES_PASSWORD (scram) and
# POSTGRES_DB owned by it, as the official postgres image does; every start: postgres in the
# foreground listening on all interfaces, TCP clients authenticated by password. SIGTERM = smart
# shutdown (compose's stop_grace_period).
set -eu
: "${POSTGRES_PASSWORD:?set POSTGRES_PASSWORD}"
user=${POSTGRES_USER:-postgres}
db=${POSTGRES_DB:-$user}
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  pwfile=$(mktemp)
  printf '%s\n' "$POSTGRES_PASSWORD" >"$pwfile"
  # UTF8 as the official image (its LANG is en_US.utf8): the minimal base has no locale, and initdb
  # would pick SQL_ASCII, in which psycopg returns text columns as bytes (the console's history
  # page failed on it in the compose tier)
  initdb --username="$user" --pwfile="$pwfile" --auth-local=trust --auth-host=scram-sha-256 \
    --encoding=UTF8 --no-locale -D "$PGDATA" >/dev/null
  rm -f "$pwfile"
  echo "host all all 0.0.0.0/0 scram-sha-256" >>"$PGDATA/pg_hba.conf"
  echo "host all all ::/0 scram-sha-256" >>"$PGDATA/pg_hba.conf"
  if [ "$db" != postgres ]; then
    pg_ctl -D "$PGDATA" -o "-c listen_addresses=''" -w start >/dev/null
    createdb --username="$user" --owner="$user" "$db"
    pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null
  fi
  echo "postgres-entrypoint: initialised $PGDATA (user $user, database $db)"
fi
exec postgres -D "$PGDATA" -c listen_addresses='*'
