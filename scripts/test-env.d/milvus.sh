# shellcheck shell=bash
# Milvus 2.3 standalone for the integration tests, sourced by scripts/test-env.
#
#   milvus_up     installs (first time) and starts Milvus, idempotently; returns when the proxy answers
#   milvus_down   stops it (the data stays in the state directory: a later milvus_up finds it again)
#   milvus_env    prints the KEY=value lines that point the service at it
#
# Logs go to stderr; stdout carries only milvus_env's lines.
#
# The server is the real Milvus standalone binary (proxy, coordinators, query/data/index nodes, an
# embedded etcd and rocksmq in one process) as PyPI's `milvus` package ships it ("Milvus Lite" of the
# 2.3 line). The newest release of that package is 2.3.5 (there is no 2.3.9 on PyPI), so that is the
# version installed. Its binaries are unpacked once into the cache directory.
#
# Time tick: Milvus's proxy.timeTickInterval, FACEMATCH_TEST_ENV_MILVUS_TIME_TICK_MS (default 50), as
# the chart's milvus.timeTickIntervalMs: every Strong read (and every delete by photo or by user) waits
# for the query node's clock, which moves in these ticks (Milvus's own default is 200;
# `npm run bench:milvus-tick` measures both sides). It takes effect at a start: an already running
# Milvus keeps the interval it was started with.
#
# Ports: the proxy (gRPC and REST) on 19531, so as not to collide with a Milvus on the default 19530;
# the embedded etcd on 2379 and 2380 (no other etcd may use them); the internal ports (53100, 19529,
# 19532, 21121-21124, 13333, 9091 ...) move up to the next free one if taken.

MILVUS_PIP_VERSION=2.3.5
MILVUS_PORT="${FACEMATCH_TEST_ENV_MILVUS_PORT:-19531}"
MILVUS_ETCD_PORTS=(2379 2380)
MILVUS_TIME_TICK_MS="${FACEMATCH_TEST_ENV_MILVUS_TIME_TICK_MS:-50}"
# A first start unpacks ~450 MB of binaries; a start answers gRPC after 10-40 s on 2 cores (longer
# as the data folder accumulates collections to recover: `scripts/test-env clean` resets it).
MILVUS_START_TIMEOUT_S=240
# Milvus usually stops in a few seconds on SIGTERM, but can hang while it is still recovering;
# then it is killed, which it is built to survive (its log and metadata are replayed on start).
MILVUS_STOP_TIMEOUT_S=20

_milvus_log() { printf 'milvus: %s\n' "$*" >&2; }
_milvus_cache() { printf '%s\n' "${FACEMATCH_TEST_ENV_CACHE:-${HOME:-/root}/.cache/facematch-test-env}"; }
_milvus_state() { printf '%s\n' "${FACEMATCH_TEST_ENV_STATE:-/tmp/facematch-test-env}"; }
_milvus_venv() { printf '%s/milvus-%s/venv\n' "$(_milvus_cache)" "$MILVUS_PIP_VERSION"; }
_milvus_bin_cache() { printf '%s/milvus-%s/bin\n' "$(_milvus_cache)" "$MILVUS_PIP_VERSION"; }
_milvus_data() { printf '%s/milvus\n' "$(_milvus_state)"; }
_milvus_pidfile() { printf '%s/milvus.pid\n' "$(_milvus_state)"; }
_milvus_logfile() { printf '%s/milvus.log\n' "$(_milvus_state)"; }

_milvus_pid() {
  local pidfile pid
  pidfile="$(_milvus_pidfile)"
  [[ -f "$pidfile" ]] || return 1
  pid="$(<"$pidfile")"
  # The launcher, or its process group (Milvus may outlive it).
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  { kill -0 "$pid" || kill -0 -- "-$pid"; } 2>/dev/null && printf '%s\n' "$pid"
}

# The proxy answers when its gRPC API reports itself healthy: a CheckHealth call (an empty request
# in gRPC's 5-byte framing, over HTTP/2 without TLS) whose reply ends with isHealthy=true (field 2,
# bytes 10 01). Neither /healthz nor the REST API on the same port will do: after a restart both
# answer while gRPC calls still hang for ~25 s, as Milvus recovers its metadata.
_milvus_answers() {
  local body headers hex
  body="$(mktemp)"
  if ! headers="$(printf '\0\0\0\0\0' | curl -sS -m 3 --noproxy '*' --http2-prior-knowledge \
    -H 'content-type: application/grpc' -H 'te: trailers' --data-binary @- -D - -o "$body" \
    "http://127.0.0.1:${MILVUS_PORT}/milvus.proto.milvus.MilvusService/CheckHealth" 2>/dev/null)"; then
    rm -f "$body"
    return 1
  fi
  hex="$(od -An -tx1 "$body" | tr -d ' \n')"
  rm -f "$body"
  grep -qi '^grpc-status: 0' <<<"$headers" && [[ "$hex" == *1001 ]]
}

# Whether something listens on a loopback TCP port.
_milvus_port_busy() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

_milvus_install() {
  local venv
  venv="$(_milvus_venv)"
  if [[ -x "$venv/bin/python" ]] && "$venv/bin/python" -c 'import milvus, sys; sys.exit(milvus.__version__ != sys.argv[1])' "$MILVUS_PIP_VERSION" 2>/dev/null; then
    return 0
  fi
  local started=$SECONDS
  _milvus_log "installing milvus==$MILVUS_PIP_VERSION into $venv"
  rm -rf "$venv"
  mkdir -p "$(dirname "$venv")"
  if ! python3 -m venv "$venv" >&2; then
    _milvus_log "python3 -m venv failed (Debian: apt-get install python3-venv)"
    return 1
  fi
  if ! nice -n 19 "$venv/bin/pip" install --disable-pip-version-check -q "milvus==$MILVUS_PIP_VERSION" >&2; then
    _milvus_log "pip install milvus==$MILVUS_PIP_VERSION failed"
    rm -rf "$venv"
    return 1
  fi
  _milvus_log "installed in $((SECONDS - started)) s"
}

# Runs the server through the package's own launcher (which writes milvus.yaml and starts
# `milvus run standalone`), with two changes: the proxy and etcd ports are pinned (the stock launcher
# silently moves any busy port to the next free one, so a client would not find the proxy), and ports
# are probed with SO_REUSEADDR, as Go listens, so that a restart is not pushed off its ports by
# connections of the previous run still in TIME_WAIT. SIGTERM stops Milvus gracefully (then SIGKILL).
# shellcheck disable=SC2016
_MILVUS_LAUNCHER='
import os, signal, socket, subprocess, sys, time, urllib.request
import milvus

# A process group of its own (it is one already when started by a shell with job control), which
# milvus_down signals as a whole: the launcher and Milvus.
try:
    os.setsid()
except OSError:
    pass
# Outlives the terminal that started it (Milvus inherits the ignored SIGHUP).
signal.signal(signal.SIGHUP, signal.SIG_IGN)

data_dir, proxy_port, etcd_port, ready_file, stop_timeout = sys.argv[1:6]

def try_bind_port(self, port):
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(("127.0.0.1", port))
        sock.listen()
        return sock
    except OSError:
        sock.close()
        return None

milvus.MilvusServerConfig.try_bind_port = try_bind_port
config = milvus.MilvusServerConfig(data_dir=data_dir, proxy_port=int(proxy_port), etcd_port=int(etcd_port))
server = milvus.MilvusServer(config, wait_for_started=False)
server.set_base_dir(data_dir)

class Stop(Exception):
    pass

def on_signal(*_):
    raise Stop()

# A signal interrupts whatever the launcher waits for (the start, or Milvus running); the
# finally clause then stops Milvus: SIGTERM, and SIGKILL if it is still there after the timeout.
signal.signal(signal.SIGTERM, on_signal)
signal.signal(signal.SIGINT, on_signal)
code = 1
try:
    server.start()
    # The stock wait polls /healthz for 180 s even after Milvus has died: poll here, watching it.
    health = f"http://127.0.0.1:{server.webservice_port}/healthz"
    direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    while server.server_proc.poll() is None:
        try:
            with direct.open(health, timeout=2) as response:
                if b"OK" in response.read():
                    break
        except OSError:
            pass
        time.sleep(0.3)
    else:
        raise RuntimeError(f"milvus exited with {server.server_proc.returncode} during start")
    print(f"milvus ready: pid {server.server_proc.pid}, proxy 127.0.0.1:{proxy_port}, health http://127.0.0.1:{server.webservice_port}/healthz", flush=True)
    open(ready_file, "w").write(str(server.server_proc.pid))
    code = server.server_proc.wait()
    print(f"milvus exited with {code}", flush=True)
except Stop:
    code = 0
finally:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    proc = server.server_proc
    if proc is not None and proc.poll() is None:
        started = time.monotonic()
        proc.terminate()
        try:
            proc.wait(timeout=float(stop_timeout))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        print(f"milvus stopped in {time.monotonic() - started:.1f} s", flush=True)
sys.exit(1 if code else 0)
'

milvus_up() {
  local data pid
  data="$(_milvus_data)"
  if pid="$(_milvus_pid)"; then
    if _milvus_answers; then
      _milvus_log "already running (pid $pid) on 127.0.0.1:$MILVUS_PORT"
      return 0
    fi
    _milvus_log "pid $pid is starting; waiting for it"
  else
    _milvus_install || return 1
    if _milvus_port_busy "$MILVUS_PORT"; then
      _milvus_log "port $MILVUS_PORT is taken by another process (not ours: no live pid in $(_milvus_pidfile))"
      return 1
    fi
    local port
    for port in "${MILVUS_ETCD_PORTS[@]}"; do
      if _milvus_port_busy "$port"; then
        _milvus_log "port $port is taken: Milvus's embedded etcd needs 2379 and 2380; stop the other etcd"
        return 1
      fi
    done
    mkdir -p "$data"
    # (9>&- below: scripts/test-env holds its per-module lock on fd 9; a server inheriting it would
    # keep the lock, and the next `test-env down` would wait for it.)
    # The launcher unpacks the binaries into <data>/bin unless they are there already (it keeps a
    # checksum beside each): pointing <data>/bin at the cache unpacks them once per machine.
    local bin
    bin="$(_milvus_bin_cache)"
    mkdir -p "$bin"
    [[ -e "$data/bin" ]] || ln -s "$bin" "$data/bin"
    rm -f "$data/.ready"
    if ! [[ "$MILVUS_TIME_TICK_MS" =~ ^[1-9][0-9]*$ ]]; then
      _milvus_log "FACEMATCH_TEST_ENV_MILVUS_TIME_TICK_MS must be a positive integer (ms), got '$MILVUS_TIME_TICK_MS'"
      return 1
    fi
    _milvus_log "starting Milvus $MILVUS_PIP_VERSION on 127.0.0.1:$MILVUS_PORT, time tick $MILVUS_TIME_TICK_MS ms (data $data, log $(_milvus_logfile))"
    # Milvus reads any configuration key from the environment (proxy.timeTickInterval: PROXY_TIMETICKINTERVAL).
    PROXY_TIMETICKINTERVAL="$MILVUS_TIME_TICK_MS" "$(_milvus_venv)/bin/python" -c "$_MILVUS_LAUNCHER" "$data" "$MILVUS_PORT" "${MILVUS_ETCD_PORTS[0]}" \
      "$data/.ready" "$MILVUS_STOP_TIMEOUT_S" </dev/null >>"$(_milvus_logfile)" 2>&1 9>&- &
    pid=$!
    printf '%s\n' "$pid" >"$(_milvus_pidfile)"
  fi
  local started=$SECONDS
  while ((SECONDS - started < MILVUS_START_TIMEOUT_S)); do
    if ! kill -0 "$pid" 2>/dev/null; then
      _milvus_log "Milvus exited during start; last lines of its logs:"
      tail -n 20 "$(_milvus_logfile)" "$data/logs/milvus-stderr.log" >&2 2>/dev/null || true
      rm -f "$(_milvus_pidfile)"
      return 1
    fi
    if [[ -f "$data/.ready" ]] && _milvus_answers; then
      _milvus_log "ready in $((SECONDS - started)) s (pid $pid)"
      return 0
    fi
    sleep 0.5
  done
  _milvus_log "not ready after ${MILVUS_START_TIMEOUT_S} s; see $(_milvus_logfile) and $data/logs"
  return 1
}

milvus_down() {
  local pid
  if ! pid="$(_milvus_pid)"; then
    rm -f "$(_milvus_pidfile)"
    _milvus_log "not running"
    return 0
  fi
  _milvus_log "stopping (pid $pid)"
  # The launcher stops Milvus on SIGTERM; the group signal reaches both, whatever state they are in.
  kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
  local started=$SECONDS
  while { kill -0 "$pid" || kill -0 -- "-$pid"; } 2>/dev/null; do
    if ((SECONDS - started >= MILVUS_STOP_TIMEOUT_S)); then
      _milvus_log "still running after ${MILVUS_STOP_TIMEOUT_S} s: SIGKILL"
      kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
      sleep 1
      break
    fi
    sleep 0.2
  done
  rm -f "$(_milvus_pidfile)" "$(_milvus_data)/.ready"
  _milvus_log "stopped in $((SECONDS - started)) s"
}

# For `scripts/test-env status`: 0 when the proxy answers.
milvus_status() {
  _milvus_answers
}

milvus_env() {
  printf 'FACEMATCH_VECTOR_STORE=milvus\n'
  printf 'FACEMATCH_MILVUS_ADDRESS=127.0.0.1:%s\n' "$MILVUS_PORT"
}
