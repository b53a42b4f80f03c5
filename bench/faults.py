"""The fault matrix: every scenario loses nothing and duplicates nothing.

    python bench/faults.py [--only NAME ...] [--list]

Real parts: the local ESI / Mokaam / EVE Ref server (its fault knobs), a real PostgreSQL cluster
(system ``initdb``/``pg_ctl``, so it can be restarted mid-run; the embedded server otherwise),
the real ``eveflow`` CLI for the worker that is killed mid-run, a real ``prefect server``
behind a fault proxy for the Prefect scenarios (``faults_prefect.py``), and the real ``eveflow
operator`` against the Kubernetes API emulator with its fault knobs (``faults_kube.py``).

Each scenario runs on two fresh databases in lockstep: ``got`` takes a clean baseline load, then
the faulted run (which may fail: that is allowed), then retries as a scheduler would, with the
fault gone, until a run succeeds; ``ref`` takes the same baseline and one clean load of the same
server state. Every target table of both is then compared row by row (row counts, a checksum of
the rows, and the multiset difference): ``rows_lost`` are rows of ``ref`` missing from ``got``,
``rows_duplicated`` rows of ``got`` beyond ``ref``. Quarantine tables are append-only logs (a
retried run quarantines the same bad rows again), so they are compared as sets. The last line:
``RESULT scenarios=<n> passed=<n> rows_lost=0 rows_duplicated=0``.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "etl"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import psycopg  # noqa: E402
from psycopg import sql  # noqa: E402

from eveflow_etl.devservers.esi_server import EsiServerConfig, serve_in_thread  # noqa: E402
from eveflow_etl.errors import EveflowError  # noqa: E402
from eveflow_etl.etl_run import run_etl  # noqa: E402
from eveflow_etl.settings import EtlSettings  # noqa: E402

FORGE, DOMAIN = 10000002, 10000043
REGIONS = [FORGE, DOMAIN]
VOLATILE = {"first_seen_at", "changed_at", "closed_at", "snapshot_at", "quarantined_at", "run_id", "id"}


@dataclass(frozen=True)
class Job:
    source: str
    table: str | None = None


ORDERS, HISTORY, MOKAAM, EVEREF = Job("esi-orders"), Job("esi-history"), Job("mokaam"), Job("everef", "everef_history")


@dataclass
class Ctx:
    """What a scenario hook may touch."""

    pg: "Postgres"
    server: object
    got_dsn: str
    work: Path
    notes: list[str] = field(default_factory=list)


@dataclass
class Scenario:
    name: str
    what: str
    jobs: tuple[Job, ...]
    faults: tuple[dict, ...] = ()
    settings: dict = field(default_factory=dict)  # overrides for the faulted run only
    # Called with the context; returns a progress callback for the faulted run (PostgreSQL faults).
    hook: Callable[[Ctx], Callable | None] | None = None
    # Replaces the faulted run altogether (a worker process killed mid-run).
    runner: Callable[[Ctx, Job], None] | None = None
    must_fail: bool = False  # the faulted run has to fail (the guard under test is a refusal)


# --- PostgreSQL ---------------------------------------------------------------------------------

class Postgres:
    """A real cluster this script owns: databases per scenario, and a restart on demand."""

    def __init__(self) -> None:
        from eveflow_etl.localpg import start_local_postgres

        try:
            self.server = start_local_postgres(None, method="initdb", fast_unsafe=True)
        except Exception:  # noqa: BLE001 - no system PostgreSQL: the embedded one (no restart scenario)
            self.server = start_local_postgres(None, fast_unsafe=True)
        self.dsn = self.server.dsn
        self._n = 0

    @property
    def can_restart(self) -> bool:
        return self.server.method == "initdb"

    def restart(self) -> None:
        from eveflow_etl.localpg import _as_postgres, _pg_bin

        # -l: the new postmaster must not inherit our pipes (we would wait for their EOF forever).
        subprocess.run(_as_postgres([_pg_bin("pg_ctl"), "-D", str(self.server.data_dir), "-m", "fast", "-w",
                                     "-t", "60", "-l", str(self.server.data_dir / "server.log"), "restart"]),
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=90)

    def fresh(self, label: str) -> str:
        from psycopg.conninfo import make_conninfo

        self._n += 1
        name = f"f{self._n}_{label}"[:60]
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(name)))
        return make_conninfo(self.dsn, dbname=name)

    def drop(self, dsn: str) -> None:
        from psycopg.conninfo import conninfo_to_dict

        name = conninfo_to_dict(dsn)["dbname"]
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))

    def stop(self) -> None:
        self.server.stop()


def kill_loaders(dsn: str) -> int:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return len(conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid() AND backend_type = 'client backend'").fetchall())


# --- loading and comparing ------------------------------------------------------------------------

def settings_for(server, data_dir: Path, **overrides) -> EtlSettings:
    values = dict(data_dir=data_dir, esi_base_url=server.esi_base_url, mokaam_base_url=server.mokaam_base_url,
                  everef_base_url=server.everef_base_url, esi_backoff_seconds=0.01, mokaam_backoff_seconds=0.01,
                  esi_rate_per_second=100, esi_max_retries=4, esi_timeout_seconds=5, esi_error_limit_floor=0,
                  contact="faults@eveflow.invalid", chunk_rows=1000)
    values.update(overrides)
    return EtlSettings(**values)


def load(dsn: str, server, data_dir: Path, job: Job, progress=None, **overrides):
    import datetime as dt

    types = server.state.types[:6] if job.source == "esi-history" else None
    day = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=2)
    return run_etl(job.source, REGIONS, types, dsn, table=job.table, pipeline_name="faults",
                   settings=settings_for(server, data_dir, **overrides), progress=progress, day=day)


def tables(dsn: str) -> list[str]:
    with psycopg.connect(dsn) as conn:
        return [r[0] for r in conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'eve' "
            "AND table_name <> 'etl_runs' ORDER BY 1")]


def rows_of(dsn: str, table: str) -> list[tuple]:
    with psycopg.connect(dsn) as conn:
        cols = [r[0] for r in conn.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = 'eve' AND table_name = %s "
            "ORDER BY ordinal_position", (table,))]
        keep = [sql.Identifier(c) for c in cols if c not in VOLATILE]
        if "closed_at" in cols:
            keep.append(sql.SQL("(closed_at IS NULL)"))
        query = sql.SQL("SELECT {} FROM {}").format(sql.SQL(", ").join(keep), sql.Identifier("eve", table))
        return [tuple(map(str, r)) for r in conn.execute(query)]


def checksum(rows: list[tuple]) -> str:
    digest = hashlib.blake2b(digest_size=8)
    for row in sorted(rows):
        digest.update(repr(row).encode())
    return digest.hexdigest()


@dataclass
class Outcome:
    name: str
    passed: bool
    lost: int
    duplicated: int
    detail: str


def compare(name: str, got_dsn: str, ref_dsn: str, notes: list[str]) -> Outcome:
    lost = duplicated = 0
    parts = []
    names = sorted(set(tables(got_dsn)) | set(tables(ref_dsn)))
    for table in names:
        got = rows_of(got_dsn, table) if table in tables(got_dsn) else []
        ref = rows_of(ref_dsn, table) if table in tables(ref_dsn) else []
        if table.endswith("_quarantine"):
            got, ref = sorted(set(got)), sorted(set(ref))
        g, r = Counter(got), Counter(ref)
        t_lost, t_dup = sum((r - g).values()), sum((g - r).values())
        lost, duplicated = lost + t_lost, duplicated + t_dup
        same = checksum(got) == checksum(ref)
        parts.append(f"{table}={len(got)}/{len(ref)}{'' if same else ' checksum differs'}")
    ok = lost == 0 and duplicated == 0
    return Outcome(name, ok, lost, duplicated, "; ".join(parts + notes))


def run_scenario(sc: Scenario, pg: Postgres, base: Path) -> Outcome:
    cfg = EsiServerConfig(types_per_region=20, orders_per_region=2500, orders_expires_seconds=0,
                          history_days=120, error_window_seconds=2)
    work = base / sc.name
    with serve_in_thread(cfg) as server:
        got, ref = pg.fresh("got"), pg.fresh("ref")
        ctx = Ctx(pg, server, got, work)
        try:
            for job in sc.jobs:  # the baseline: yesterday's successful runs
                load(got, server, work / "got", job)
                load(ref, server, work / "ref", job)
            failures = 0
            for job in sc.jobs:
                for rule in sc.faults:
                    server.admin.fault(**rule)
                try:
                    if sc.runner is not None:
                        sc.runner(ctx, job)
                    else:
                        progress = sc.hook(ctx) if sc.hook else None
                        load(got, server, work / "got", job, progress=progress, **sc.settings)
                except EveflowError as exc:
                    failures += 1
                    ctx.notes.append(f"faulted run failed as allowed: {str(exc)[:90]}")
                finally:
                    server.admin.clear_faults()
                for attempt in range(3):  # the scheduler's retries, fault gone
                    try:
                        load(got, server, work / "got", job)
                        break
                    except EveflowError as exc:
                        ctx.notes.append(f"retry {attempt + 1} failed: {str(exc)[:90]}")
                try:  # the clean run refuses what the guard refuses, too (then both keep the old state)
                    load(ref, server, work / "ref", job)
                except EveflowError as exc:
                    ctx.notes.append(f"clean run refused too: {str(exc)[:90]}")
            outcome = compare(sc.name, got, ref, ctx.notes)
            if sc.must_fail and failures == 0:
                outcome.passed = False
                outcome.detail += "; the faulted run should have been refused"
            return outcome
        finally:
            pg.drop(got)
            pg.drop(ref)


# --- PostgreSQL and process faults ----------------------------------------------------------------

def kill_after_first_batch(ctx: Ctx):
    done = []

    def progress(region, counts):
        if not done:
            done.append(kill_loaders(ctx.got_dsn))
    return progress


def kill_mid_upsert(ctx: Ctx):
    """The loader caught inside a transaction (staged, blocked on a lock) and killed."""
    done = []

    def killer(locker):
        with psycopg.connect(ctx.got_dsn, autocommit=True) as conn:
            for _ in range(3000):
                pids = conn.execute("SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                                    "AND wait_event_type = 'Lock' AND xact_start IS NOT NULL").fetchall()
                if pids:
                    conn.execute("SELECT pg_terminate_backend(%s)", pids[0])
                    break
                time.sleep(0.01)
        locker.rollback()
        locker.close()

    def progress(region, counts):
        if done:
            return
        locker = psycopg.connect(ctx.got_dsn)
        locker.execute("LOCK TABLE eve.market_orders, eve.market_history IN ACCESS EXCLUSIVE MODE")
        done.append(threading.Thread(target=killer, args=(locker,), daemon=True))
        done[0].start()
    return progress


def restart_between_regions(ctx: Ctx):
    done = []

    def progress(region, counts):
        if not done:
            done.append(region)
            ctx.pg.restart()
    return progress


def hold_lock(ctx: Ctx):
    """Another session holds the target table: the loader's lock_timeout ends its wait."""
    locker = psycopg.connect(ctx.got_dsn)
    locker.execute("LOCK TABLE eve.market_history IN ACCESS EXCLUSIVE MODE")
    threading.Timer(5.0, lambda: (locker.rollback(), locker.close())).start()
    return None


def worker_killed_mid_run(ctx: Ctx, job: Job) -> None:
    """The real CLI as a worker's flow run would start it, SIGKILLed once its first batch is in."""
    env = {**os.environ, "EVEFLOW_DSN": ctx.got_dsn, "EVEFLOW_DATA_DIR": str(ctx.work / "worker"),
           "EVEFLOW_CONTACT": "faults@eveflow.invalid", "EVEFLOW_ESI_RATE_PER_SECOND": "100",
           "EVEFLOW_CHUNK_ROWS": "500", "PYTHONWARNINGS": "ignore"}
    eveflow = str(Path(sys.executable).parent / "eveflow")
    argv = [eveflow, "etl", "run", "--source", job.source, "--regions", ",".join(map(str, REGIONS)),
            "--esi-base-url", ctx.server.esi_base_url]
    if job.source == "esi-history":
        argv += ["--types", ",".join(map(str, ctx.server.state.types[:6]))]
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        with psycopg.connect(ctx.got_dsn, autocommit=True) as conn:
            for _ in range(6000):
                if proc.poll() is not None:
                    break
                running = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                                       "AND pid <> pg_backend_pid() AND xact_start IS NOT NULL").fetchone()[0]
                if running:
                    os.killpg(proc.pid, signal.SIGKILL)
                    ctx.notes.append("worker SIGKILLed inside a load transaction")
                    break
                time.sleep(0.005)
    finally:
        proc.wait(timeout=60)
    if proc.returncode != -signal.SIGKILL:
        ctx.notes.append(f"worker ended by itself (rc {proc.returncode}) before the kill")


def scenarios(pg: Postgres) -> list[Scenario]:
    esi = "/latest/markets/"
    out = [
        Scenario("esi-420-error-limit-storm", "ESI answers 420 (error limit) to a burst", (HISTORY,),
                 ({"path": "/history/", "status": 420, "count": 6,
                   "headers": {"X-ESI-Error-Limit-Reset": "1", "X-ESI-Error-Limit-Remain": "0"}},)),
        Scenario("esi-429-retry-after", "429 with Retry-After: 1", (HISTORY,),
                 ({"path": "/history/", "status": 429, "retry_after": 1, "count": 4},)),
        Scenario("esi-429-retry-after-a-day", "429 with Retry-After: 86400 (refused, run fails, retry loads)",
                 (HISTORY,), ({"path": "/history/", "status": 429, "retry_after": 86400, "count": 1},)),
        Scenario("esi-5xx-burst", "502/503/504 bursts", (HISTORY, ORDERS),
                 ({"path": esi, "status": 502, "count": 2}, {"path": esi, "status": 503, "count": 2},
                  {"path": esi, "status": 504, "count": 2})),
        Scenario("esi-5xx-outage", "every request 503 (retries used up, run fails)", (ORDERS,),
                 ({"path": esi, "status": 503, "count": None},)),
        Scenario("esi-timeouts", "answers slower than the timeout", (HISTORY,),
                 ({"path": "/history/", "delay": 1.5, "count": 3},), {"esi_timeout_seconds": 1}),
        Scenario("esi-trickled-body", "body trickled past the total timeout", (HISTORY,),
                 ({"path": "/history/", "trickle": 0.3, "count": 2},), {"esi_timeout_seconds": 1}),
        Scenario("esi-truncated-json", "valid length, JSON cut in half", (HISTORY, ORDERS),
                 ({"path": esi, "truncate": "json", "count": 3},)),
        Scenario("esi-connection-cut", "connection closed mid-body", (ORDERS,),
                 ({"path": "/orders/", "truncate": "connection", "count": 3},)),
        Scenario("esi-oversized-body", "a body larger than allowed (refused, retry loads)", (HISTORY,),
                 ({"path": "/history/", "body_bytes": 3 * 2**20, "count": 1},), {"http_max_body_bytes": 2**20}),
        Scenario("esi-ratelimit-0-0s", "X-Ratelimit-Limit: 0/0s on every answer", (HISTORY, ORDERS),
                 ({"path": esi, "headers": {"X-Ratelimit-Limit": "0/0s"}, "count": None},)),
        Scenario("orders-x-pages-changes-mid-pull", "the book grows (X-Pages changes) while pulled", (ORDERS,),
                 ({"path": "/orders/", "region": FORGE, "page": 2, "tick": True, "tick_orders": 3400},)),
        Scenario("orders-book-rebuilt-mid-pull", "the book is rebuilt while pulled", (ORDERS,),
                 ({"path": "/orders/", "region": FORGE, "page": 3, "tick": True},)),
        Scenario("orders-x-pages-missing", "page 1 without X-Pages (pull fails, retry loads)", (ORDERS,),
                 # A rebuild first: a new ETag, so the page comes whole (a 304 keeps the cached X-Pages).
                 ({"path": "/orders/", "page": 1, "tick": True, "headers": {"X-Pages": None}, "count": 1},),
                 must_fail=True),
        Scenario("orders-x-pages-absurd", "X-Pages: 100000 (pull fails, retry loads)", (ORDERS,),
                 ({"path": "/orders/", "page": 1, "headers": {"X-Pages": "100000"}, "count": 1},), must_fail=True),
        Scenario("orders-book-emptied", "70 % of a book vanishes at once (close guard refuses, book kept)",
                 (ORDERS,), ({"path": "/orders/", "region": FORGE, "page": 1, "tick": True, "tick_orders": 700},),
                 must_fail=True),
        Scenario("mokaam-403-rate-limited", "Mokaam answers 403 (its rate limit)", (MOKAAM,),
                 ({"path": "/API/market", "status": 403, "count": 2},)),
        Scenario("everef-5xx-and-cut", "EVE Ref 503 then a cut download", (EVEREF,),
                 ({"path": "/market-history/", "status": 503, "count": 1},
                  {"path": ".csv.bz2", "truncate": "connection", "count": 1})),
        Scenario("pg-backend-killed-after-a-commit", "loader's backend killed between two batches",
                 (HISTORY, ORDERS), hook=kill_after_first_batch),
        Scenario("pg-backend-killed-mid-upsert", "loader killed inside its transaction (staged, waiting)",
                 (HISTORY, ORDERS), hook=kill_mid_upsert),
        Scenario("pg-statement-timeout", "every statement past a 1 ms statement_timeout", (HISTORY,),
                 settings={"pg_statement_timeout_seconds": 0.001}, must_fail=True),
        Scenario("pg-lock-timeout", "the target locked by another session past lock_timeout", (HISTORY,),
                 settings={"pg_lock_timeout_seconds": 0.2}, hook=hold_lock, must_fail=True),
        Scenario("worker-killed-mid-run", "the eveflow process SIGKILLed mid-load, run retried",
                 (HISTORY, ORDERS), runner=worker_killed_mid_run),
    ]
    if pg.can_restart:
        out.append(Scenario("pg-restarted-between-regions", "PostgreSQL restarted after the first region",
                            (ORDERS,), hook=restart_between_regions))
    return out


def self_check(pg: Postgres, base: Path) -> None:
    """The comparison itself must see a lost, a duplicated and a changed row (else PASS means nothing)."""
    with serve_in_thread(EsiServerConfig(types_per_region=20, orders_per_region=1200)) as server:
        got, ref = pg.fresh("chk_got"), pg.fresh("chk_ref")
        try:
            for dsn, where in ((got, "got"), (ref, "ref")):
                load(dsn, server, base / "check" / where, ORDERS)
            assert compare("check", got, ref, []).passed
            with psycopg.connect(got, autocommit=True) as conn:
                conn.execute("DELETE FROM eve.market_orders WHERE order_id = (SELECT min(order_id) FROM eve.market_orders)")
                conn.execute("UPDATE eve.market_orders SET price = price + 1 WHERE order_id = "
                             "(SELECT max(order_id) FROM eve.market_orders)")
                conn.execute("INSERT INTO eve.market_orders_daily SELECT region_id, type_id, date - 1, best_buy, "
                             "best_sell, buy_p5, sell_p5, buy_volume, sell_volume, buy_orders, sell_orders, snapshot_at "
                             "FROM eve.market_orders_daily LIMIT 1")
            out = compare("check", got, ref, [])
            assert (out.lost, out.duplicated) == (2, 2), out
        finally:
            pg.drop(got)
            pg.drop(ref)
    print("self-check: the comparison sees a deleted, a changed and an extra row")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", help="scenario names to run")
    parser.add_argument("--list", action="store_true")
    parser.add_argument("--no-prefect", action="store_true", help="skip the Prefect scenarios (no prefect server)")
    args = parser.parse_args()
    pg = Postgres()
    base = Path(tempfile.mkdtemp(prefix="eveflow-faults-"))
    results: list[Outcome] = []
    try:
        chosen = [s for s in scenarios(pg) if not args.only or s.name in args.only]
        if args.list:
            import faults_prefect

            import faults_kube

            for s in [*chosen, *faults_prefect.SCENARIOS, *faults_kube.SCENARIOS]:
                print(f"{s.name}: {s.what}")
            return
        self_check(pg, base)
        for sc in chosen:
            started = time.monotonic()
            try:
                outcome = run_scenario(sc, pg, base)
            except Exception as exc:  # noqa: BLE001 - a scenario that breaks the bench fails, named
                outcome = Outcome(sc.name, False, 0, 0, f"bench error: {type(exc).__name__}: {exc}")
            results.append(outcome)
            print(f"{'PASS' if outcome.passed else 'FAIL'} {sc.name} ({time.monotonic() - started:.1f}s) "
                  f"lost={outcome.lost} duplicated={outcome.duplicated} — {sc.what}: {outcome.detail}", flush=True)
        if not args.no_prefect:
            import faults_prefect

            def report(name, what, ok, lost, dup, detail, seconds):
                if args.only and name not in args.only:
                    return
                results.append(Outcome(name, ok, lost, dup, detail))
                print(f"{'PASS' if ok else 'FAIL'} {name} ({seconds:.1f}s) lost={lost} duplicated={dup} — "
                      f"{what}: {detail}", flush=True)

            import faults_kube

            wanted = [s for s in faults_prefect.SCENARIOS if not args.only or s.name in args.only]
            kube_wanted = [s for s in faults_kube.SCENARIOS if not args.only or s.name in args.only]
            if wanted or kube_wanted:
                faults_prefect.SCENARIOS[:] = wanted
                faults_prefect.run_all(base, report, after=lambda url: faults_kube.run_all(
                    base, url, report, args.only) if kube_wanted else None)
    finally:
        pg.stop()
        shutil.rmtree(base, ignore_errors=True)
    print(f"RESULT scenarios={len(results)} passed={sum(r.passed for r in results)} "
          f"rows_lost={sum(r.lost for r in results)} rows_duplicated={sum(r.duplicated for r in results)}")
    if not all(r.passed for r in results):
        sys.exit(1)


if __name__ == "__main__":
    main()
