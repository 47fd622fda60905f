# shellcheck shell=bash
# Jaeger v2 (all-in-one: OTLP receivers, in-memory trace store, query API), for the traces of the
# end-to-end run and the latency report. Sourced by scripts/test-env.
#
# Built once into the cache, outside the repo ($TE_CACHE/jaeger: Go module and build caches inside):
#   jaeger  github.com/jaegertracing/jaeger/cmd/jaeger at module tag v1.76.0, which is Jaeger v2.13.0
#           (the repository tags each release twice; the Go module carries the v1 tag; newer tags are not
#           on the Go proxy here), from a wrapper module (`go get -tool`, `go mod tidy`), the version
#           stamped by -ldflags. No UI assets (the API is all we use: the UI answers a placeholder page).
# Measured on the 2-core machine: a cold build (empty cache, module downloads included) took 1544 s
# while a CI run loaded the machine (load average 8-12; 15 min of CPU), expect 10-15 minutes on quiet
# cores; it leaves 1.7 GB of modules and 1.6 GB of build cache. A rebuild with those caches warm: 44-49 s.
# Then `up` answers in 0.4 s (health /status and /api/v3/services) and `down` takes 1.4-1.9 s.
#
# It runs with a configuration of ours ($TE_STATE/jaeger/config.yaml), never the binary's no-argument
# mode (which listens on every interface): every listener on 127.0.0.1, memory storage (bounded by
# max_traces), its own self-tracing and metrics off.
#
#   FACEMATCH_TEST_JAEGER_OTLP_GRPC_PORT   OTLP/gRPC receiver        (default 24317)
#   FACEMATCH_TEST_JAEGER_OTLP_HTTP_PORT   OTLP/HTTP receiver        (default 24318)
#   FACEMATCH_TEST_JAEGER_QUERY_PORT       query HTTP API and UI     (default 26686; /api/v3/traces)
#   FACEMATCH_TEST_JAEGER_QUERY_GRPC_PORT  query gRPC API            (default 26685)
#   FACEMATCH_TEST_JAEGER_HEALTH_PORT      health check (/status)    (default 23133)
#   FACEMATCH_TEST_JAEGER_MAX_TRACES       traces kept in memory     (default 100000; the oldest go first)
#
# Searching (GET /api/v3/traces): query.start_time_min and query.start_time_max (RFC 3339) are required,
# and on memory storage query.num_traces too (1..max_traces: the search depth, newest traces first);
# no match answers 404 {"error":{"message":"No traces found"}}. The answers are OTLP JSON, ids in hex.
#
# `env` prints FACEMATCH_TEST_JAEGER_* lines, never OTEL_*: a test that wants traces in this Jaeger
# sets the OTEL_* variables of the process it starts itself, so that no other test exports by accident.

JAEGER_MODULE_VERSION="v1.76.0"
JAEGER_VERSION="v2.13.0"

jaeger_otlp_grpc_port() { echo "${FACEMATCH_TEST_JAEGER_OTLP_GRPC_PORT:-24317}"; }
jaeger_otlp_http_port() { echo "${FACEMATCH_TEST_JAEGER_OTLP_HTTP_PORT:-24318}"; }
jaeger_query_port() { echo "${FACEMATCH_TEST_JAEGER_QUERY_PORT:-26686}"; }
jaeger_query_grpc_port() { echo "${FACEMATCH_TEST_JAEGER_QUERY_GRPC_PORT:-26685}"; }
jaeger_health_port() { echo "${FACEMATCH_TEST_JAEGER_HEALTH_PORT:-23133}"; }
jaeger_max_traces() { echo "${FACEMATCH_TEST_JAEGER_MAX_TRACES:-100000}"; }
jaeger_cache() { echo "$TE_CACHE/jaeger"; }
jaeger_bin() { echo "$(jaeger_cache)/bin/jaeger-$JAEGER_MODULE_VERSION"; }

# jaeger_go DIR ARGS...: te_go (scripts/test-env) with Go's caches under $TE_CACHE/jaeger/go.
jaeger_go() { te_go "$(jaeger_cache)/go" "$@"; }

# jaeger_install: build the binary once (a wrapper module in $TE_CACHE/jaeger/src).
jaeger_install() {
  local bin dir pkg="github.com/jaegertracing/jaeger" t0=$SECONDS
  bin="$(jaeger_bin)"
  [[ -x "$bin" ]] && return 0
  te_need_go || return 1
  dir="$(jaeger_cache)/src/jaeger"
  rm -rf "$dir" && mkdir -p "$dir" "$(dirname "$bin")"
  te_log "building jaeger $JAEGER_VERSION (module $JAEGER_MODULE_VERSION; first use; about 10-15 minutes on 2 cores)"
  jaeger_go "$dir" mod init facematch.test/jaeger || return 1
  jaeger_go "$dir" get -tool "$pkg/cmd/jaeger@$JAEGER_MODULE_VERSION" || return 1
  jaeger_go "$dir" mod tidy || return 1
  jaeger_go "$dir" build -trimpath -o "$bin.tmp" \
    -ldflags "-X $pkg/internal/version.latestVersion=$JAEGER_VERSION" \
    "$pkg/cmd/jaeger" || return 1
  mv "$bin.tmp" "$bin"
  te_log "built jaeger in $((SECONDS - t0))s"
}

jaeger_config() { echo "$TE_MODULE_STATE/config.yaml"; }

# jaeger_write_config: the collector configuration, every listener on loopback.
jaeger_write_config() {
  cat >"$(jaeger_config).tmp" <<CONFIG
# Written by scripts/test-env (jaeger module); rewritten at every start.
service:
  extensions: [jaeger_storage, jaeger_query, healthcheckv2]
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [jaeger_storage_exporter]
  telemetry:
    resource:
      service.name: jaeger
    logs:
      level: info
    # No metrics endpoint of its own (the collector's default would listen on 8888).
    metrics:
      level: none
extensions:
  healthcheckv2:
    use_v2: true
    http:
      endpoint: 127.0.0.1:$(jaeger_health_port)
  jaeger_query:
    storage:
      traces: traces
    # Jaeger's own spans (of the query API) would go to an exporter this configuration does not have.
    enable_tracing: false
    http:
      endpoint: 127.0.0.1:$(jaeger_query_port)
    grpc:
      endpoint: 127.0.0.1:$(jaeger_query_grpc_port)
  jaeger_storage:
    backends:
      traces:
        memory:
          max_traces: $(jaeger_max_traces)
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:$(jaeger_otlp_grpc_port)
      http:
        endpoint: 127.0.0.1:$(jaeger_otlp_http_port)
processors:
  batch: {}
exporters:
  jaeger_storage_exporter:
    trace_storage: traces
CONFIG
  mv "$(jaeger_config).tmp" "$(jaeger_config)"
}

# The healthcheck v2 extension answers 200 on /status once every component has started.
jaeger_healthy() {
  [[ "$(curl -s -m 2 -o /dev/null -w '%{http_code}' "http://127.0.0.1:$(jaeger_health_port)/status")" == 200 ]] &&
    [[ "$(curl -s -m 2 -o /dev/null -w '%{http_code}' "http://127.0.0.1:$(jaeger_query_port)/api/v3/services")" == 200 ]]
}

jaeger_status() {
  te_pid_alive "$TE_MODULE_STATE/jaeger.pid" && jaeger_healthy
}

jaeger_up() {
  local pidfile="$TE_MODULE_STATE/jaeger.pid" log="$TE_MODULE_STATE/jaeger.log" port t0=$SECONDS
  jaeger_install || te_fail "could not build jaeger (see above)" || return 1
  if te_pid_alive "$pidfile"; then
    te_wait 30 jaeger_healthy || te_fail "jaeger (pid $(<"$pidfile")) does not answer on 127.0.0.1:$(jaeger_health_port)" "$log" || return 1
    te_log "already running (pid $(<"$pidfile")): reusing it"
    return 0
  fi
  for port in "$(jaeger_otlp_grpc_port)" "$(jaeger_otlp_http_port)" "$(jaeger_query_port)" \
    "$(jaeger_query_grpc_port)" "$(jaeger_health_port)"; do
    te_port_open 127.0.0.1 "$port" && { te_fail "127.0.0.1:$port is taken by another process; set the FACEMATCH_TEST_JAEGER_*_PORT variables"; return 1; }
  done
  jaeger_write_config
  te_log "starting jaeger $JAEGER_VERSION (OTLP gRPC 127.0.0.1:$(jaeger_otlp_grpc_port), OTLP HTTP 127.0.0.1:$(jaeger_otlp_http_port), query http://127.0.0.1:$(jaeger_query_port))"
  printf '\n==== %s: jaeger\n' "$(date -Is)" >>"$log"
  te_start "$pidfile" "$log" "$(jaeger_bin)" --config "$(jaeger_config)"
  if ! te_wait 60 jaeger_healthy; then
    te_pid_alive "$pidfile" || te_log "jaeger exited"
    te_stop "$pidfile" 10
    te_fail "jaeger does not answer on 127.0.0.1:$(jaeger_health_port)" "$log"
    return 1
  fi
  te_log "jaeger up in $((SECONDS - t0))s (log $log)"
}

jaeger_down() {
  if te_pid_alive "$TE_MODULE_STATE/jaeger.pid"; then
    te_log "stopping jaeger (pid $(<"$TE_MODULE_STATE/jaeger.pid"))"
  fi
  te_stop "$TE_MODULE_STATE/jaeger.pid" 15
}

jaeger_env() {
  echo "FACEMATCH_TEST_JAEGER_OTLP_HTTP=http://127.0.0.1:$(jaeger_otlp_http_port)"
  echo "FACEMATCH_TEST_JAEGER_OTLP_GRPC=http://127.0.0.1:$(jaeger_otlp_grpc_port)"
  echo "FACEMATCH_TEST_JAEGER_QUERY=http://127.0.0.1:$(jaeger_query_port)"
}
