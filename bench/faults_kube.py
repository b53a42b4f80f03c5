"""Kubernetes scenarios of the fault matrix: the real ``eveflow operator`` against the Kubernetes
API emulator (tests/harness/kube_emulator, with its fault knobs) and a real Prefect server.

Each scenario applies a reference EvePipeline cleanly, then the faulted one (409 on status
writes, 500s, watch streams cut, the operator SIGKILLed mid-pass and restarted), clears the
fault, waits until the faulted pipeline is Ready for its generation, and compares what Prefect
holds for both (work pool, queues, deployments, schedules; names normalised).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import httpx
import yaml

import faults_prefect

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.harness.kube_emulator import EmulatorThread, write_kubeconfig  # noqa: E402

GROUP = "/apis/eveflow.dev/v1alpha1"


@dataclass
class KubeScenario:
    name: str
    what: str
    faults: list[dict] = field(default_factory=list)
    action: Callable | None = None  # (env) -> None, after the faulted pipeline is applied


class Env:
    def __init__(self, base: Path, prefect_url: str) -> None:
        self.base = base
        self.prefect_url = prefect_url
        self.emulator = EmulatorThread()
        self.url = self.emulator.start()
        self.kubeconfig = write_kubeconfig(self.url, base / "kubeconfig")
        self.api = httpx.Client(base_url=self.url, timeout=30)
        crd = yaml.safe_load((ROOT / "crds" / "evepipelines.eveflow.dev.yaml").read_text())
        self.api.post("/apis/apiextensions.k8s.io/v1/customresourcedefinitions", json=crd).raise_for_status()
        self._wait(lambda: self.api.get(f"{GROUP}/evepipelines").status_code == 200, "CRD served")
        self.operator: subprocess.Popen | None = None
        self.start_operator()

    def start_operator(self) -> None:
        from eveflow_etl.orchestration.server import free_port

        self.health = free_port()
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig), "EVEFLOW_OPERATOR_PREFECT_API_URL": self.prefect_url,
               "EVEFLOW_OPERATOR_RESYNC_SECONDS": "2", "EVEFLOW_OPERATOR_RESYNC_JITTER_SECONDS": "0.5",
               "EVEFLOW_OPERATOR_RESYNC_IDLE_SECONDS": "1", "EVEFLOW_OPERATOR_RETRY_BACKOFF_SECONDS": "0.5",
               "EVEFLOW_OPERATOR_METRICS_PORT": "0", "EVEFLOW_OPERATOR_HEALTH_PORT": str(self.health),
               "EVEFLOW_OPERATOR_WORKER_IMAGE": "example.org/eveflow:faults", "PYTHONUNBUFFERED": "1"}
        env.pop("EVEFLOW_OPERATOR_NAMESPACES", None)
        log = (self.base / "operator.log").open("a")
        self.operator = subprocess.Popen([str(Path(sys.executable).parent / "eveflow"), "operator"], env=env,
                                         stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True)
        self._wait(self._healthy, "operator healthy", 90)

    def _healthy(self) -> bool:
        assert self.operator is not None and self.operator.poll() is None, "the operator exited"
        try:
            return httpx.get(f"http://127.0.0.1:{self.health}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def kill_operator(self) -> None:
        assert self.operator is not None
        os.killpg(self.operator.pid, signal.SIGKILL)
        self.operator.wait(30)

    def stop(self) -> None:
        if self.operator is not None and self.operator.poll() is None:
            self.operator.terminate()
            try:
                self.operator.wait(15)
            except subprocess.TimeoutExpired:
                self.kill_operator()
        self.api.close()
        self.emulator.stop()

    def faults(self, faults: list[dict]) -> None:
        self.api.put("/_emulator/config", json={"faults": faults}).raise_for_status()

    def cut_watches(self) -> None:
        self.api.put("/_emulator/config", json={"cut_watches": True}).raise_for_status()

    def namespace(self, name: str) -> None:
        self.api.post("/api/v1/namespaces", json={"apiVersion": "v1", "kind": "Namespace",
                                                  "metadata": {"name": name}}).raise_for_status()
        self.api.post(f"/api/v1/namespaces/{name}/secrets", json={
            "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "eveflow-postgres"},
            "stringData": {"PGHOST": "db", "PGPASSWORD": "not-logged"}}).raise_for_status()

    def apply(self, ns: str, name: str) -> None:
        doc = faults_prefect.document(name)
        doc["spec"]["destination"]["secretRef"] = "eveflow-postgres"
        for _ in range(20):  # the create itself may meet an injected fault
            if self.api.post(f"{GROUP}/namespaces/{ns}/evepipelines", json=doc).status_code in (200, 201, 409):
                return
            time.sleep(0.2)
        raise RuntimeError(f"could not create EvePipeline {ns}/{name}")

    def ready(self, ns: str, name: str) -> bool:
        got = self.api.get(f"{GROUP}/namespaces/{ns}/evepipelines/{name}")
        if got.status_code != 200:
            return False
        obj = got.json()
        for c in (obj.get("status") or {}).get("conditions") or []:
            if c.get("type") == "Ready":
                return c.get("status") == "True" and c.get("observedGeneration") == obj["metadata"]["generation"]
        return False

    @staticmethod
    def _wait(predicate, what: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            time.sleep(0.2)
        raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")


def _cut_watches_repeatedly(env: Env) -> None:
    for _ in range(3):
        time.sleep(0.5)
        env.cut_watches()


def _kill_and_restart(env: Env) -> None:
    time.sleep(0.3)  # mid-pass: the create event is being handled
    env.kill_operator()
    env.start_operator()


SCENARIOS = [
    KubeScenario("k8s-409-on-status", "409 Conflict to the operator's status writes",
                 [{"method": "PATCH", "resource": "evepipelines", "sub": "status", "status": 409, "count": 4}]),
    KubeScenario("k8s-500s", "500 to reads and writes of EvePipelines",
                 [{"resource": "evepipelines", "status": 500, "count": 6, "watch": False}]),
    KubeScenario("k8s-worker-deployment-500", "500 to the worker Deployment's create/patch",
                 [{"resource": "deployments", "status": 500, "count": 4, "watch": False}]),
    KubeScenario("k8s-watch-streams-cut", "every watch stream ended three times", action=_cut_watches_repeatedly),
    KubeScenario("operator-killed-mid-pass", "the operator SIGKILLed while handling the create, restarted",
                 action=_kill_and_restart),
]


def run_all(base: Path, prefect_url: str, report, only: list[str] | None = None) -> None:
    wanted = [s for s in SCENARIOS if not only or s.name in only]
    if not wanted:
        return
    env = Env(base, prefect_url)
    try:
        for i, sc in enumerate(wanted):
            started = time.monotonic()
            notes: list[str] = []
            try:
                ok, lost, dup, detail = _one(env, sc, i, notes)
            except Exception as exc:  # noqa: BLE001 - named, counted as failed
                ok, lost, dup, detail = False, 0, 0, f"bench error: {type(exc).__name__}: {exc}"
            finally:
                env.faults([])
            report(sc.name, sc.what, ok, lost, dup, detail + "".join(f"; {n}" for n in notes),
                   time.monotonic() - started)
    finally:
        env.stop()


def _one(env: Env, sc: KubeScenario, i: int, notes: list[str]):
    ns = f"fk{i}"
    got, ref = f"kg{i}", f"kr{i}"
    env.namespace(ns)
    env.apply(ns, ref)
    env._wait(lambda: env.ready(ns, ref), f"{ref} Ready", 90)
    env.faults(sc.faults)
    env.apply(ns, got)
    if sc.action is not None:
        sc.action(env)
    time.sleep(2.0)  # let the faults bite before they are cleared
    left = json.loads(env.api.get("/_emulator/state").text).get("config", {}).get("faults") or []
    notes.append(f"faults left unused: {sum(max(f.get('count', 0), 0) for f in left)}")
    env.faults([])
    env._wait(lambda: env.ready(ns, got), f"{got} Ready after the fault", 120)
    g = Counter(faults_prefect.objects(env.prefect_url.removesuffix("/"), got))
    r = Counter(faults_prefect.objects(env.prefect_url.removesuffix("/"), ref))
    lost, dup = sum((r - g).values()), sum((g - r).values())
    return lost == 0 and dup == 0 and sum(r.values()) > 0, lost, dup, \
        f"prefect objects={sum(g.values())}/{sum(r.values())}; {got} Ready"
