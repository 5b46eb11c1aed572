#!/usr/bin/env bash
# PostgreSQL for `make server`, from Debian's postgresql package: a cluster in PG_DATA with a
# `prefect` database, listening on 127.0.0.1:PG_PORT only (trust for local connections, so
# that only this machine's Prefect server reaches it). Prints the database URL for
# PREFECT_SERVER_DATABASE_CONNECTION_URL. `postgres.sh stop` stops the cluster.
set -euo pipefail
data=${PG_DATA:?PG_DATA names the cluster folder}
port=${PG_PORT:-5432}
bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
[ -n "$bin" ] || { echo "postgres.sh: Debian's postgresql is not installed (make postgres installs it)" >&2; exit 2; }
# PostgreSQL refuses to run as root: root runs it as the package's `postgres` user.
as_owner() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

if [ "${1:-start}" = stop ]; then
  as_owner "$bin/pg_ctl" -D "$data" -m fast -w stop >/dev/null
  exit 0
fi
if [ ! -f "$data/PG_VERSION" ]; then
  mkdir -p "$data"
  [ "$(id -u)" = 0 ] && chown postgres: "$data"
  as_owner "$bin/initdb" -D "$data" -U prefect --auth=trust >/dev/null
fi
as_owner "$bin/pg_ctl" -D "$data" status >/dev/null 2>&1 \
  || as_owner "$bin/pg_ctl" -D "$data" -l "$data/server.log" -w \
    -o "-p $port -k $data -c listen_addresses=127.0.0.1" start >/dev/null
as_owner "$bin/psql" -h 127.0.0.1 -p "$port" -U prefect -d postgres -tAc \
  "SELECT 1 FROM pg_database WHERE datname = 'prefect'" | grep -q 1 \
  || as_owner "$bin/createdb" -h 127.0.0.1 -p "$port" -U prefect prefect
echo "postgresql+asyncpg://prefect@127.0.0.1:$port/prefect"
