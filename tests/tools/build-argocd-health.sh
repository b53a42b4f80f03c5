#!/usr/bin/env bash
# Builds tests/tools/argocd-health (Argo CD's health-script runner on gopher-lua) into
# DEST/argocd-health-<hash of its sources>/argocd-health and prints that path. A later run with
# the same sources reuses the binary.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
dest=${1:-$root/.cache/tools}
src="$root/tests/tools/argocd-health"
key=$(cat "$src/go.mod" "$src/go.sum" "$src/main.go" | sha256sum | cut -c1-16)
out="$dest/argocd-health-$key/argocd-health"
if [ ! -x "$out" ]; then
  if ! command -v go >/dev/null 2>&1; then
    echo "build-argocd-health.sh: no 'go' on PATH; the Argo CD health tests need the Go toolchain" >&2
    exit 1
  fi
  mkdir -p "$(dirname "$out")"
  (cd "$src" && GOTOOLCHAIN=local GOFLAGS=-mod=readonly go build -trimpath -o "$out.tmp" .)
  mv "$out.tmp" "$out"
fi
echo "$out"
