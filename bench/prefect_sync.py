"""What syncing new pipelines costs a Prefect server: requests by route, and CPU seconds.

Measured in CPU seconds and request counts, not wall time, so that a shared, noisy machine gives
the same figures. One real ``prefect server`` on PostgreSQL (as ``bench/operator.py`` runs it),
the tests' counting proxy in front of it, and ``sync_pipeline`` (what every operator pass runs)
called for N new pipelines of ``examples/pipeline.yaml`` (ten pools, as the operator bench),
``--concurrency`` at a time. Then, per new pipeline:

- the requests of a fresh sync and of an in-sync resync, by method and route;
- the CPU seconds of the Prefect server (process tree) and of PostgreSQL during the syncs
  ("requests"), and during the ``--settle`` seconds after, when only the server's background
  services run ("background": the scheduler creating the new deployments' runs, events);
- the scheduled flow runs the server made for them.

``--profile`` also samples the server with py-spy (``--py-spy PATH``) over both phases and
prints where its CPU went (API routes vs services), from the stacks.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter
from contextlib import ExitStack
from pathlib import Path

import httpx
import psutil
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from eveflow_etl.orchestration.server import start_prefect_server  # noqa: E402
from eveflow_etl.orchestration.sync import sync_pipeline  # noqa: E402
from eveflow_etl.orchestration.types import PrefectConnection  # noqa: E402
from eveflow_etl.spec import parse_pipeline  # noqa: E402
from tests.fixtures.prefect import CountingProxy  # noqa: E402

def _operator_bench():
    # bench/operator.py by path: `operator` is also a standard-library module's name.
    spec = importlib.util.spec_from_file_location("bench_operator", ROOT / "bench" / "operator.py")
    module = sys.modules["bench_operator"] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tree_cpu(pid: int) -> float:
    """CPU seconds of a process, its live descendants and the children it has reaped."""
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0
    total = 0.0
    for proc in procs:
        try:
            t = proc.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += t.user + t.system + t.children_user + t.children_system
    return total


def postmaster_pid(data_dir: Path) -> int:
    return int((next(data_dir.rglob("postmaster.pid"))).read_text().split()[0])


def pipeline(name: str, pool: str):
    doc = yaml.safe_load((ROOT / "examples" / "pipeline.yaml").read_text())
    doc["metadata"] = {"name": name, "namespace": "bench"}
    doc["spec"]["workPool"]["name"] = pool
    return parse_pipeline(doc)


async def sync_all(pipelines: list, conn: PrefectConnection, concurrency: int) -> list:
    slots = asyncio.Semaphore(concurrency)

    async def one(p):
        async with slots:
            return await sync_pipeline(p, conn, namespace="bench")

    return await asyncio.gather(*(one(p) for p in pipelines))


def scheduled_runs(api_url: str) -> int:
    return int(httpx.post(f"{api_url}/flow_runs/count", json={
        "flow_runs": {"state": {"type": {"any_": ["SCHEDULED"]}}}}, timeout=60).json())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pipelines", type=int, default=40)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--settle", type=float, default=40.0,
                        help="seconds of background work measured after the syncs")
    parser.add_argument("--server-env", action="append", default=[], metavar="NAME=VALUE",
                        help="an extra Prefect server setting (repeatable)")
    parser.add_argument("--sweep", default="", metavar="C1,C2,...",
                        help="then sync --pipelines new ones more at each of these concurrencies (the operator's "
                             "max_concurrent_syncs): pipelines per wall second, and how busy the server was")
    parser.add_argument("--profile", action="store_true", help="sample the server with py-spy")
    parser.add_argument("--py-spy", default="py-spy")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="eveflow-prefect-sync-"))
    with ExitStack() as stack:
        db_env, pg = _operator_bench().prefect_database_env("postgres", stack)
        extra = {"PREFECT_SERVER_SERVICES_LATE_RUNS_ENABLED": "false", **db_env,
                 **dict(item.split("=", 1) for item in args.server_env)}
        server = start_prefect_server(tmp / "prefect", ui=False, extra_env=extra)
        stack.callback(server.stop)
        proxy = CountingProxy(server.api_url)
        stack.callback(proxy.close)
        conn = PrefectConnection(proxy.api_url)
        pg_pid = postmaster_pid(pg.data_dir)

        def cpu() -> tuple[float, float]:
            return tree_cpu(server.process.pid), tree_cpu(pg_pid)

        # Warm-up: the pools exist before the measured pipelines (as after the operator's first
        # minutes), and the first start-up work of the server is over.
        pools = [f"pool-{i}" for i in range(10)]
        asyncio.run(sync_all([pipeline(f"warm-{i}", pool) for i, pool in enumerate(pools)], conn, 10))
        time.sleep(args.settle)
        quiet_start, quiet = time.monotonic(), cpu()
        time.sleep(10)
        idle_rate = [(b - a) / (time.monotonic() - quiet_start) for a, b in zip(quiet, cpu())]

        spy = None
        if args.profile:
            spy = subprocess.Popen([args.py_spy, "record", "-p", str(server.process.pid), "--subprocesses",
                                    "--format", "raw", "-r", "50", "-o", str(tmp / "profile.txt")],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(2)
        names = {f"b-{i:04d}" for i in range(args.pipelines)}
        pipelines = [pipeline(name, pools[i % len(pools)]) for i, name in enumerate(sorted(names))]
        runs_before = scheduled_runs(server.api_url)
        proxy.reset()
        before, started = cpu(), time.monotonic()
        results = asyncio.run(sync_all(pipelines, conn, args.concurrency))
        synced, sync_seconds = cpu(), time.monotonic() - started
        fresh = proxy.routes()
        assert all(r.writes for r in results)
        time.sleep(args.settle)
        settled = cpu()
        runs_after = scheduled_runs(server.api_url)
        if spy is not None:
            spy.send_signal(2)
            spy.wait(30)
        proxy.reset()
        resync_before = cpu()
        again = asyncio.run(sync_all(pipelines, conn, args.concurrency))
        resync_after = cpu()
        resync = proxy.routes()
        assert not any(r.writes for r in again), [r.actions for r in again if r.writes]
        sweep = []
        for concurrency in [int(c) for c in args.sweep.split(",") if c]:
            batch = [pipeline(f"c{concurrency}-{i:04d}", pools[i % len(pools)]) for i in range(args.pipelines)]
            time.sleep(10)  # the previous batch's scheduled runs are made
            start_cpu, start = cpu()[0], time.monotonic()
            asyncio.run(sync_all(batch, conn, concurrency))
            wall, used = time.monotonic() - start, cpu()[0] - start_cpu
            sweep.append(f"  {concurrency:3d} at a time: {args.pipelines / wall:5.2f} pipelines/s, server CPU "
                         f"{used / args.pipelines:.3f} s per pipeline, busy {100 * used / wall:3.0f}% of the wall time")
            print(sweep[-1], flush=True)

    n = args.pipelines
    print(f"\n{n} new pipelines, {args.concurrency} at a time, {sync_seconds:.1f} s wall (noisy, not a figure)")
    print(f"requests per fresh sync: {sum(fresh.values()) / n:.2f}")
    for key, count in sorted(fresh.items()):
        print(f"  {count / n:6.2f}  {key}")
    print(f"requests per in-sync resync: {sum(resync.values()) / n:.2f}")
    for key, count in sorted(resync.items()):
        print(f"  {count / n:6.2f}  {key}")
    idle = [rate * args.settle for rate in idle_rate]
    print(f"idle CPU (server, postgres) per {args.settle:.0f} s: {idle[0]:.2f} s, {idle[1]:.2f} s")
    during = [b - a for a, b in zip(before, synced)]
    after = [b - a - i for a, b, i in zip(synced, settled, idle)]
    resynced = [b - a for a, b in zip(resync_before, resync_after)]
    print(f"CPU s per new pipeline, server/postgres: requests {during[0] / n:.3f}/{during[1] / n:.3f}, "
          f"background after (idle subtracted) {after[0] / n:.3f}/{after[1] / n:.3f}; "
          f"in-sync resync {resynced[0] / n:.3f}/{resynced[1] / n:.3f}")
    print(f"scheduled runs made per new pipeline: {(runs_after - runs_before) / n:.1f}")
    if sweep:
        print("concurrency sweep (wall time: compare the rows with each other, within one run):")
        print("\n".join(sweep))
    if args.profile:
        print_profile(tmp / "profile.txt")
    print(f"RESULT requests_fresh={sum(fresh.values()) / n:.2f} requests_resync={sum(resync.values()) / n:.2f} "
          f"server_cpu_requests={during[0] / n:.3f} server_cpu_background={after[0] / n:.3f} "
          f"pg_cpu={(during[1] + after[1]) / n:.3f} runs_per_pipeline={(runs_after - runs_before) / n:.1f}")


# Leaf frames of a thread that waits (py-spy's own idle detection misses them in a container).
_IDLE_LEAVES = ("Condition.wait", "EpollSelector.select", "_worker", "Queue.get", "Event.wait")
_SERVER_CODE = re.compile(r"^(\S+) \((?:.*/)?prefect/server/(api|services|events/services|models)/(\w+)\.py")
_LIBRARIES = ("sqlalchemy", "asyncpg", "pydantic", "jsonschema", "fastapi/encoders", "starlette", "orjson",
              "prefect/server/utilities/schemas", "prefect/server/schemas", "prefect/utilities", "docket")


def print_profile(path: Path, top: int = 20) -> None:
    """The server's busy samples by what it was doing: the API handler or background service on
    the stack, and the libraries the time went to."""
    if not path.exists():
        print("py-spy wrote no profile (ptrace not permitted?)")
        return
    doing: Counter = Counter()
    libraries: Counter = Counter()
    busy = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")[1:]
        if not frames or frames[-1].split(" (")[0] in _IDLE_LEAVES:
            continue
        n = int(count)
        busy += n
        what = "other (event loop, middleware, server start-up)"
        for frame in frames:
            m = _SERVER_CODE.match(frame)
            if m and m.group(2) != "models":
                what = f"{m.group(2)}/{m.group(3)}.{m.group(1)}"
                break
        doing[what] += n
        for library in _LIBRARIES:
            if any(f"{library}" in frame for frame in frames):
                libraries[library] += n
    print(f"py-spy: {busy} busy samples of the server")
    for what, n in doing.most_common(top):
        print(f"  {100 * n / busy:5.1f}%  {what}")
    print("  ... of which on the stack:", ", ".join(f"{k} {100 * n / busy:.0f}%" for k, n in libraries.most_common()))


if __name__ == "__main__":
    main()
