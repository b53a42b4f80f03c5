#!/usr/bin/env bash
# Build (or pull) the worker image for linux/amd64, push it to the Snowflake image repository,
# upload the service spec to the stage and create or update the SPCS service 'CLOUD_ORDERS_WORKER'.
# Needs: docker with buildx, the Snowflake CLI (snow) with a working connection.
# Usage: path/to/deploy.sh      (run from the eveflow checkout, or set SOURCE_IMAGE / BUILD_CONTEXT)
#   SNOW_CONNECTION=name        snow connection to use (default: snow's default connection)
#   IMAGE_TAG=tag               tag to push (default: the current time, UTC)
#   SOURCE_IMAGE=ref            pull this image instead of building one
#   BUILD_CONTEXT=dir           docker build context with the eveflow Dockerfile (default: the current directory)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

snow_args=()
if [ -n "${SNOW_CONNECTION:-}" ]; then snow_args=(--connection "$SNOW_CONNECTION"); fi
snowsql() { snow sql "${snow_args[@]}" "$@"; }

image_tag="${IMAGE_TAG:-$(date -u +%Y%m%d%H%M%S)}"
source_image="${SOURCE_IMAGE:-eveflow:0.1.0}"
build_context="${BUILD_CONTEXT:-.}"
local_image="eveflow-worker:${image_tag}"

if grep -q "VALUE_LIST = (.*'<" "$here/setup.sql"; then
  echo "setup.sql: replace the <...> host placeholders in the network rule first" >&2
  exit 1
fi

echo "==> 1/5 Snowflake objects (setup.sql, idempotent)"
snowsql -f "$here/setup.sql"

echo "==> 2/5 Image for linux/amd64"
if [ -n "$source_image" ]; then
  docker pull --platform linux/amd64 "$source_image"
  docker tag "$source_image" "$local_image"
else
  docker build --platform linux/amd64 -t "$local_image" "$build_context"
fi

echo "==> 3/5 Log in and push to EVEFLOW.IMAGE_SCHEMA.IMAGE_REPO"
registry="$(snow spcs image-registry url "${snow_args[@]}")"
repository="$registry/eveflow/image_schema/image_repo/eveflow-worker"
snow spcs image-registry login "${snow_args[@]}"
docker tag "$local_image" "$repository:$image_tag"
docker push "$repository:$image_tag"

echo "==> 4/5 Upload the service spec (pinned to tag $image_tag)"
workdir="$(mktemp -d)"
trap 'rm -rf "$workdir"' EXIT
sed "s|/eveflow/image_schema/image_repo/eveflow-worker:latest|/eveflow/image_schema/image_repo/eveflow-worker:$image_tag|" \
  "$here/service-spec.yaml" > "$workdir/service-spec.yaml"
snow stage copy "$workdir/service-spec.yaml" '@EVEFLOW.APP_SCHEMA.APP_STAGE/cloud-orders/' --overwrite "${snow_args[@]}"

echo "==> 5/5 Create or update the service"
if snowsql -q 'DESCRIBE SERVICE "EVEFLOW"."APP_SCHEMA"."CLOUD_ORDERS_WORKER"' >/dev/null 2>&1; then
  snowsql -f "$here/service-update.sql"
else
  snowsql -f "$here/service-create.sql"
fi
echo "Done. Status: snow sql -q \"SELECT SYSTEM\$GET_SERVICE_STATUS('EVEFLOW.APP_SCHEMA.CLOUD_ORDERS_WORKER')\""
