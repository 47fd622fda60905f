# shellcheck shell=bash
# PostgreSQL 15: a throwaway cluster (initdb) in $TE_STATE/postgres/data, listening on 127.0.0.1 only,
# trust authentication (loopback only), database `facematch`. Sourced by scripts/test-env.
#
#   FACEMATCH_TEST_PG_PORT  port (default 25432)
#   FACEMATCH_TEST_PG_BIN   PostgreSQL's bin folder (default /usr/lib/postgresql/15/bin; installed
#                           with `apt-get install -y postgresql-15` when missing)
#
# PostgreSQL refuses to run as root: as root, the cluster belongs to the `postgres` system user
# (created if missing) and every server command runs through `runuser -u postgres`.

postgres_port() { echo "${FACEMATCH_TEST_PG_PORT:-25432}"; }
postgres_bin() { echo "${FACEMATCH_TEST_PG_BIN:-/usr/lib/postgresql/15/bin}"; }
postgres_data() { echo "$TE_MODULE_STATE/data"; }
postgres_log() { echo "$TE_MODULE_STATE/postgres.log"; }

# Runs a command as the cluster's owner.
postgres_as_owner() {
  if [[ "$(id -u)" == 0 ]]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

postgres_install() {
  local bin
  bin="$(postgres_bin)"
  [[ -x "$bin/postgres" && -x "$bin/initdb" && -x "$bin/pg_ctl" ]] && return 0
  [[ "$(id -u)" == 0 ]] || te_fail "no PostgreSQL 15 in $bin, and not root to apt-get install postgresql-15" || return 1
  te_log "installing postgresql-15 (apt)"
  # The server package's postinst would create and start a cluster of its own: not wanted here.
  { DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends postgresql-15 ||
    { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends postgresql-15; }; } >&2 ||
    te_fail "apt-get install postgresql-15 failed" || return 1
  # A cluster created by the package listens on 5432; ours is separate. Leave it alone.
  [[ -x "$bin/postgres" ]] || te_fail "postgresql-15 installed, but $bin/postgres is missing" || return 1
}

postgres_owner() {
  [[ "$(id -u)" == 0 ]] || return 0
  id -u postgres >/dev/null 2>&1 && return 0
  te_log "creating the system user postgres"
  useradd --system --user-group --home-dir /nonexistent --no-create-home --shell /usr/sbin/nologin postgres
}

postgres_answers() {
  "$(postgres_bin)/pg_isready" -q -h 127.0.0.1 -p "$(postgres_port)" -d postgres -U postgres -t 2
}

postgres_status() { postgres_answers; }

postgres_up() {
  local bin data log port
  bin="$(postgres_bin)"
  data="$(postgres_data)"
  log="$(postgres_log)"
  port="$(postgres_port)"
  postgres_install
  postgres_owner
  touch "$log"
  [[ "$(id -u)" != 0 ]] || chown postgres: "$TE_MODULE_STATE" "$log"
  chmod 700 "$TE_MODULE_STATE"

  if [[ ! -s "$data/PG_VERSION" ]]; then
    te_log "initdb $data"
    rm -rf "$data"
    postgres_as_owner "$bin/initdb" -D "$data" -U postgres --auth=trust --encoding=UTF8 --locale=C.UTF-8 \
      >>"$log" 2>&1 || postgres_as_owner "$bin/initdb" -D "$data" -U postgres --auth=trust --encoding=UTF8 --no-locale \
      >>"$log" 2>&1 || te_fail "initdb failed" "$log" || return 1
    # Loopback only, trust: a throwaway cluster for tests. Durability is not wanted (speed is).
    cat >>"$data/postgresql.conf" <<EOF

# scripts/test-env.d/postgres.sh
listen_addresses = '127.0.0.1'
unix_socket_directories = '$TE_MODULE_STATE'
fsync = off
synchronous_commit = off
full_page_writes = off
max_connections = 200
EOF
  fi

  if postgres_as_owner "$bin/pg_ctl" status -D "$data" >/dev/null 2>&1; then
    if te_wait 30 postgres_answers; then
      te_log "already running on 127.0.0.1:$port: reusing it"
    else
      te_fail "a server runs on $data but does not answer on 127.0.0.1:$port (another port? stop it with: scripts/test-env down postgres)" "$log" || return 1
    fi
  else
    if te_port_open 127.0.0.1 "$port"; then
      te_fail "127.0.0.1:$port is taken by another process; set FACEMATCH_TEST_PG_PORT" || return 1
    fi
    te_log "starting PostgreSQL on 127.0.0.1:$port"
    # -p on the command line: the port can change between runs without touching the cluster.
    postgres_as_owner "$bin/pg_ctl" start -D "$data" -l "$log" -w -t 60 -o "-p $port" >/dev/null ||
      te_fail "pg_ctl start failed" "$log" || return 1
    te_wait 30 postgres_answers || te_fail "PostgreSQL does not answer on 127.0.0.1:$port" "$log" || return 1
  fi

  local psql=("$bin/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$port" -U postgres -d postgres -tA)
  if [[ "$("${psql[@]}" -c "SELECT 1 FROM pg_database WHERE datname = 'facematch'")" != 1 ]]; then
    "${psql[@]}" -c 'CREATE DATABASE facematch' >&2 || te_fail "CREATE DATABASE facematch failed" "$log" || return 1
  fi
}

postgres_down() {
  local bin data
  bin="$(postgres_bin)"
  data="$(postgres_data)"
  [[ -s "$data/PG_VERSION" && -x "$bin/pg_ctl" ]] || return 0
  if postgres_as_owner "$bin/pg_ctl" status -D "$data" >/dev/null 2>&1; then
    te_log "stopping PostgreSQL ($data)"
    postgres_as_owner "$bin/pg_ctl" stop -D "$data" -m fast -w -t 60 >/dev/null ||
      te_fail "pg_ctl stop failed" "$(postgres_log)" || return 1
  fi
}

postgres_env() {
  echo "FACEMATCH_MATCH_STORE=postgres"
  echo "FACEMATCH_POSTGRES_URL=postgres://postgres@127.0.0.1:$(postgres_port)/facematch"
}
