"""Fixtures for the chart tests: the real helm binary, isolated from the user's helm config."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "eveflow"
HERE = Path(__file__).resolve().parent
VALUES_DIR = HERE / "values"
BAD_VALUES_DIR = HERE / "bad-values"
RELEASE = "eveflow"
NAMESPACE = "eveflow-system"


def helm_binary() -> str | None:
    found = shutil.which("helm")
    if found:
        return found
    fallback = ROOT / ".cache" / "tools" / "bin" / "helm"
    return str(fallback) if fallback.exists() else None


@dataclass
class Helm:
    binary: str
    env: dict[str, str]

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [self.binary, *args], capture_output=True, text=True, env=self.env, timeout=120
        )
        if check and result.returncode != 0:
            raise AssertionError(f"helm {' '.join(args)} failed ({result.returncode}):\n{result.stderr}")
        return result

    def template(self, *values_files: Path, extra: tuple[str, ...] = ()) -> list[dict]:
        """Render the chart (templates and crds/) and return its manifests."""
        args = ["template", RELEASE, str(CHART), "--namespace", NAMESPACE, "--include-crds"]
        for path in values_files:
            args += ["-f", str(path)]
        out = self.run(*args, *extra).stdout
        return [doc for doc in yaml.safe_load_all(out) if doc]


@pytest.fixture(scope="session")
def helm(tmp_path_factory: pytest.TempPathFactory) -> Helm:
    binary = helm_binary()
    if binary is None:
        pytest.fail("no helm binary: run tests/run.sh (it fetches helm into .cache/tools/bin)")
    home = tmp_path_factory.mktemp("helm-home")
    env = dict(os.environ)
    for var in ("HELM_CACHE_HOME", "HELM_CONFIG_HOME", "HELM_DATA_HOME"):
        env[var] = str(home / var.lower())
    env["KUBECACHEDIR"] = str(home / "kubecache")
    # helm template must not talk to whatever cluster the developer's kubeconfig points at.
    env["KUBECONFIG"] = str(home / "no-kubeconfig")
    return Helm(binary, env)


def values_files() -> list[Path]:
    return sorted(VALUES_DIR.glob("*.yaml"))


def bad_values_files() -> list[Path]:
    return sorted(BAD_VALUES_DIR.glob("*.yaml"))


def by_kind(manifests: list[dict], kind: str) -> list[dict]:
    return [m for m in manifests if m.get("kind") == kind]


def one(manifests: list[dict], kind: str, name: str | None = None) -> dict:
    found = [m for m in by_kind(manifests, kind) if name is None or m["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {[m['metadata']['name'] for m in found]}"
    return found[0]
