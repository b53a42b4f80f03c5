#!/usr/bin/env bash
# The project's test command (README, .ci/run). On a fresh Debian machine with Python 3.11 it
# installs everything the suite needs -- the package and test tools into .venv, the helm binary
# into .cache/tools -- then runs pytest. PostgreSQL, the Prefect server, the local ESI server and
# the Kubernetes control plane are started by the test fixtures themselves.
set -euo pipefail
cd "$(dirname "$0")/.."

# --fast: only the tests that need no server (no PostgreSQL, Prefect, control plane, helm or
# image build) -- builders, reducers, parsers, the model and the render targets; about a minute.
fast=0
if [ "${1:-}" = "--fast" ]; then
  fast=1
  shift
  set -- -m "not postgres and not prefect and not k8s and not helm and not image and not controlplane" "$@"
fi

python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check uv
# --compile-bytecode: PYTHONDONTWRITEBYTECODE=1 is common on CI machines; without .pyc files every
# subprocess (kopf, prefect, workers) spends ~7 s importing.
.venv/bin/uv pip install -q --python .venv/bin/python --compile-bytecode -e '.[test]'

if [ "$fast" = 0 ]; then
bash tests/tools/fetch-helm.sh .cache/tools
# The Kubernetes control plane (kube-apiserver, controller-manager, scheduler, etcd, kwok), built
# from Go modules on the first run (minutes), then reused from .cache/tools.
if [ -z "${EVEFLOW_CONTROL_PLANE_DIR:-}" ]; then
  EVEFLOW_CONTROL_PLANE_DIR="$(bash tests/tools/build-control-plane.sh .cache/tools | tail -n 1)"
  export EVEFLOW_CONTROL_PLANE_DIR
fi

# The image tests (marker `image`) build the Dockerfile with buildah on a debootstrap base image:
# both come from Debian's packages. Without them those tests skip, saying why.
if ! command -v buildah >/dev/null || ! command -v debootstrap >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q buildah debootstrap; } >/dev/null \
      || echo "tests/run.sh: apt-get could not install buildah and debootstrap: the image tests will skip" >&2
  else
    echo "tests/run.sh: no apt-get as root here: buildah cannot be installed, the image tests will skip" >&2
  fi
fi
fi

export PATH="$PWD/.venv/bin:$PWD/.cache/tools/bin:$PATH"
export EVEFLOW_REPO_ROOT="$PWD"

set +e
.venv/bin/python -m pytest "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
  echo "FAIL: pytest collected no tests -- the suite is empty or misconfigured." >&2
  exit 1
fi
exit "$rc"
