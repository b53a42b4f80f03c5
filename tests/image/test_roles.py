"""The roles run from the image: `eveflow worker` runs a flow run of examples/pipeline.yaml into
PostgreSQL, `eveflow operator` reconciles an EvePipeline. Both read-only, as uid 10001, against
the real Prefect server, the local ESI server, PostgreSQL and the Kubernetes API emulator the test
session started on this host (chroot isolation shares the host's network)."""

from __future__ import annotations

import base64
import json
import os
import select
import socket
import socketserver
import threading
import time
import uuid
from pathlib import Path

import httpx
import psycopg
import pytest
import yaml
from psycopg.conninfo import conninfo_to_dict

from eveflow_etl.orchestration.server import free_port
from tests.fixtures.prefect import prefect_api
from tests.prefect.test_flows import eveflow, pg_env, wait_final

from .container import ROOT

pytestmark = [pytest.mark.image, pytest.mark.prefect, pytest.mark.postgres, pytest.mark.timeout(2400)]

RUNTIME_UID = 10001


def _wait(predicate, timeout: float, what: str, proc, log: Path):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"the container exited ({proc.returncode}) while waiting for {what}:\n"
                                 f"{log.read_text()[-4000:]}")
        result = predicate()
        if result:
            return result
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}:\n{log.read_text()[-4000:]}")


def _self_contained(kubeconfig: Path) -> str:
    """``kubeconfig`` with the files it names (the admin's client certificate and key) inlined:
    the container sees only what is mounted into it, as a kubeconfig Secret in a pod would hold."""
    doc = yaml.safe_load(kubeconfig.read_text())
    for entry in doc.get("users", []):
        user = entry["user"]
        for key in ("client-certificate", "client-key"):
            if key in user:
                user[f"{key}-data"] = base64.b64encode(Path(user.pop(key)).read_bytes()).decode()
    for entry in doc.get("clusters", []):
        cluster = entry["cluster"]
        if "certificate-authority" in cluster:
            cluster["certificate-authority-data"] = base64.b64encode(
                Path(cluster.pop("certificate-authority")).read_bytes()).decode()
    return yaml.safe_dump(doc)


class _TcpToUnix:
    """127.0.0.1:<port> relayed to a Unix socket. The embedded test server listens on a socket in
    a directory only its own user may enter; a pod reaches PostgreSQL over TCP, and so does the
    container through this relay (host network)."""

    def __init__(self, path: str) -> None:
        relay = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                with socket.socket(socket.AF_UNIX) as upstream:
                    upstream.connect(path)
                    relay.pump(self.request, upstream)

        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @staticmethod
    def pump(a: socket.socket, b: socket.socket) -> None:
        while True:
            readable, _, _ = select.select([a, b], [], [])
            for source in readable:
                data = source.recv(65536)
                if not data:
                    return
                (b if source is a else a).sendall(data)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def pg_for_the_container(pg_dsn):
    """libpq variables with which the container reaches the test's database over TCP."""
    env = pg_env(pg_dsn)
    host = conninfo_to_dict(pg_dsn).get("host") or "127.0.0.1"
    if not host.startswith("/"):
        yield env
        return
    relay = _TcpToUnix(os.path.join(host, f".s.PGSQL.{env.get('PGPORT', '5432')}"))
    try:
        yield {**env, "PGHOST": "127.0.0.1", "PGPORT": str(relay.port)}
    finally:
        relay.close()


def test_worker_from_the_image_runs_the_example_pipeline_into_postgres(
    container, prefect_server, prefect_client_env, pg_dsn, pg_for_the_container, esi_server, tmp_path, capsys
) -> None:
    container.prepare_read_only_run()
    name, pool = f"img-{uuid.uuid4().hex[:6]}", f"img-pool-{uuid.uuid4().hex[:6]}"
    document = yaml.safe_load((ROOT / "examples" / "pipeline.yaml").read_text())
    document["metadata"]["name"] = name
    document["spec"]["workPool"]["name"] = pool
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump(document))
    pg_vars = pg_for_the_container
    etl_env = {"EVEFLOW_ESI_BASE_URL": esi_server.esi_base_url, "EVEFLOW_ESI_BACKOFF_SECONDS": "0.01",
               "EVEFLOW_ESI_RATE_PER_SECOND": "100", "EVEFLOW_ESI_MAX_RETRIES": "2",
               "EVEFLOW_CONTACT": "tests@eveflow.invalid"}

    # The user's side, on the host: the pipeline applied to Prefect and one run of it asked for.
    host_env = {k: v for k, v in prefect_client_env.items() if not k.startswith("PG")}
    applied = eveflow(["apply", "-f", str(path)], {**host_env, **pg_vars, **etl_env})
    assert applied.returncode == 0, applied.stderr
    with prefect_api(prefect_server) as client:
        etl = client.get(f"deployments/name/eve-market-etl/{name}").json()
        flow_run = client.post(f"deployments/{etl['id']}/create_flow_run", json={}).json()

        # The worker, from the image: only what a pod would get (no host PATH, no host venv).
        data = tmp_path / "data"
        data.mkdir()
        os.chown(data, RUNTIME_UID, RUNTIME_UID)
        port = free_port()
        env = {"PREFECT_API_URL": prefect_server.api_url, "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
               "EVEFLOW_DATA_DIR": "/data", **pg_vars, **etl_env}
        log = tmp_path / "worker.log"
        proc = container.start(["worker", "--pool", pool, "--port", str(port), "--host", "127.0.0.1",
                                "--poll-seconds", "1", "--limit", "1"],
                               log, env=env, volumes={str(data): "/data"})
        try:
            _wait(lambda: _status(f"http://127.0.0.1:{port}/health") == 200, 120, "the worker's /health", proc, log)
            _wait(lambda: client.get(f"flow_runs/{flow_run['id']}").json()["state"]["type"]
                  in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"), 300, "the flow run", proc, log)
            run = wait_final(client, flow_run["id"])
        finally:
            rc = container.stop(proc)
    output = log.read_text()
    assert run["state"]["type"] == "COMPLETED", (run["state"], output[-4000:])
    assert rc == 0, output[-4000:]  # SIGTERM: a clean stop

    with psycopg.connect(pg_dsn) as conn:
        loaded = conn.execute("SELECT region_id, count(*) FROM eve.market_history GROUP BY 1 ORDER BY 1").fetchall()
        ledger = conn.execute("SELECT regions, status, inserted FROM eve.etl_runs ORDER BY regions").fetchall()
    regions = document["spec"]["source"]["regions"]
    assert [r[0] for r in loaded] == sorted(regions) and all(r[1] > 0 for r in loaded), loaded
    assert [(r[0], r[1]) for r in ledger] == [([region], "succeeded") for region in sorted(regions)]
    rows = sum(r[1] for r in loaded)
    assert sum(r[2] for r in ledger) == rows
    with capsys.disabled():
        print(f"\nflow run {flow_run['id']} from the image loaded {rows} rows into eve.market_history")
    # The worker wrote its ESI cache where the targets mount the volume, as the runtime user.
    assert any(p.stat().st_uid == RUNTIME_UID for p in data.rglob("*")), list(data.rglob("*"))


def _status(url: str) -> int | None:
    try:
        return httpx.get(url, timeout=2).status_code
    except httpx.HTTPError:
        return None


@pytest.mark.k8s
def test_operator_from_the_image_reconciles_an_evepipeline(
    container, kube, kube_namespace, prefect_server, tmp_path
) -> None:
    from tests.operator.e2e import CRD, apply, deployment, example, kobj, wait_condition

    container.prepare_read_only_run()
    kube.kubectl("apply", "-f", str(CRD))
    kube.wait_for(lambda: kube.kubectl("get", "evp", "-A", check=False).returncode == 0, what="CRD served")
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "eveflow-postgres"},
              "stringData": {"PGHOST": "db", "PGPASSWORD": "not-logged"}}
    kube.kubectl("apply", "-n", kube_namespace, "-f", "-", input=json.dumps(secret))

    # The kubeconfig as a mounted Secret would give it: read-only, readable by the runtime user.
    kubedir = tmp_path / "kube"
    kubedir.mkdir()
    (kubedir / "config").write_text(_self_contained(Path(kube.env["KUBECONFIG"])))
    os.chmod(kubedir, 0o755)
    os.chmod(kubedir / "config", 0o644)
    health = free_port()
    env = {"KUBECONFIG": "/mnt/config",
           "EVEFLOW_OPERATOR_PREFECT_API_URL": prefect_server.api_url,
           "EVEFLOW_OPERATOR_NAMESPACES": kube_namespace,
           "EVEFLOW_OPERATOR_RESYNC_SECONDS": "2", "EVEFLOW_OPERATOR_RESYNC_IDLE_SECONDS": "1",
           "EVEFLOW_OPERATOR_METRICS_PORT": "0", "EVEFLOW_OPERATOR_HEALTH_PORT": str(health),
           "EVEFLOW_OPERATOR_WORKER_IMAGE": "example.org/eveflow:test"}
    log = tmp_path / "operator.log"
    proc = container.start(["operator"], log, env=env,
                           # /mnt: a mount point must exist on the read-only root (and a
                           # volume under the /run or /tmp tmpfs is not seen by the container).
                           volumes={str(kubedir): "/mnt:ro"})
    name, pool = f"img-{uuid.uuid4().hex[:6]}", f"img-op-pool-{uuid.uuid4().hex[:6]}"
    try:
        _wait(lambda: _status(f"http://127.0.0.1:{health}/healthz") == 200, 120, "the operator's /healthz", proc, log)
        apply(kube, kube_namespace, example(cr=name, pool=pool))
        cr = wait_condition(kube, kube_namespace, name, timeout=60)
    finally:
        rc = container.stop(proc)
    assert {c["type"] for c in cr["status"]["conditions"]} == {"Ready", "PrefectSynced", "WorkerAvailable"}
    worker = kobj(kube, "deployment", kube_namespace, f"{name}-worker")
    assert worker is not None and worker["metadata"]["ownerReferences"][0]["uid"] == cr["metadata"]["uid"]
    with httpx.Client(base_url=prefect_server.api_url, timeout=30) as prefect:
        assert deployment(prefect, name) is not None
    assert rc == 0, log.read_text()[-4000:]
