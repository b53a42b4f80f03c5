"""Autoscaling benchmark: how fast a worker scales from zero when runs come due, and how many
Prefect reads the queue-depth polls cost per pipeline.

Runs the Kubernetes API emulator (in-process), a real local Prefect server (SQLite) behind two of
the tests' counting proxies, and a real `eveflow operator`. Pipelines use the default
pollSeconds (15): one alone on pool "lone" (proxy A), three sharing pool "shared" (proxy B, their
spec.prefect.apiUrl), so each proxy sees one pool's reads. The resync is set to an hour so the
read window holds the autoscaler's reads only (a resync adds its own every resyncSeconds).

scale_up_s: flow runs created -> the worker Deployment's spec.replicas reaches the count
(worst of the trials; target <= 2 x pollSeconds). Reads: POST /flow_runs/filter per minute over
an idle window, divided by the pipelines on the pool; the worst pool is reported (target <= 4).
Last line: RESULT scale_up_s=<s> prefect_reads_per_min_per_pipeline=<n>
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.operator import NS, api, pipeline  # noqa: E402
from eveflow_etl.orchestration.server import free_port, start_prefect_server  # noqa: E402
from tests.fixtures.prefect import CountingProxy  # noqa: E402
from tests.harness.kube_emulator import EmulatorThread, write_kubeconfig  # noqa: E402

POLL = 15  # the model's default pollSeconds
TRIALS = 3
READ_WINDOW = 180.0


class TimedProxy(CountingProxy):
    """The counting proxy, also noting when each flow-run filter read arrived."""

    def __init__(self, upstream: str) -> None:
        super().__init__(upstream)
        self.filter_times: list[float] = []
        self._times_lock = threading.Lock()

    def _forward(self, handler):  # type: ignore[override]
        if handler.command == "POST" and handler.path.split("?")[0].endswith("/flow_runs/filter"):
            with self._times_lock:
                self.filter_times.append(time.monotonic())
        return super()._forward(handler)

    def rate_per_min(self, since: float, until: float) -> float:
        times = [t for t in self.filter_times if since <= t <= until]
        return len(times) / ((until - since) / 60.0)


def autoscaled(name: str, pool: str, api_url: str | None) -> dict:
    doc = pipeline(name, pool)
    doc["spec"]["schedules"] = []
    doc["spec"]["maintenance"] = {"enabled": False}
    doc["spec"]["worker"] = {"autoscaling": {"minReplicas": 0, "maxReplicas": 3, "runsPerReplica": 1,
                                             "scaleDownDelaySeconds": 0}}
    if api_url:
        doc["spec"]["prefect"] = {"apiUrl": api_url}
    return doc


def cr(url: str, name: str) -> dict:
    return api(url, "GET", f"/apis/eveflow.dev/v1alpha1/namespaces/{NS}/evepipelines/{name}")[1]


def replicas(url: str, name: str) -> int | None:
    _, dep = api(url, "GET", f"/apis/apps/v1/namespaces/{NS}/deployments/{name}-worker")
    return ((dep or {}).get("spec") or {}).get("replicas")


def wait(predicate, timeout: float, what: str) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if predicate():
            return time.monotonic() - start
        time.sleep(0.1)
    raise SystemExit(f"timed out after {timeout}s: {what}")


def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="eveflow-bench-autoscale-"))
    emulator = EmulatorThread()
    url = emulator.start()
    kubeconfig = write_kubeconfig(url, tmp / "kubeconfig")
    print("starting Prefect ...", flush=True)
    server = start_prefect_server(tmp / "prefect", ui=False,
                                  extra_env={"PREFECT_SERVER_SERVICES_LATE_RUNS_ENABLED": "false"})
    lone_proxy, shared_proxy = TimedProxy(server.api_url), TimedProxy(server.api_url)
    operator = None
    try:
        import yaml

        crd = yaml.safe_load((ROOT / "crds" / "evepipelines.eveflow.dev.yaml").read_text())
        api(url, "POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", crd)
        api(url, "POST", "/api/v1/namespaces", {"metadata": {"name": NS}})
        api(url, "POST", f"/api/v1/namespaces/{NS}/secrets",
            {"metadata": {"name": "eveflow-postgres"}, "stringData": {"PGHOST": "db"}})
        time.sleep(0.5)
        health = free_port()
        env = {**os.environ, "KUBECONFIG": str(kubeconfig), "PYTHONUNBUFFERED": "1",
               "EVEFLOW_OPERATOR_PREFECT_API_URL": lone_proxy.api_url,
               "EVEFLOW_OPERATOR_RESYNC_SECONDS": "3600", "EVEFLOW_OPERATOR_RESYNC_JITTER_SECONDS": "1",
               "EVEFLOW_OPERATOR_METRICS_PORT": "0", "EVEFLOW_OPERATOR_HEALTH_PORT": str(health),
               "EVEFLOW_OPERATOR_NAMESPACES": NS}
        log = open(tmp / "operator.log", "w")
        operator = subprocess.Popen([str(Path(sys.executable).parent / "eveflow"), "operator"], env=env,
                                    stdout=log, stderr=subprocess.STDOUT)
        wait(lambda: _healthy(health), 90, "operator healthy")

        docs = [autoscaled("lone", "lone", None)]
        docs += [autoscaled(f"shared-{i}", "shared", shared_proxy.api_url) for i in range(3)]
        for doc in docs:
            api(url, "POST", f"/apis/eveflow.dev/v1alpha1/namespaces/{NS}/evepipelines", doc)
        for doc in docs:
            name = doc["metadata"]["name"]
            wait(lambda: ((cr(url, name).get("status") or {}).get("worker") or {}).get("reason") == "Steady",
                 120, f"{name}: first autoscaling poll")
        deployment_id = cr(url, "lone")["status"]["deploymentIds"]["lone"]
        prefect = server.api_url

        ups = []
        for trial in range(TRIALS):
            time.sleep(trial * 4.0)  # land the runs at different points of the poll cycle
            start = time.monotonic()
            runs = [api(prefect, "POST", f"/deployments/{deployment_id}/create_flow_run", {})[1]["id"]
                    for _ in range(3)]
            wait(lambda: replicas(url, "lone") == 3, 6 * POLL, "scale up to 3")
            ups.append(time.monotonic() - start)
            for run in runs:
                api(prefect, "POST", f"/flow_runs/{run}/set_state", {"state": {"type": "COMPLETED"}, "force": True})
            wait(lambda: replicas(url, "lone") == 0, 6 * POLL, "scale down to 0")
            print(f"trial {trial + 1}: 3 runs due -> 3 replicas in {ups[-1]:.1f}s", flush=True)

        time.sleep(POLL)
        since = time.monotonic()
        print(f"idle read window: {READ_WINDOW:.0f}s ...", flush=True)
        time.sleep(READ_WINDOW)
        until = time.monotonic()
        lone_rate = lone_proxy.rate_per_min(since, until)
        shared_rate = shared_proxy.rate_per_min(since, until) / 3
        print(f"flow-run filter reads per minute per pipeline: alone on a pool {lone_rate:.2f}, "
              f"three sharing a pool {shared_rate:.2f} (pollSeconds {POLL})", flush=True)
        worst_up = max(ups)
        print(f"scale up from 0: worst {worst_up:.1f}s of {TRIALS} (target <= {2 * POLL}s)", flush=True)
        print(f"RESULT scale_up_s={worst_up:.1f} prefect_reads_per_min_per_pipeline={max(lone_rate, shared_rate):.2f}",
              flush=True)
    finally:
        if operator is not None:
            operator.terminate()
            try:
                operator.wait(15)
            except subprocess.TimeoutExpired:
                operator.kill()
        lone_proxy.close()
        shared_proxy.close()
        server.stop()
        emulator.stop()


def _healthy(port: int) -> bool:
    try:
        return urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1).status == 200
    except OSError:
        return False


if __name__ == "__main__":
    main()
