#!/bin/sh
# The official postgres image's contract, for Debian's PostgreSQL: on an empty $PGDATA, initdb with
# POSTGRES_USER / POSTGRES_PASSWORD (scram-sha-256 for every remote client), create POSTGRES_DB, run
# /docker-entrypoint-initdb.d/*.sql and *.sh as that user; then the server in the foreground,
# listening on every address of the container.
set -eu
if [ "$(id -u)" = 0 ]; then
  mkdir -p "$PGDATA" && chown -R postgres:postgres "$PGDATA" && chmod 700 "$PGDATA"
  exec gosu postgres "$0" "$@"
fi
: "${POSTGRES_PASSWORD:?set POSTGRES_PASSWORD}"
user=${POSTGRES_USER:-postgres}
database=${POSTGRES_DB:-$user}
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  password_file=$(mktemp)
  printf '%s\n' "$POSTGRES_PASSWORD" > "$password_file"
  initdb --username="$user" --pwfile="$password_file" --auth-local=trust --auth-host=scram-sha-256 > /dev/null
  rm -f "$password_file"
  printf 'host all all all scram-sha-256\n' >> "$PGDATA/pg_hba.conf"
  pg_ctl -D "$PGDATA" -o "-c listen_addresses='' -c unix_socket_directories=/var/run/postgresql" -w start > /dev/null
  [ "$database" = postgres ] || psql -v ON_ERROR_STOP=1 --username="$user" --dbname=postgres -q \
    -c "CREATE DATABASE \"$database\""
  for script in /docker-entrypoint-initdb.d/*; do
    case "$script" in
      *.sql) psql -v ON_ERROR_STOP=1 --username="$user" --dbname="$database" -q -f "$script" ;;
      *.sh) . "$script" ;;
    esac
  done
  pg_ctl -D "$PGDATA" -m fast -w stop > /dev/null
  echo "docker-entrypoint.sh: PostgreSQL initialised in $PGDATA"
fi
if [ "${1:-}" = postgres ]; then
  shift
  exec postgres -c listen_addresses='*' -c unix_socket_directories=/var/run/postgresql "$@"
fi
exec "$@"
