#!/usr/bin/env bash
# Builds the real control plane from the Go module proxy and caches it outside the repository.
#
# kube-apiserver, kube-controller-manager, kube-scheduler and kubectl (Kubernetes $K8S_VERSION),
# etcd ($ETCD_VERSION) and kwok/kwokctl ($KWOK_VERSION). Every binary lands in
# $INFERTUNE_CACHE/bin-<versions>/ ; a second run finds them there and does nothing.
# Nothing is downloaded from anywhere but the Go module proxy.
set -euo pipefail

K8S_VERSION=${K8S_VERSION:-v1.36.1}          # kwok v0.8.0's default KubeVersion is 1.36.1
ETCD_VERSION=${ETCD_VERSION:-v3.5.21}        # >= 3.5.17: older etcd breaks watch progress requests
KWOK_VERSION=${KWOK_VERSION:-v0.8.0}         # the last kwok tag whose go.mod accepts Go 1.26
CACHE=${INFERTUNE_CACHE:-$HOME/.cache/infertune}
BIN="$CACHE/bin-k8s-${K8S_VERSION}-etcd-${ETCD_VERSION}-kwok-${KWOK_VERSION}"
SRC="$CACHE/src"

export GOTOOLCHAIN=local CGO_ENABLED=0 GOWORK=off GOFLAGS=-mod=mod
# Go's own caches live under $CACHE too, so CI can keep one directory between runs.
export GOMODCACHE=${GOMODCACHE_OVERRIDE:-$CACHE/gomod} GOCACHE=${GOCACHE_OVERRIDE:-$CACHE/gobuild}

want=(kube-apiserver kube-controller-manager kube-scheduler kubectl etcd kwok kwokctl)
missing=0
for b in "${want[@]}"; do [ -x "$BIN/$b" ] || missing=1; done
if [ "$missing" = 0 ]; then
  echo "$BIN"
  exit 0
fi
log() { echo "[build-binaries] $*" >&2; }
command -v go >/dev/null || { log "go not found on PATH: Go >= 1.26 is needed to build the control plane"; exit 1; }
# kwok v0.8.0's go.mod says `go 1.26.0` and GOTOOLCHAIN=local forbids fetching a newer toolchain.
go_minor=$(go env GOVERSION | sed -E 's/^go1\.([0-9]+).*/\1/')
[ "$go_minor" -ge 26 ] 2>/dev/null || { log "Go $(go env GOVERSION) is too old: Go >= 1.26 is needed"; exit 1; }
mkdir -p "$BIN" "$SRC"
start=$(date +%s)

# --- Kubernetes: a wrapper module that replaces every staging module with its v0.x release ----
k8s_minor=$(echo "$K8S_VERSION" | cut -d. -f2)
staging_version="v0.${K8S_VERSION#v1.}"
wrap="$SRC/k8s-$K8S_VERSION"
if [ ! -x "$BIN/kube-apiserver" ] || [ ! -x "$BIN/kubectl" ] || [ ! -x "$BIN/kube-scheduler" ] || [ ! -x "$BIN/kube-controller-manager" ]; then
  rm -rf "$wrap" && mkdir -p "$wrap" && cd "$wrap"
  log "reading k8s.io/kubernetes@$K8S_VERSION go.mod from the module proxy"
  gomod=$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')
  # The staging set changes between releases (1.36 added streaming and cri-streaming), so it is
  # read from the tag's own replace block rather than kept by hand.
  mapfile -t staging < <(grep -oE '^\s*(replace\s+)?k8s\.io/[a-z0-9-]+ => \./staging/src/k8s\.io/[a-z0-9-]+' "$gomod" | awk '{print $(NF-2)}' | sed 's/^replace//' | sort -u)
  [ "${#staging[@]}" -gt 20 ] || { log "found only ${#staging[@]} staging modules in $gomod"; exit 1; }
  godebug=$(grep -E '^godebug ' "$gomod" || true)
  {
    echo "module local/k8sbins"
    echo
    echo "go $(go env GOVERSION | sed 's/^go//' | cut -d. -f1,2)"
    [ -n "$godebug" ] && echo "$godebug"
    echo
    echo "require k8s.io/kubernetes $K8S_VERSION"
    echo
    echo "replace ("
    for m in "${staging[@]}"; do echo "	$m => $m $staging_version"; done
    echo ")"
  } > go.mod
  log "wrapper module replaces ${#staging[@]} staging modules with $staging_version"
  go get "k8s.io/kubernetes/cmd/kube-apiserver@$K8S_VERSION" "k8s.io/kubernetes/cmd/kube-controller-manager@$K8S_VERSION" \
         "k8s.io/kubernetes/cmd/kube-scheduler@$K8S_VERSION" "k8s.io/kubernetes/cmd/kubectl@$K8S_VERSION" >&2
  # kwokctl parses `--version`, so the binaries must report the real version, not v0.0.0-master.
  ldf="-s -w -X k8s.io/component-base/version.gitVersion=$K8S_VERSION -X k8s.io/component-base/version.gitMajor=1"
  ldf="$ldf -X k8s.io/component-base/version.gitMinor=$k8s_minor -X k8s.io/component-base/version.gitTreeState=clean"
  ldf="$ldf -X k8s.io/client-go/pkg/version.gitVersion=$K8S_VERSION -X k8s.io/client-go/pkg/version.gitMajor=1"
  ldf="$ldf -X k8s.io/client-go/pkg/version.gitMinor=$k8s_minor"
  for c in kube-apiserver kube-controller-manager kube-scheduler kubectl; do
    log "building $c"
    go build -trimpath -ldflags "$ldf" -o "$BIN/$c.tmp" "k8s.io/kubernetes/cmd/$c" && mv "$BIN/$c.tmp" "$BIN/$c"
  done
fi

# --- etcd: a three-line wrapper, because etcd's server module has replace directives ------------
if [ ! -x "$BIN/etcd" ]; then
  ew="$SRC/etcd-$ETCD_VERSION"
  rm -rf "$ew" && mkdir -p "$ew" && cd "$ew"
  cat > main.go <<'GO'
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
GO
  go mod init local/etcd >&2
  go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION" >&2
  log "building etcd $ETCD_VERSION"
  go build -trimpath -ldflags "-s -w" -o "$BIN/etcd.tmp" . && mv "$BIN/etcd.tmp" "$BIN/etcd"
fi

# --- kwok and kwokctl: plain `go install` (no replace directives at this tag) ------------------
if [ ! -x "$BIN/kwok" ] || [ ! -x "$BIN/kwokctl" ]; then
  log "building kwok and kwokctl $KWOK_VERSION"
  GOBIN="$BIN" go install -trimpath -ldflags "-s -w" "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION" "sigs.k8s.io/kwok/cmd/kwokctl@$KWOK_VERSION"
fi

"$BIN/kube-apiserver" --version >&2
"$BIN/etcd" --version | head -1 >&2
log "done in $(( $(date +%s) - start )) s; cache $(du -sh "$CACHE" | cut -f1)"
echo "$BIN"
