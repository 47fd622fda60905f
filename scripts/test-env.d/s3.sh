# shellcheck shell=bash
# An S3 server: Versity's S3 gateway (versitygw, Apache-2.0) with its posix backend on
# $TE_STATE/s3/data (a folder per bucket; metadata such as Content-Type in xattrs), on 127.0.0.1
# with fixed test credentials. Built once with `go install` into the cache. If that route fails,
# `rclone serve s3` (also built with `go install`) serves the same folder. Sourced by scripts/test-env.
#
#   FACEMATCH_TEST_S3_PORT    port (default 29000)
#   FACEMATCH_TEST_S3_SERVER  versitygw (default) or rclone: force a route

S3_VERSITYGW_MODULE="github.com/versity/versitygw/cmd/versitygw@v1.7.0"
S3_RCLONE_MODULE="github.com/rclone/rclone@v1.75.0"
S3_ACCESS_KEY="facematch-test"
S3_SECRET_KEY="facematch-test-secret"

s3_port() { echo "${FACEMATCH_TEST_S3_PORT:-29000}"; }
s3_pidfile() { echo "$TE_MODULE_STATE/server.pid"; }
s3_log() { echo "$TE_MODULE_STATE/server.log"; }

# Any HTTP answer counts (an anonymous request gets 403 AccessDenied).
s3_answers() {
  local code
  code="$(curl -s -o /dev/null -m 2 -w '%{http_code}' "http://127.0.0.1:$(s3_port)/")" || return 1
  [[ "$code" =~ ^[1-5][0-9][0-9]$ ]]
}

s3_status() { te_pid_alive "$(s3_pidfile)" && s3_answers; }

# Prints the command line of the server to start (installing it on first use).
s3_command() {
  local route="${FACEMATCH_TEST_S3_SERVER:-versitygw}" data="$TE_MODULE_STATE/data" port
  port="$(s3_port)"
  mkdir -p "$data"
  if [[ "$route" == versitygw ]]; then
    if [[ -x "$TE_CACHE/bin/versitygw" ]] || te_go_install "$S3_VERSITYGW_MODULE"; then
      # --quiet: no per-request log lines; errors still go to the log.
      printf '%s\0' "$TE_CACHE/bin/versitygw" --port "127.0.0.1:$port" --access "$S3_ACCESS_KEY" \
        --secret "$S3_SECRET_KEY" --region us-east-1 --quiet posix "$data"
      return 0
    fi
    te_log "the versitygw route failed (go install $S3_VERSITYGW_MODULE): falling back to rclone serve s3"
    route=rclone
  fi
  if [[ "$route" == rclone ]]; then
    [[ -x "$TE_CACHE/bin/rclone" ]] || te_go_install "$S3_RCLONE_MODULE" || te_fail "go install $S3_RCLONE_MODULE failed" || return 1
    printf '%s\0' "$TE_CACHE/bin/rclone" serve s3 --addr "127.0.0.1:$port" --auth-key "$S3_ACCESS_KEY,$S3_SECRET_KEY" \
      --config /dev/null "$data"
    return 0
  fi
  te_fail "FACEMATCH_TEST_S3_SERVER must be versitygw or rclone, not $route"
}

s3_up() {
  local pidfile log port cmd=()
  pidfile="$(s3_pidfile)"
  log="$(s3_log)"
  port="$(s3_port)"
  if te_pid_alive "$pidfile"; then
    te_wait 30 s3_answers || te_fail "the S3 server (pid $(<"$pidfile")) does not answer on 127.0.0.1:$port" "$log" || return 1
    te_log "already running on 127.0.0.1:$port (pid $(<"$pidfile")): reusing it"
    return 0
  fi
  if te_port_open 127.0.0.1 "$port"; then
    te_fail "127.0.0.1:$port is taken by another process; set FACEMATCH_TEST_S3_PORT" || return 1
  fi
  mapfile -d '' -t cmd < <(s3_command) || true
  [[ ${#cmd[@]} -gt 0 ]] || te_fail "no S3 server could be installed" || return 1
  te_log "starting $(basename "${cmd[0]}") on 127.0.0.1:$port ($TE_MODULE_STATE/data)"
  printf '\n==== %s: %s\n' "$(date -Is)" "$(basename "${cmd[0]}")" >>"$log"
  te_start "$pidfile" "$log" "${cmd[@]}"
  if ! te_wait 30 s3_answers; then
    te_pid_alive "$pidfile" || te_log "the server exited"
    te_stop "$pidfile" 5
    te_fail "the S3 server does not answer on 127.0.0.1:$port" "$log"
    return 1
  fi
  te_pid_alive "$pidfile" || te_fail "the S3 server exited right after it started (is 127.0.0.1:$port taken?)" "$log" || return 1
}

s3_down() {
  local pidfile
  pidfile="$(s3_pidfile)"
  if te_pid_alive "$pidfile"; then
    te_log "stopping the S3 server (pid $(<"$pidfile"))"
  fi
  te_stop "$pidfile" 10
}

s3_env() {
  echo "FACEMATCH_OBJECT_STORE=s3"
  echo "FACEMATCH_S3_ENDPOINT=http://127.0.0.1:$(s3_port)"
  echo "FACEMATCH_S3_ACCESS_KEY=$S3_ACCESS_KEY"
  echo "FACEMATCH_S3_SECRET_KEY=$S3_SECRET_KEY"
  echo "FACEMATCH_S3_REGION=us-east-1"
}
