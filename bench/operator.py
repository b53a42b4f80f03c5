"""Operator benchmark: apply -> Ready latency (1, 100 and 1000 CRs), idle API and Prefect traffic, RSS.

One real `eveflow operator` subprocess and one real local Prefect server (on PostgreSQL, the
embedded one, as in any production Prefect install; `--prefect-db sqlite` uses Prefect's SQLite
default, which serialises every write) behind the tests' counting proxy, first against the real
control plane (kube-apiserver + etcd + controller-manager + scheduler + kwok nodes, built by
tests/tools/build-control-plane.sh; the operator runs as the chart's ServiceAccount), then against
the Kubernetes API emulator for comparison (`--clusters` picks). Each run applies 5 single
pipelines one after another, then 100 at once, then (real control plane) 1000 at once; Ready is
seen through a watch. After the last batch it idles a minute (resync 300 s, as the chart) and
counts the operator's API requests (audit log / emulator record) and Prefect writes.
Last line, from the real control plane:
RESULT ready_p50_1=<s> ready_p50_100=<s> ready_p50_1000=<s> idle_writes=<n> rss_mb_1000=<m>
"""

from __future__ import annotations

import argparse
import json
import os
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import psutil
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from eveflow_etl.localpg import LocalServer, start_local_postgres  # noqa: E402
from eveflow_etl.orchestration.server import free_port, start_prefect_server  # noqa: E402
from tests.fixtures.prefect import CountingProxy  # noqa: E402

# The chart's defaults: every pipeline re-read every 300 s, spread over 30 s. (A 5 s resync, as
# this bench once used, makes 1,000 pipelines ask for 200 passes a second: the passes queue for
# the Prefect sync slots and the creations queue behind them.)
RESYNC = 300.0
JITTER = 30.0
IDLE_WINDOW = 60.0
NS = "bench"
EVP = f"/apis/eveflow.dev/v1alpha1/namespaces/{NS}/evepipelines"


@dataclass
class Api:
    """Plain HTTPS/HTTP calls to an API server, authenticated as the kubeconfig's user."""

    server: str
    headers: dict[str, str]
    context: ssl.SSLContext | None

    @classmethod
    def from_kubeconfig(cls, path: Path, tmp: Path) -> Api:
        config = yaml.safe_load(path.read_text())
        context_name = config.get("current-context") or config["contexts"][0]["name"]
        ctx = next(c["context"] for c in config["contexts"] if c["name"] == context_name)
        cluster = next(c["cluster"] for c in config["clusters"] if c["name"] == ctx["cluster"])
        user = next((u["user"] for u in config.get("users", []) if u["name"] == ctx.get("user")), {})
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if user.get("token"):
            headers["Authorization"] = f"Bearer {user['token']}"
        if user.get("as"):
            headers["Impersonate-User"] = user["as"]
        if not cluster["server"].startswith("https"):
            return cls(cluster["server"], headers, None)
        sslctx = ssl.create_default_context()
        ca = _file(cluster, "certificate-authority", tmp / "ca.crt")
        if ca:
            sslctx.load_verify_locations(ca)
        if cluster.get("insecure-skip-tls-verify"):
            sslctx.check_hostname, sslctx.verify_mode = False, ssl.CERT_NONE
        cert = _file(user, "client-certificate", tmp / "client.crt")
        if cert:
            sslctx.load_cert_chain(cert, _file(user, "client-key", tmp / "client.key"))
        return cls(cluster["server"], headers, sslctx)

    def open(self, method: str, path: str, body: object = None, timeout: float = 60):
        req = urllib.request.Request(self.server + path, method=method, headers=self.headers,
                                     data=None if body is None else json.dumps(body).encode())
        return urllib.request.urlopen(req, timeout=timeout, context=self.context)

    def call(self, method: str, path: str, body: object = None) -> tuple[int, dict]:
        try:
            with self.open(method, path, body) as r:
                return r.status, json.loads(r.read() or b"null")
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"null")


def _file(entry: dict, key: str, out: Path) -> str | None:
    """A kubeconfig credential as a file path (inline *-data written to `out`, mode 600)."""
    if entry.get(key):
        return entry[key]
    if entry.get(f"{key}-data"):
        import base64

        out.write_bytes(base64.b64decode(entry[f"{key}-data"]))
        out.chmod(0o600)
        return str(out)
    return None


class ReadyWatch:
    """Watches the bench namespace's EvePipelines and notes when each first turns Ready=True."""

    def __init__(self, api: Api) -> None:
        self.api = api
        self.first_ready: dict[str, float] = {}
        self._stop = threading.Event()
        self._lock = threading.Lock()
        deadline = time.monotonic() + 60
        while True:  # a new CRD's storage answers 429 for a moment
            status, listing = api.call("GET", EVP)
            if status == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert status == 200, listing
        self._rv = listing["metadata"]["resourceVersion"]
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                with self.api.open("GET", f"{EVP}?watch=1&allowWatchBookmarks=true&timeoutSeconds=60"
                                          f"&resourceVersion={self._rv}", timeout=90) as stream:
                    for line in stream:
                        self._event(json.loads(line))
                        if self._stop.is_set():
                            return
            except (OSError, ValueError):
                time.sleep(0.2)

    def _event(self, event: dict) -> None:
        obj = event.get("object") or {}
        self._rv = obj.get("metadata", {}).get("resourceVersion", self._rv)
        if event.get("type") not in ("ADDED", "MODIFIED"):
            return
        for c in (obj.get("status") or {}).get("conditions") or []:
            if c.get("type") == "Ready" and c.get("status") == "True":
                with self._lock:
                    self.first_ready.setdefault(obj["metadata"]["name"], time.monotonic())

    def ready_at(self, name: str) -> float | None:
        with self._lock:
            return self.first_ready.get(name)

    def stop(self) -> None:
        self._stop.set()


def pipeline(name: str, pool: str) -> dict:
    doc = yaml.safe_load((ROOT / "examples" / "pipeline.yaml").read_text())
    doc["metadata"] = {"name": name, "namespace": NS}
    doc["spec"]["workPool"]["name"] = pool
    return doc


def apply_and_time(api: Api, watch: ReadyWatch, docs: list[dict], timeout: float) -> tuple[list[float], int]:
    """Seconds from the start of the batch's creation to each pipeline's first Ready=True (the
    timeout for those not Ready by then), and how many those were."""
    start = time.monotonic()
    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(lambda d: api.call("POST", EVP, d), docs))
    refused = [body for status, body in results if status != 201]
    assert not refused, refused[:2]
    names = [d["metadata"]["name"] for d in docs]
    while time.monotonic() - start < timeout and any(watch.ready_at(n) is None for n in names):
        time.sleep(0.05)
    missing = [n for n in names if watch.ready_at(n) is None]
    if missing:
        print(f"  not Ready after {timeout:.0f}s: {len(missing)} of {len(names)}", flush=True)
    return [(watch.ready_at(n) or start + timeout) - start for n in names], len(missing)


# The processes whose CPU a batch costs, by command name (PostgreSQL: Prefect's database).
CPU_NAMES = ("prefect", "postgres", "eveflow", "kube-apiserver", "etcd", "kube-controller-manager",
             "kube-scheduler", "kwok")


def cpu_by_name() -> Counter:
    """CPU seconds (user + system) used so far by every live process, summed by command name.
    Differences between two calls are what a batch cost: a figure that a busy machine does not
    distort the way it distorts wall time."""
    seconds: Counter = Counter()
    for proc in psutil.process_iter(["name", "cpu_times"]):
        name, times = proc.info["name"] or "", proc.info["cpu_times"]
        group = next((n for n in CPU_NAMES if name.startswith(n[:15])), None)
        if group and times is not None:
            seconds[group] += times.user + times.system
    return seconds


def p95(values: list[float]) -> float:
    return sorted(values)[max(0, round(0.95 * len(values)) - 1)]


@dataclass
class Figures:
    ready: dict[int, list[float]] = field(default_factory=dict)
    timed_out: dict[int, int] = field(default_factory=dict)  # size -> pipelines not Ready in time
    idle_writes: int = 0
    idle_reads: int = 0
    idle_api_requests: int = 0
    idle_seconds: float = 0.0
    pipelines: int = 0
    rss_mb: float = 0.0


@dataclass
class Cluster:
    """What a run needs from a cluster: an admin kubeconfig, the operator's kubeconfig, a mark in
    its request record and the count of the operator's API requests after a mark, and teardown."""

    name: str
    admin_kubeconfig: Path
    operator_kubeconfig: Path
    mark: Callable[[], object]
    operator_requests_since: Callable[[object], list[str]]  # "verb resource[/sub]" per request
    stop: Callable[[], None]


def emulator_cluster(tmp: Path) -> Cluster:
    from tests.harness.kube_emulator import EmulatorThread, write_kubeconfig

    emulator = EmulatorThread()
    url = emulator.start()
    kubeconfig = write_kubeconfig(url, tmp / "kubeconfig")
    crd = yaml.safe_load((ROOT / "crds" / "evepipelines.eveflow.dev.yaml").read_text())
    Api.from_kubeconfig(kubeconfig, tmp).call("POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", crd)
    time.sleep(0.5)

    def operator_requests_since(t: object) -> list[str]:
        # Everything but the bench's own calls (urllib) is the operator's.
        return [f"{r['verb']} {r['resource']}{'/' + r['subresource'] if r['subresource'] else ''}"
                for r in list(emulator.emulator.requests)
                if r["time"] >= t and "Python-urllib" not in r["user_agent"]]

    return Cluster("emulator", kubeconfig, kubeconfig, time.time, operator_requests_since, emulator.stop)


def real_cluster(tmp: Path, instant_kubelet: bool) -> Cluster:
    """The real control plane (tests/fixtures/control_plane.py); the operator runs as the chart's
    ServiceAccount with the chart's RBAC, and its requests are counted in the audit log."""
    from tests.fixtures.control_plane import control_plane_dir, start_control_plane
    from tests.operator.e2e import chart_rbac

    home = control_plane_dir()
    if instant_kubelet:
        # Pod stages with delays (kwok's general ones wait 1-5 s at each of create, init and ready,
        # like a kubelet pulling and starting an image) would blur the operator's and the control
        # plane's own time.
        stages = [doc for doc in yaml.safe_load_all((home / "kwok-stages.yaml").read_text()) if doc]
        for stage in stages:
            if stage["spec"]["resourceRef"]["kind"] == "Pod":  # nodes keep their heartbeat pace
                stage["spec"].pop("delay", None)
        home = tmp / "control-plane-instant"
        (home).mkdir()
        (home / "bin").symlink_to(control_plane_dir() / "bin")
        (home / "kwok-stages.yaml").write_text(yaml.safe_dump_all(stages))
    cp = start_control_plane(tmp, home)
    try:
        # The session's two kwok nodes hold 110 pods each; 1,105 workers need room.
        for i in range(2):
            status, body = cp.api("POST", "/api/v1/nodes", {
                "apiVersion": "v1", "kind": "Node",
                "metadata": {"name": f"bench-node-{i}", "annotations": {"kwok.x-k8s.io/node": "fake"},
                             "labels": {"kubernetes.io/hostname": f"bench-node-{i}", "kubernetes.io/os": "linux",
                                        "type": "kwok"}},
                "status": {"allocatable": {"cpu": "500", "memory": "2Ti", "pods": "800"},
                           "capacity": {"cpu": "500", "memory": "2Ti", "pods": "800"}}})
            assert status == 201, body
        cp.kubectl("apply", "-f", str(ROOT / "crds"))
        cp.kubectl("wait", "--for=condition=Established", "crd/evepipelines.eveflow.dev", "--timeout=60s")
        user, _ = chart_rbac(cp, "eveflow", "eveflow-system")
        identity = cp.kubeconfig_for("eveflow-system", user.rsplit(":", 1)[1])
    except BaseException:
        cp.stop()
        raise
    def operator_requests_since(offset: object) -> list[str]:
        out = []
        for event in cp.audit(offset, user=user):
            ref = event.get("objectRef") or {}
            sub = f"/{ref['subresource']}" if ref.get("subresource") else ""
            out.append(f"{event['verb']} {ref.get('resource', event.get('requestURI'))}{sub}")
        return out

    return Cluster("real", cp.kubeconfig, identity, cp.audit_offset, operator_requests_since, cp.stop)


def run(cluster: Cluster, tmp: Path, prefect_api_url: str, proxy: CountingProxy, sizes: list[int]) -> Figures:
    api = Api.from_kubeconfig(cluster.admin_kubeconfig, tmp)
    api.call("POST", "/api/v1/namespaces", {"metadata": {"name": NS}})
    api.call("POST", f"/api/v1/namespaces/{NS}/secrets",
             {"metadata": {"name": "eveflow-postgres"}, "stringData": {"PGHOST": "db"}})
    health = free_port()
    env = {**os.environ, "KUBECONFIG": str(cluster.operator_kubeconfig), "PYTHONUNBUFFERED": "1",
           "EVEFLOW_OPERATOR_PREFECT_API_URL": prefect_api_url,
           "EVEFLOW_OPERATOR_RESYNC_SECONDS": str(RESYNC), "EVEFLOW_OPERATOR_RESYNC_JITTER_SECONDS": str(JITTER),
           "EVEFLOW_OPERATOR_RESYNC_IDLE_SECONDS": "1", "EVEFLOW_OPERATOR_METRICS_PORT": "0",
           "EVEFLOW_OPERATOR_HEALTH_PORT": str(health)}
    # Cluster-wide, as the chart installs it by default (its ClusterRole has no `list namespaces`:
    # with EVEFLOW_OPERATOR_NAMESPACES set, kopf spends ~55 s retrying that list at start-up).
    figures = Figures()
    watch = ReadyWatch(api)
    with open(tmp / f"operator-{cluster.name}.log", "w") as log:
        operator = subprocess.Popen([str(Path(sys.executable).parent / "eveflow"), "operator"], env=env,
                                    stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                if urllib.request.urlopen(f"http://127.0.0.1:{health}/healthz", timeout=1).status == 200:
                    break
            except OSError:
                time.sleep(0.1)
        for size in sizes:
            proxy.reset()
            cpu_before = cpu_by_name()
            batch_mark = cluster.mark()
            if size == 1:
                times, missing = [], 0
                for i in range(5):
                    one, late = apply_and_time(api, watch, [pipeline(f"single-{i}", f"single-pool-{i}")], 60)
                    times, missing = times + one, missing + late
            else:
                times, missing = apply_and_time(api, watch, [pipeline(f"b{size}-{i:04d}", f"pool-{i % 10}")
                                                    for i in range(size)], max(180, size * 0.72))
            figures.ready[size] = times
            figures.timed_out[size] = missing
            routes, count = proxy.routes(), len(times)
            print(f"  [{cluster.name}] {size} CR(s): apply->Ready p50={statistics.median(times):.2f}s "
                  f"p95={p95(times):.2f}s max={max(times):.2f}s; Prefect requests per pipeline "
                  f"{sum(routes.values()) / count:.1f}: " + ", ".join(
                      f"{key} x{n / count:.1f}" for key, n in routes.most_common(12)), flush=True)
            requests = Counter(cluster.operator_requests_since(batch_mark))
            print(f"  [{cluster.name}] {size} CR(s): operator API requests per pipeline until the last Ready "
                  f"{sum(requests.values()) / count:.1f}: " + ", ".join(
                      f"{key} x{n / count:.1f}" for key, n in requests.most_common(10)), flush=True)
            cpu = cpu_by_name()
            cpu.subtract(cpu_before)
            print(f"  [{cluster.name}] {size} CR(s): CPU seconds per pipeline until the last Ready: "
                  f"{sum(cpu.values()) / count:.3f} = " + ", ".join(
                      f"{n} {v / count:.3f}" for n, v in cpu.most_common() if v > 0), flush=True)
        figures.pipelines = 5 * (1 in sizes) + sum(s for s in sizes if s > 1)

        # Idle means every pipeline Ready and its last pass written (bounded: a backlog is reported).
        backlog_deadline = time.monotonic() + 300
        while time.monotonic() < backlog_deadline and len(watch.first_ready) < figures.pipelines:
            time.sleep(1)
        if len(watch.first_ready) < figures.pipelines:
            print(f"  [{cluster.name}] {figures.pipelines - len(watch.first_ready)} pipelines still not Ready: "
                  "the idle minute below includes their passes", flush=True)
        time.sleep(10)
        proxy.reset()
        since = cluster.mark()
        idle_start = time.monotonic()
        time.sleep(IDLE_WINDOW)
        figures.idle_seconds = time.monotonic() - idle_start
        figures.idle_writes = proxy.write_count
        figures.idle_reads = len(proxy.reads) + len(proxy.filter_reads)
        requests = cluster.operator_requests_since(since)
        figures.idle_api_requests = len(requests)
        figures.rss_mb = psutil.Process(operator.pid).memory_info().rss / 2**20
        per_minute = figures.idle_api_requests / figures.pipelines / (figures.idle_seconds / 60)
        print(f"  [{cluster.name}] idle {figures.idle_seconds:.0f}s (resync {RESYNC:.0f}s) with "
              f"{figures.pipelines} pipelines: {figures.idle_writes} Prefect writes, {figures.idle_reads} "
              f"Prefect reads, {figures.idle_api_requests} operator API requests "
              f"({per_minute:.2f} per pipeline per idle minute); "
              f"operator RSS {figures.rss_mb:.0f} MiB", flush=True)
        print("  idle API requests by kind: " + ", ".join(f"{k} x{n}" for k, n in Counter(requests).most_common(8)),
              flush=True)
        return figures
    finally:
        watch.stop()
        operator.terminate()
        try:
            operator.wait(15)
        except subprocess.TimeoutExpired:
            operator.kill()


def prefect_database_env(kind: str, stack: ExitStack) -> tuple[dict[str, str], LocalServer | None]:
    """Server settings for Prefect's database, and the local PostgreSQL (stopped by `stack`)."""
    if kind == "sqlite":
        return {}, None
    import psycopg
    from psycopg.conninfo import conninfo_to_dict

    # Prefect's migrations need the pg_trgm extension: the distribution's server (with contrib)
    # has it, the embedded pgserver build does not.
    pg = start_local_postgres(None, method="initdb")
    stack.callback(pg.stop)
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
    parser.add_argument("--clusters", default="real,emulator", help="comma-separated: real, emulator")
    parser.add_argument("--real-sizes", default="1,100,1000")
    parser.add_argument("--emulator-sizes", default="1,100")
    parser.add_argument("--kubelet", choices=["instant", "as-built"], default="instant",
                        help="simulated nodes: pods Ready at once, or with the delays of the control plane's "
                             "kwok-stages.yaml (kwok's general stages: 1-5 s at each of create, init, ready)")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="eveflow-bench-"))
    results: dict[str, Figures] = {}
    with ExitStack() as stack:
        print(f"starting Prefect (database: {args.prefect_db}) ...", flush=True)
        db_env, _ = prefect_database_env(args.prefect_db, stack)
        server = start_prefect_server(tmp / "prefect", ui=False,
                                      extra_env={"PREFECT_SERVER_SERVICES_LATE_RUNS_ENABLED": "false", **db_env})
        stack.callback(server.stop)
        for name in args.clusters.split(","):
            # One Prefect server for both runs: each run's pipelines are new names on new pools.
            proxy = CountingProxy(server.api_url)
            stack.callback(proxy.close)
            started = time.monotonic()
            (tmp / name).mkdir(parents=True)
            cluster = (real_cluster(tmp / name, args.kubelet == "instant") if name == "real"
                       else emulator_cluster(tmp / name))
            print(f"{name}: cluster up in {time.monotonic() - started:.1f}s", flush=True)
            try:
                sizes = [int(s) for s in (args.real_sizes if name == "real" else args.emulator_sizes).split(",")]
                results[name] = run(cluster, tmp / name, proxy.api_url, proxy, sizes)
            finally:
                cluster.stop()
    print("\n              " + "".join(f"{n:>22}" for n in results))
    for size in (1, 100, 1000):
        for label, fn in (("p50", statistics.median), ("p95", p95)):
            row = [f"{fn(f.ready[size]):.2f}s" if size in f.ready else "-" for f in results.values()]
            print(f"ready {label} {size:>4} " + "".join(f"{c:>22}" for c in row))
    for label, fn in (("idle Prefect writes", lambda f: f.idle_writes),
                      ("idle API req/pl/min",
                       lambda f: f"{f.idle_api_requests / f.pipelines / (f.idle_seconds / 60):.2f}"),
                      ("operator RSS MiB", lambda f: f"{f.rss_mb:.0f} ({f.pipelines} CRs)")):
        print(f"{label:<19}" + "".join(f"{fn(f)!s:>22}" for f in results.values()))
    real = results.get("real")
    if real is not None:
        med = {s: statistics.median(real.ready[s]) if s in real.ready else float("nan") for s in (1, 100, 1000)}
        for size, missing in real.timed_out.items():
            if missing:
                print(f"note: {missing} of {size} not Ready before the timeout, counted at the timeout: "
                      f"ready_p50_{size} and its p95 are lower bounds", flush=True)
        print(f"RESULT ready_p50_1={med[1]:.2f} ready_p50_100={med[100]:.2f} ready_p50_1000={med[1000]:.2f} "
              f"idle_writes={real.idle_writes} rss_mb_1000={real.rss_mb:.0f}", flush=True)


if __name__ == "__main__":
    main()
