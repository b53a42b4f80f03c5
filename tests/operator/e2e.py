"""Helpers of the operator's end-to-end tests (a real `eveflow operator` against the Kubernetes
API emulator, kubectl as the user, a real Prefect server); the fixtures are in conftest.py."""

from __future__ import annotations

import json
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

ROOT = Path(__file__).resolve().parents[2]
CRD = ROOT / "crds" / "evepipelines.eveflow.dev.yaml"
RESYNC = 2.0
USER_AGENTS = ("kopf", "eveflow-operator")


@dataclass
class RunningOperator:
    proc: subprocess.Popen
    log: Path  # everything the operator printed (kopf's log)
    user: str = ""  # its Kubernetes identity (the chart's ServiceAccount)

    def log_since(self, offset: int) -> str:
        with self.log.open("rb") as f:
            f.seek(offset)
            return f.read().decode(errors="replace")

    def log_size(self) -> int:
        return self.log.stat().st_size


# --- helpers ------------------------------------------------------------------------------------


def chart_rbac(kube, release: str, namespace: str, *helm_args: str) -> tuple[str, list[dict]]:
    """Apply the operator's ServiceAccount, ClusterRole(s), Role(s) and bindings exactly as
    `helm template charts/eveflow` renders them (nothing else of the chart). Returns the
    ServiceAccount's user name and the applied documents."""
    out = kube.helm("template", release, str(ROOT / "charts" / "eveflow"), "-n", namespace,
                    *helm_args).stdout
    docs = [d for d in yaml.safe_load_all(out) if d and d["kind"] in (
        "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding")]
    assert any(d["kind"] == "ClusterRole" for d in docs), "the chart rendered no ClusterRole"
    if kube.api("GET", f"/api/v1/namespaces/{namespace}")[0] == 404:
        kube.create_namespace(namespace)
    kube.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": docs}))
    (sa,) = [d for d in docs if d["kind"] == "ServiceAccount"]
    return f"system:serviceaccount:{namespace}:{sa['metadata']['name']}", docs


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(proc: subprocess.Popen, port: int, log: Path, timeout: float = 60) -> None:
    """kopf's liveness endpoint answers once startup is done and the watches are running."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"the operator exited:\n{log.read_text()[-5000:]}"
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"the operator did not become healthy:\n{log.read_text()[-5000:]}")


def example(name: str = "pipeline.yaml", *, cr: str | None = None, pool: str | None = None, **spec: Any) -> dict:
    doc = yaml.safe_load((ROOT / "examples" / name).read_text())
    if cr:
        doc["metadata"]["name"] = cr
    if pool:
        doc["spec"]["workPool"]["name"] = pool
    doc["spec"].update(spec)
    return doc


def apply(kube, ns: str, doc: dict) -> None:
    kube.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(doc))


def get_cr(kube, ns: str, name: str) -> dict | None:
    proc = kube.kubectl("get", "evp", name, "-n", ns, "-o", "json", check=False)
    return json.loads(proc.stdout) if proc.returncode == 0 else None


def condition(cr: dict | None, type_: str = "Ready") -> dict:
    for c in ((cr or {}).get("status") or {}).get("conditions") or []:
        if c["type"] == type_:
            return c
    return {}


def wait_condition(kube, ns: str, name: str, status: str = "True", reason: str | None = None,
                   generation: int | None = None, timeout: float = 45.0) -> dict:
    def check():
        cr = get_cr(kube, ns, name)
        c = condition(cr)
        ok = c.get("status") == status and (reason is None or c.get("reason") == reason)
        if generation is not None:
            ok = ok and cr["status"].get("observedGeneration") == generation
        return cr if ok else None
    return kube.wait_for(check, timeout=timeout, interval=0.1,
                         what=f"{ns}/{name} Ready={status} {reason or ''} (last: {condition(get_cr(kube, ns, name))})")


def deployment(prefect, name: str) -> dict | None:
    found = prefect.post("/deployments/filter", json={"deployments": {"name": {"any_": [name]}}}).json()
    return found[0] if found else None


def schedules(prefect, deployment_id: str) -> list[dict]:
    return prefect.get(f"/deployments/{deployment_id}/schedules").json()


def pool(prefect, name: str) -> dict | None:
    r = prefect.get(f"/work_pools/{name}")
    return r.json() if r.status_code == 200 else None


def events(kube, ns: str, name: str) -> list[dict]:
    items = kube.kubectl_json("get", "events", "-n", ns)["items"]
    return [e for e in items if (e.get("involvedObject") or {}).get("name") == name]


def kobj(kube, kind: str, ns: str, name: str) -> dict | None:
    proc = kube.kubectl("get", kind, name, "-n", ns, "-o", "json", check=False)
    return json.loads(proc.stdout) if proc.returncode == 0 else None


def mark_available(kube, ns: str, name: str) -> None:
    """Let the worker's pods run: uncordon the simulated nodes; the scheduler places the pods,
    kwok makes them Ready, the Deployment controller marks the Deployment Available."""
    kube.uncordon_nodes()

    def available():
        d = kobj(kube, "deployment", ns, name) or {}
        return any(c["type"] == "Available" and c["status"] == "True"
                   for c in (d.get("status") or {}).get("conditions") or [])
    kube.wait_for(available, timeout=60, what=f"deployment {ns}/{name} Available")
