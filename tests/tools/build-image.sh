#!/usr/bin/env bash
# Builds the eveflow image from the real Dockerfile with buildah (no Docker engine, no daemon) on
# the local base from build-base-image.sh, and prints its name:
#   localhost/eveflow:test-<hash of the Dockerfile, .dockerignore, the build context and the base>
# Cached: when an image of that name exists the build is skipped (a run takes about a second).
# No --layers: with vfs storage every cached step is a full copy of the root filesystem (~15 s
# each for the metadata-only instructions, measured), more than the steps it would save.
# --format docker: the OCI format has no HEALTHCHECK and buildah would drop the Dockerfile's.
# Isolation is chroot (OCI runtimes cannot create namespaces on these machines) and storage vfs
# (no overlay mounts either). EVEFLOW_REBUILD_IMAGE=1 forces a build.
set -euo pipefail
cd "$(dirname "$0")/../.."

storage=(--storage-driver "${STORAGE_DRIVER:-vfs}")
base=$(bash tests/tools/build-base-image.sh)

# What the build sees: the Dockerfile, .dockerignore and the files .dockerignore lets through.
key=$( { echo "$base"
         sha256sum tests/tools/build-image.sh Dockerfile .dockerignore
         find pyproject.toml README.md etl operator -type f \
           ! -path '*/__pycache__/*' ! -name '*.pyc' ! -path '*.egg-info/*' -print0 \
           | LC_ALL=C sort -z | xargs -0 sha256sum; } | sha256sum | cut -c1-12)
image="localhost/eveflow:test-$key"

if [ -z "${EVEFLOW_REBUILD_IMAGE:-}" ] && buildah "${storage[@]}" inspect --type image "$image" >/dev/null 2>&1; then
  echo "$image"
  exit 0
fi

buildah "${storage[@]}" bud --isolation chroot --format docker --pull-never \
  --build-arg "PYTHON_IMAGE=$base" -t "$image" -f Dockerfile . >&2
# Older builds of other content are not used again: drop them (vfs keeps full copies, ~0.8 GB each).
buildah "${storage[@]}" images --format '{{.Name}}:{{.Tag}}' \
  | grep '^localhost/eveflow:test-' | grep -vx "$image" \
  | xargs -r buildah "${storage[@]}" rmi >/dev/null 2>&1 || true
echo "$image"
