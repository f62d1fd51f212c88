#!/usr/bin/env bash
# Builds the real control plane from the Go module proxy and caches it outside the repository.
#
# kube-apiserver, kube-controller-manager, kube-scheduler and kubectl (Kubernetes $K8S_VERSION),
# etcd ($ETCD_VERSION) and kwok/kwokctl ($KWOK_VERSION). Every binary lands in
# $INFERTUNE_CACHE/bin-<versions>/ ; a second run finds them there and does nothing.
# Nothing is downloaded from anywhere but the Go module proxy.
#
# Progress: one line per component on stderr, with the time so far and an estimate of what is left. The Go
# tool's own output (module downloads, compiler messages) goes to $CACHE/build.log; a failed step prints its
# tail and the log's path. The last line on stdout is the bin directory (e2e/cluster.py reads it).
set -euo pipefail

K8S_VERSION=${K8S_VERSION:-v1.36.1}          # kwok v0.8.0's default KubeVersion is 1.36.1
ETCD_VERSION=${ETCD_VERSION:-v3.5.21}        # >= 3.5.17: older etcd breaks watch progress requests
KWOK_VERSION=${KWOK_VERSION:-v0.8.0}         # the last kwok tag whose go.mod accepts Go 1.26
CACHE=${INFERTUNE_CACHE:-$HOME/.cache/infertune}
BIN="$CACHE/bin-k8s-${K8S_VERSION}-etcd-${ETCD_VERSION}-kwok-${KWOK_VERSION}"
SRC="$CACHE/src"
LOG="$CACHE/build.log"

export GOTOOLCHAIN=local CGO_ENABLED=0 GOWORK=off GOFLAGS=-mod=mod
# Go's own caches live under $CACHE too, so CI can keep one directory between runs.
export GOMODCACHE=${GOMODCACHE_OVERRIDE:-$CACHE/gomod} GOCACHE=${GOCACHE_OVERRIDE:-$CACHE/gobuild}

K8S=(kube-apiserver kube-controller-manager kube-scheduler kubectl)
want=("${K8S[@]}" etcd kwok kwokctl)
# The four Kubernetes binaries come from one wrapper module and are built together when any is missing.
todo=()
for b in "${K8S[@]}"; do [ -x "$BIN/$b" ] || { todo+=("${K8S[@]}"); break; }; done
for b in etcd kwok kwokctl; do [ -x "$BIN/$b" ] || todo+=("$b"); done
if [ "${#todo[@]}" = 0 ]; then
  echo "$BIN"
  exit 0
fi
log() { echo "[build-binaries] $*" >&2; }
command -v go >/dev/null || { log "go not found on PATH: Go >= 1.26 is needed to build the control plane"; exit 1; }
# kwok v0.8.0's go.mod says `go 1.26.0` and GOTOOLCHAIN=local forbids fetching a newer toolchain.
go_minor=$(go env GOVERSION | sed -E 's/^go1\.([0-9]+).*/\1/')
[ "$go_minor" -ge 26 ] 2>/dev/null || { log "Go $(go env GOVERSION) is too old: Go >= 1.26 is needed"; exit 1; }
mkdir -p "$BIN" "$SRC"
: > "$LOG"
start=$(date +%s)

# Seconds each component took in a cold build (empty Go caches) on a 2-core machine shared with other work
# (load average 6-10), from the binaries' timestamps: 723 s in all. kube-apiserver's includes downloading
# Kubernetes' modules (15 s there); kwok and kwokctl were one `go install` there, kwokctl's share being the
# 28 s between the two binaries. Only the shares carry over to another machine: the estimate scales the
# figures of what is left by how long the finished components took against theirs.
declare -A EXPECTED=(
  [kube-apiserver]=286 [kube-controller-manager]=86 [kube-scheduler]=7 [kubectl]=46
  [etcd]=42 [kwok]=228 [kwokctl]=28
)
index=0          # components started
done_expected=0  # the EXPECTED seconds of the components finished
mmss() { printf '%dm%02ds' $(( $1 / 60 )) $(( $1 % 60 )); }
# left_after N ELAPSED: the estimate for the components from the Nth of todo on. Worked example: 120 s
# expected and 180 s taken so far make the rest 1.5 times its figure, 86 + 7 + 46 + 42 = 181 s -> 271 s.
left_after() {
  local n=$1 elapsed=$2 left=0 c
  for c in "${todo[@]:n}"; do left=$(( left + ${EXPECTED[$c]} )); done
  if [ "$done_expected" -gt 0 ]; then left=$(( left * elapsed / done_expected )); fi
  echo "$left"
}
# progress NAME: the one line per component, as it starts: "[3/7] kube-scheduler: 6m12s so far, about 2m10s left".
progress() {
  local elapsed=$(( $(date +%s) - start ))
  log "[$(( index + 1 ))/${#todo[@]}] $1: $(mmss "$elapsed") so far, about $(mmss "$(left_after "$index" "$elapsed")") left"
  index=$(( index + 1 ))
}
finished() { done_expected=$(( done_expected + ${EXPECTED[$1]} )); }
fail() {
  log "failed: $*"
  tail -n 20 "$LOG" | sed 's/^/    /' >&2
  log "the whole output is in $LOG"
  exit 1
}
# quiet CMD...: run CMD with its output in the log.
quiet() {
  echo "== $(date -u +%H:%M:%S) $*" >> "$LOG"
  "$@" >> "$LOG" 2>&1 || fail "$*"
}
log "building ${todo[*]} into $BIN (Go's output: $LOG)"

# --- Kubernetes: a wrapper module that replaces every staging module with its v0.x release ----
k8s_minor=$(echo "$K8S_VERSION" | cut -d. -f2)
staging_version="v0.${K8S_VERSION#v1.}"
wrap="$SRC/k8s-$K8S_VERSION"
if [ "${todo[0]}" = kube-apiserver ]; then
  progress kube-apiserver
  rm -rf "$wrap" && mkdir -p "$wrap" && cd "$wrap"
  echo "== reading k8s.io/kubernetes@$K8S_VERSION go.mod from the module proxy" >> "$LOG"
  info=$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" 2>> "$LOG") || fail "go mod download k8s.io/kubernetes@$K8S_VERSION: $info"
  gomod=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])' <<< "$info")
  # The staging set changes between releases (1.36 added streaming and cri-streaming), so it is
  # read from the tag's own replace block rather than kept by hand.
  mapfile -t staging < <(grep -oE '^\s*(replace\s+)?k8s\.io/[a-z0-9-]+ => \./staging/src/k8s\.io/[a-z0-9-]+' "$gomod" | awk '{print $(NF-2)}' | sed 's/^replace//' | sort -u)
  [ "${#staging[@]}" -gt 20 ] || fail "found only ${#staging[@]} staging modules in $gomod"
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
  echo "== the wrapper module replaces ${#staging[@]} staging modules with $staging_version" >> "$LOG"
  quiet go get "k8s.io/kubernetes/cmd/kube-apiserver@$K8S_VERSION" "k8s.io/kubernetes/cmd/kube-controller-manager@$K8S_VERSION" \
               "k8s.io/kubernetes/cmd/kube-scheduler@$K8S_VERSION" "k8s.io/kubernetes/cmd/kubectl@$K8S_VERSION"
  # kwokctl parses `--version`, so the binaries must report the real version, not v0.0.0-master.
  ldf="-s -w -X k8s.io/component-base/version.gitVersion=$K8S_VERSION -X k8s.io/component-base/version.gitMajor=1"
  ldf="$ldf -X k8s.io/component-base/version.gitMinor=$k8s_minor -X k8s.io/component-base/version.gitTreeState=clean"
  ldf="$ldf -X k8s.io/client-go/pkg/version.gitVersion=$K8S_VERSION -X k8s.io/client-go/pkg/version.gitMajor=1"
  ldf="$ldf -X k8s.io/client-go/pkg/version.gitMinor=$k8s_minor"
  for c in "${K8S[@]}"; do
    [ "$c" = kube-apiserver ] || progress "$c"
    quiet go build -trimpath -ldflags "$ldf" -o "$BIN/$c.tmp" "k8s.io/kubernetes/cmd/$c"
    mv "$BIN/$c.tmp" "$BIN/$c"
    finished "$c"
  done
fi

# --- etcd: a three-line wrapper, because etcd's server module has replace directives ------------
if [ ! -x "$BIN/etcd" ]; then
  progress etcd
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
  quiet go mod init local/etcd
  quiet go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION"
  quiet go build -trimpath -ldflags "-s -w" -o "$BIN/etcd.tmp" .
  mv "$BIN/etcd.tmp" "$BIN/etcd"
  finished etcd
fi

# --- kwok and kwokctl: plain `go install` (no replace directives at this tag) ------------------
# One at a time, so that each has its progress line; the second reuses the first's modules and packages.
for c in kwok kwokctl; do
  [ ! -x "$BIN/$c" ] || continue
  progress "$c"
  quiet env GOBIN="$BIN" go install -trimpath -ldflags "-s -w" "sigs.k8s.io/kwok/cmd/$c@$KWOK_VERSION"
  finished "$c"
done

size() { if [ -e "$1" ]; then du -sh "$1" | cut -f1; else echo "0"; fi; }
log "done in $(mmss $(( $(date +%s) - start ))): $("$BIN/kube-apiserver" --version), $("$BIN/etcd" --version | head -1)"
log "cache $CACHE: $(size "$CACHE") (binaries $(size "$BIN"), Go modules $(size "$GOMODCACHE"), Go build cache $(size "$GOCACHE"))"
log "the Go build cache only speeds up a rebuild (rm -rf $GOCACHE frees it); cluster up reads kwok's stages from the modules"
echo "$BIN"
