#!/usr/bin/env bash
# Build the tests' Kubernetes control plane from Go modules and cache it.
#
#   bash tests/tools/build-control-plane.sh [CACHE_ROOT]     (default: .cache/tools)
#
# Builds kube-apiserver, kube-controller-manager, kube-scheduler (k8s.io/kubernetes), etcd
# (go.etcd.io/etcd/server/v3) and kwok (sigs.k8s.io/kwok) from the pinned go.mod/go.sum files
# under tests/tools/control-plane/, into CACHE_ROOT/control-plane-<key>/bin, where <key> is a
# hash of those files, this script and the Go version. A second run finds the directory and
# returns at once. Prints the directory on its last line of stdout, timings on stderr.
# Needs only Go and the Go module proxy (GOTOOLCHAIN may be set if a module wants a newer Go).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
cache_root="${1:-$repo/.cache/tools}"
mkdir -p "$cache_root"
cache_root="$(cd "$cache_root" && pwd)"
src="$here/control-plane"

command -v go >/dev/null || { echo "build-control-plane: no 'go' on PATH; install Go >= 1.26" >&2; exit 1; }

key="$( { cat "$0"; cat "$src"/*/go.mod "$src"/*/go.sum; go env GOVERSION; } | sha256sum | cut -c1-16)"
out="$cache_root/control-plane-k8s1.37.2-etcd3.6.16-kwok0.8.0-$key"
bins=(kube-apiserver kube-controller-manager kube-scheduler etcd kwok)

complete() {
  local b
  for b in "${bins[@]}"; do [ -x "$out/bin/$b" ] || return 1; done
  [ -s "$out/kwok-stages.yaml" ]
}

start=$(date +%s)
if complete; then
  echo "build-control-plane: cached in $out ($(( $(date +%s) - start )) s, warm)" >&2
  echo "$out"
  exit 0
fi

tmp="$out.tmp.$$"
rm -rf "$tmp"
mkdir -p "$tmp/bin"
trap 'rm -rf "$tmp"' EXIT
# The release's version stamped as its own build does (otherwise it says v0.0.0-master and helm
# refuses charts with a kubeVersion constraint).
ver="-X k8s.io/component-base/version.gitVersion=v1.37.2 -X k8s.io/component-base/version.gitMajor=1"
ver="$ver -X k8s.io/component-base/version.gitMinor=37 -X k8s.io/component-base/version.gitTreeState=clean"
ver="$ver -X k8s.io/client-go/pkg/version.gitVersion=v1.37.2 -X k8s.io/client-go/pkg/version.gitMajor=1"
ver="$ver -X k8s.io/client-go/pkg/version.gitMinor=37"
flags=(-trimpath "-ldflags=-s -w $ver")

t0=$(date +%s)
(cd "$src/kubernetes" && go build "${flags[@]}" -o "$tmp/bin/" \
  k8s.io/kubernetes/cmd/kube-apiserver \
  k8s.io/kubernetes/cmd/kube-controller-manager \
  k8s.io/kubernetes/cmd/kube-scheduler)
t1=$(date +%s)
(cd "$src/etcd" && go build -trimpath "-ldflags=-s -w" -o "$tmp/bin/etcd" go.etcd.io/etcd/server/v3)
t2=$(date +%s)
(cd "$src/kwok" && go build -trimpath "-ldflags=-s -w" -o "$tmp/bin/kwok" sigs.k8s.io/kwok/cmd/kwok)
# kwok's own "fast" node stages and "fast" pod stages (pods Running/Ready at once when scheduled, Job
# pods Succeeded, deleted pods gone), taken from the module it was built from.
kwok_dir="$(cd "$src/kwok" && go list -m -f '{{.Dir}}' sigs.k8s.io/kwok)"
for f in "$kwok_dir"/kustomize/stage/node/fast/node-initialize.yaml \
         "$kwok_dir"/kustomize/stage/node/heartbeat/node-heartbeat.yaml \
         "$kwok_dir"/kustomize/stage/pod/fast/pod-*.yaml; do
  echo "---"; cat "$f"
done > "$tmp/kwok-stages.yaml"
t3=$(date +%s)

rm -rf "$out"
mv "$tmp" "$out"
trap - EXIT
# Older builds (another version or script) are not used again.
find "$cache_root" -maxdepth 1 -name 'control-plane-*' ! -name "$(basename "$out")" ! -name '*.tmp.*' -exec rm -rf {} +
echo "build-control-plane: built in $out: kubernetes $((t1 - t0)) s, etcd $((t2 - t1)) s, kwok $((t3 - t2)) s, total $((t3 - start)) s" >&2
echo "$out"
