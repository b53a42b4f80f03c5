"""Operator benchmark: apply -> Ready latency (1 and 100 CRs), idle Prefect writes, operator RSS.

Runs the Kubernetes API emulator (in-process thread), a real local Prefect server behind the
tests' counting proxy, and a real `eveflow operator` subprocess. The Prefect server's database is
PostgreSQL (the embedded one), as in any production Prefect install; `--prefect-db sqlite` uses
Prefect's SQLite default instead, which serialises every write and, with 100 pipelines' scheduler
runs on top, turns the benchmark into a measure of SQLite lock waits. Last line:
RESULT ready_p50_1=<s> ready_p50_100=<s> idle_writes=<n> rss_mb_100=<m>
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from eveflow_etl.localpg import start_local_postgres  # noqa: E402
from eveflow_etl.orchestration.server import free_port, start_prefect_server  # noqa: E402
from tests.fixtures.prefect import CountingProxy  # noqa: E402
from tests.harness.kube_emulator import EmulatorThread, write_kubeconfig  # noqa: E402

RESYNC = 5.0
NS = "bench"


def api(url: str, method: str, path: str, body: object = None) -> tuple[int, dict]:
    req = urllib.request.Request(url + path, method=method, data=None if body is None else json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json", "Accept": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def pipeline(name: str, pool: str) -> dict:
    doc = yaml.safe_load((ROOT / "examples" / "pipeline.yaml").read_text())
    doc["metadata"] = {"name": name, "namespace": NS}
    doc["spec"]["workPool"]["name"] = pool
    return doc


def ready_names(url: str) -> set[str]:
    _, lst = api(url, "GET", f"/apis/eveflow.dev/v1alpha1/namespaces/{NS}/evepipelines")
    out = set()
    for item in lst.get("items", []):
        for c in (item.get("status") or {}).get("conditions") or []:
            if c["type"] == "Ready" and c["status"] == "True":
                out.add(item["metadata"]["name"])
    return out


def apply_and_time(url: str, docs: list[dict], timeout: float) -> list[float]:
    start = time.monotonic()
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda d: api(url, "POST", f"/apis/eveflow.dev/v1alpha1/namespaces/{NS}/evepipelines", d), docs))
    want = {d["metadata"]["name"] for d in docs}
    seen: dict[str, float] = {}
    while len(seen) < len(want) and time.monotonic() - start < timeout:
        now = time.monotonic() - start
        for name in ready_names(url) & want:
            seen.setdefault(name, now)
        time.sleep(0.05)
    missing = want - set(seen)
    if missing:
        print(f"not Ready after {timeout}s: {len(missing)}", flush=True)
    return [seen.get(n, timeout) for n in want]


def prefect_database_env(kind: str) -> tuple[dict[str, str], object | None]:
    """Server settings for Prefect's database, and the local PostgreSQL to stop afterwards."""
    if kind == "sqlite":
        return {}, None
    import psycopg
    from psycopg.conninfo import conninfo_to_dict

    # Prefect's migrations need the pg_trgm extension: the distribution's server (with contrib)
    # has it, the embedded pgserver build does not.
    pg = start_local_postgres(None, method="initdb")
    with psycopg.connect(pg.dsn, autocommit=True) as conn:
        conn.execute("CREATE DATABASE prefect")
    info = conninfo_to_dict(pg.dsn)
    host = info.get("host") or "127.0.0.1"
    where = f"?host={host}" if host.startswith("/") else ""
    netloc = "" if host.startswith("/") else f"{host}:{info.get('port', 5432)}"
    url = f"postgresql+asyncpg://{info.get('user', 'postgres')}@{netloc}/prefect{where}"
    return {"PREFECT_API_DATABASE_CONNECTION_URL": url}, pg


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prefect-db", choices=["postgres", "sqlite"], default="postgres")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="eveflow-bench-"))
    emulator = EmulatorThread()
    url = emulator.start()
    kubeconfig = write_kubeconfig(url, tmp / "kubeconfig")
    print(f"starting Prefect (database: {args.prefect_db}) ...", flush=True)
    db_env, prefect_pg = prefect_database_env(args.prefect_db)
    server = start_prefect_server(tmp / "prefect", ui=False,
                                  extra_env={"PREFECT_SERVER_SERVICES_LATE_RUNS_ENABLED": "false", **db_env})
    proxy = CountingProxy(server.api_url)
    operator = None
    try:
        crd = yaml.safe_load((ROOT / "crds" / "evepipelines.eveflow.dev.yaml").read_text())
        api(url, "POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", crd)
        api(url, "POST", "/api/v1/namespaces", {"metadata": {"name": NS}})
        api(url, "POST", f"/api/v1/namespaces/{NS}/secrets",
            {"metadata": {"name": "eveflow-postgres"}, "stringData": {"PGHOST": "db"}})
        time.sleep(0.5)
        health = free_port()
        env = {**os.environ, "KUBECONFIG": str(kubeconfig), "PYTHONUNBUFFERED": "1",
               "EVEFLOW_OPERATOR_PREFECT_API_URL": proxy.api_url,
               "EVEFLOW_OPERATOR_RESYNC_SECONDS": str(RESYNC), "EVEFLOW_OPERATOR_RESYNC_JITTER_SECONDS": "1",
               "EVEFLOW_OPERATOR_RESYNC_IDLE_SECONDS": "1", "EVEFLOW_OPERATOR_METRICS_PORT": "0",
               "EVEFLOW_OPERATOR_HEALTH_PORT": str(health), "EVEFLOW_OPERATOR_NAMESPACES": NS}
        log = open(tmp / "operator.log", "w")
        operator = subprocess.Popen([str(Path(sys.executable).parent / "eveflow"), "operator"], env=env,
                                    stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                if urllib.request.urlopen(f"http://127.0.0.1:{health}/healthz", timeout=1).status == 200:
                    break
            except OSError:
                time.sleep(0.1)
        singles = []
        for i in range(5):
            singles += apply_and_time(url, [pipeline(f"single-{i}", f"single-pool-{i}")], 30)
        p50_1 = statistics.median(singles)
        print(f"1 CR: apply->Ready {['%.2f' % s for s in singles]} p50={p50_1:.2f}s", flush=True)

        many = [pipeline(f"many-{i:03d}", f"pool-{i % 10}") for i in range(100)]
        times = apply_and_time(url, many, 180)
        p50_100 = statistics.median(times)
        print(f"100 CRs: p50={p50_100:.2f}s max={max(times):.2f}s", flush=True)

        time.sleep(RESYNC)  # let the last passes settle
        proxy.reset()
        time.sleep(3 * RESYNC + 1)
        idle_writes = proxy.write_count
        print(f"idle over 3 resync periods ({3 * RESYNC:.0f}s): {idle_writes} Prefect writes, "
              f"{len(proxy.reads) + len(proxy.filter_reads)} reads", flush=True)
        rss = psutil.Process(operator.pid).memory_info().rss / 2**20
        print(f"operator RSS with 105 CRs: {rss:.0f} MiB", flush=True)
        print(f"RESULT ready_p50_1={p50_1:.2f} ready_p50_100={p50_100:.2f} idle_writes={idle_writes} "
              f"rss_mb_100={rss:.0f}", flush=True)
    finally:
        if operator is not None:
            operator.terminate()
            try:
                operator.wait(15)
            except subprocess.TimeoutExpired:
                operator.kill()
        proxy.close()
        server.stop()
        if prefect_pg is not None:
            prefect_pg.stop()
        emulator.stop()


if __name__ == "__main__":
    main()
