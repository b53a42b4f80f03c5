"""The loader against a real PostgreSQL: idempotence, updates, balance, atomicity, quarantine."""

from __future__ import annotations

import threading

import psycopg
import pytest

from eveflow_etl.errors import ConfigError, DestinationError
from eveflow_etl.etl_run import run_etl
from eveflow_etl.settings import EtlSettings

from tests.etl.helpers import Batch, history_frame, orders_frame

pytestmark = pytest.mark.postgres
SETTINGS = EtlSettings(chunk_rows=1000)


def _run(dsn, batches, source="esi-history", **kw):
    regions = sorted({b.region_id for b in batches}) if isinstance(batches, list) else [10000002]
    return run_etl(source, regions, None, dsn, schema="eve", settings=SETTINGS, batches=batches, **kw)


def _count(dsn, query):
    with psycopg.connect(dsn) as conn:
        return conn.execute(query).fetchone()[0]


def test_same_input_twice_then_changed_rows(pg_dsn):
    frame = history_frame(2500)
    first = _run(pg_dsn, [Batch("esi-history", 10000002, frame)])
    assert (first.totals.inserted, first.totals.updated, first.totals.fetched) == (2500, 0, 2500)

    second = _run(pg_dsn, [Batch("esi-history", 10000002, frame)])
    assert (second.totals.inserted, second.totals.updated, second.totals.unchanged) == (0, 0, 2500)

    changed = frame.copy()
    changed.loc[:9, "volume"] += 1
    third = _run(pg_dsn, [Batch("esi-history", 10000002, changed)])
    assert (third.totals.inserted, third.totals.updated, third.totals.unchanged) == (0, 10, 2490)
    for report in (first, second, third):
        assert report.totals.balanced and report.status == "succeeded"
    assert _count(pg_dsn, "SELECT count(*) FROM eve.market_history") == 2500
    assert _count(pg_dsn, "SELECT sum(volume) FROM eve.market_history") == int(changed["volume"].sum())
    assert _count(pg_dsn, "SELECT count(*) FROM eve.etl_runs WHERE status = 'succeeded'") == 3


def test_bad_rows_land_in_quarantine_with_reason(pg_dsn):
    frame = history_frame(20)
    frame.loc[0, "average"] = -5.0
    frame.loc[1, "highest"] = 0.5  # highest < average
    frame.loc[2, "date"] = "2999-01-01"
    frame.loc[3, "date"] = "yesterday-ish"
    report = _run(pg_dsn, [Batch("esi-history", 10000002, frame)])
    t = report.totals
    assert (t.fetched, t.inserted, t.quarantined) == (20, 16, 4) and t.balanced
    with psycopg.connect(pg_dsn) as conn:
        rows = conn.execute("SELECT reason, raw FROM eve.market_history_quarantine ORDER BY id").fetchall()
        ledger = conn.execute("SELECT fetched, inserted, quarantined FROM eve.etl_runs").fetchone()
    reasons = " | ".join(r[0] for r in rows)
    assert "average" in reasons and "highest>=average>=lowest" in reasons
    assert "date_not_in_future" in reasons and "not a date: 'yesterday-ish'" in reasons
    assert rows[0][1]["average"] == -5.0  # the raw row is kept as JSON
    assert ledger == (20, 16, 4)


def test_mokaam_sentinels_are_quarantined_and_extra_columns_ignored(pg_dsn):
    import pandas as pd

    frame = pd.DataFrame({
        "region_id": 10000002, "type_id": [34, 35, 36, 37, 38],
        "last_data": ["2025-05-01", "Null", "ERROR: 404", None, "Itemid not found"],
        "vol_week": [1.0, 2, 3, 4, 5], "spread_week": 1.0, "brand_new_field": "x",
        "_raw_error": [None, None, None, None, None],
    })
    frame.loc[4, "_raw_error"] = "value is not an object"
    report = _run(pg_dsn, [Batch("mokaam", 10000002, frame)], source="mokaam")
    assert (report.totals.inserted, report.totals.quarantined) == (1, 4)
    with psycopg.connect(pg_dsn) as conn:
        reasons = [r[0] for r in conn.execute("SELECT reason FROM eve.market_aggregates_quarantine ORDER BY id")]
    assert any("'Null'" in r for r in reasons) and any("ERROR: 404" in r for r in reasons)
    assert any("missing" in r for r in reasons) and any("value is not an object" in r for r in reasons)


def _kill_loaders(dsn) -> int:
    with psycopg.connect(dsn, autocommit=True) as killer:
        return len(killer.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid() AND backend_type = 'client backend'").fetchall())


def _ledger(dsn):
    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT status, fetched, inserted, error FROM eve.etl_runs ORDER BY started_at DESC "
                            "LIMIT 1").fetchone()


def test_no_transaction_is_open_while_the_source_is_pulled(pg_dsn):
    # Issue 13 item 2: a pull of hours held one transaction open ("idle in transaction") for its
    # whole length. Now nothing of the run is open on the server while the source still pulls.
    seen = []

    def batches():
        for s in range(3):
            yield Batch("esi-history", 10000002, history_frame(500, seed=s).assign(type_id=lambda f, s=s: f.type_id + 100 * s))
            with psycopg.connect(pg_dsn, autocommit=True) as conn:
                seen.extend(conn.execute(
                    "SELECT state FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() "
                    "AND backend_type = 'client backend' AND xact_start IS NOT NULL").fetchall())

    report = _run(pg_dsn, batches())
    assert seen == []
    assert report.totals.inserted == 1500


def test_killed_connection_keeps_committed_batches_and_the_ledger_counts_them(pg_dsn):
    frames = [history_frame(1500, seed=s).assign(type_id=lambda f, s=s: f.type_id + 1000 * s) for s in range(3)]

    def kill_after_first(region, counts):
        if counts.inserted and _count(pg_dsn, "SELECT count(*) FROM eve.market_history") == 1500:
            assert _kill_loaders(pg_dsn) >= 1

    with pytest.raises(DestinationError) as err:
        _run(pg_dsn, [Batch("esi-history", 10000002, f) for f in frames], progress=kill_after_first)
    assert "\n" not in str(err.value)
    # The first batch committed (its own short transaction); the ledger says so, exactly.
    assert _count(pg_dsn, "SELECT count(*) FROM eve.market_history") == 1500
    status, fetched, inserted, error = _ledger(pg_dsn)
    assert (status, fetched, inserted) == ("failed", 4500, 1500) and error

    rerun = _run(pg_dsn, [Batch("esi-history", 10000002, f) for f in frames])
    assert (rerun.totals.inserted, rerun.totals.updated, rerun.totals.unchanged) == (3000, 0, 1500)
    assert _count(pg_dsn, "SELECT count(*) FROM eve.market_history") == 4500


def test_backend_killed_inside_a_load_transaction_rolls_back_only_that_batch(pg_dsn):
    """The loader is caught mid-transaction (its batch staged, waiting on a lock) and killed."""
    killed = []

    def kill_when_waiting():
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            for _ in range(3000):
                pids = conn.execute("SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                                    "AND wait_event_type = 'Lock' AND xact_start IS NOT NULL").fetchall()
                if pids:
                    killed.extend(conn.execute("SELECT pg_terminate_backend(%s)", pids[0]).fetchall())
                    return
                threading.Event().wait(0.01)

    def progress(region, counts):
        if killed or _count(pg_dsn, "SELECT count(*) FROM eve.market_history") != 1000:
            return
        locker = psycopg.connect(pg_dsn)
        locker.execute("LOCK TABLE eve.market_history IN ACCESS EXCLUSIVE MODE")
        thread = threading.Thread(target=kill_when_waiting)
        thread.start()
        # Let go once the loader is dead; it is blocked behind this lock in its next batch.
        threading.Thread(target=lambda: (thread.join(), locker.rollback(), locker.close())).start()

    batches = [Batch("esi-history", 10000002, history_frame(1000, seed=s).assign(type_id=lambda f, s=s: f.type_id + 100 * s))
               for s in range(4)]
    with pytest.raises(DestinationError):
        _run(pg_dsn, batches, progress=progress)
    assert killed == [(True,)]
    status, fetched, inserted, _ = _ledger(pg_dsn)
    assert _count(pg_dsn, "SELECT count(*) FROM eve.market_history") == 1000
    assert (status, fetched, inserted) == ("failed", 4000, 1000)


def test_orders_snapshot_inserts_updates_and_closes(pg_dsn):
    first = _run(pg_dsn, [Batch("esi-orders", 10000002, orders_frame([1, 2, 3, 4]))], source="esi-orders")
    assert (first.totals.inserted, first.totals.closed) == (4, 0)
    snap = orders_frame([2, 3, 4, 5])
    snap.loc[snap.order_id == 3, "volume_remain"] = 10
    second = _run(pg_dsn, [Batch("esi-orders", 10000002, snap)], source="esi-orders")
    t = second.totals
    assert (t.inserted, t.updated, t.unchanged, t.closed) == (1, 3, 0, 1) or (t.inserted, t.closed) == (1, 1)
    with psycopg.connect(pg_dsn) as conn:
        closed = conn.execute("SELECT order_id FROM eve.market_orders WHERE closed_at IS NOT NULL").fetchall()
        daily = conn.execute(
            "SELECT type_id, buy_orders, sell_orders, best_sell FROM eve.market_orders_daily ORDER BY type_id"
        ).fetchall()
    assert closed == [(1,)]
    assert sum(d[1] + d[2] for d in daily) == 4
    # An unchanged snapshot changes nothing and closes nothing.
    third = _run(pg_dsn, [Batch("esi-orders", 10000002, snap)], source="esi-orders")
    assert (third.totals.inserted, third.totals.updated, third.totals.closed) == (0, 0, 0)


def test_orders_snapshot_with_types_closes_only_those_types(pg_dsn):
    _run(pg_dsn, [Batch("esi-orders", 10000002, orders_frame([1, 2, 3, 4]))], source="esi-orders")
    only_34 = orders_frame([1, 2, 3, 4])
    only_34 = only_34[only_34.type_id == 34].iloc[:1]  # order 1 (type 34) stays; order 3 (type 34) gone
    report = _run(pg_dsn, [Batch("esi-orders", 10000002, only_34, types=(34,))], source="esi-orders")
    assert report.totals.closed == 1
    assert _count(pg_dsn, "SELECT count(*) FROM eve.market_orders WHERE closed_at IS NULL") == 3


def test_incomplete_orders_snapshot_loads_nothing(pg_dsn):
    from eveflow_etl.errors import SourceError

    with pytest.raises(SourceError):
        _run(pg_dsn, [Batch("esi-orders", 10000002, orders_frame([1, 2]), snapshot_complete=False)],
             source="esi-orders")
    assert _count(pg_dsn, "SELECT count(*) FROM eve.market_orders") == 0


def test_failed_load_closes_the_source_at_once(pg_dsn):
    """The source (fetch threads, HTTP session) ends with the run, not when the error is forgotten."""
    from eveflow_etl.errors import SourceError

    closed = threading.Event()

    def batches():
        try:
            yield Batch("esi-orders", 10000002, orders_frame([1, 2]), snapshot_complete=False)
            yield Batch("esi-orders", 10000043, orders_frame([3, 4]))
        finally:
            closed.set()

    try:
        _run(pg_dsn, batches(), source="esi-orders")
    except SourceError:  # the error (and its traceback) still held, as a retrying caller does
        assert closed.is_set()
    else:
        pytest.fail("the incomplete snapshot did not fail the run")


def test_failed_run_ledger_does_not_count_rolled_back_rows(pg_dsn):
    from eveflow_etl.errors import SourceError

    frame = orders_frame([1, 2, 3])
    frame.loc[0, "range"] = "galaxy"  # quarantined
    with pytest.raises(SourceError):
        _run(pg_dsn, [Batch("esi-orders", 10000002, frame),
                      Batch("esi-orders", 10000043, orders_frame([4], region=10000043), snapshot_complete=False)],
             source="esi-orders")
    assert _count(pg_dsn, "SELECT count(*) FROM eve.market_orders") == 0
    assert _count(pg_dsn, "SELECT count(*) FROM eve.market_orders_quarantine") == 0
    with psycopg.connect(pg_dsn) as conn:
        ledger = conn.execute("SELECT status, fetched, inserted, updated, unchanged, quarantined, closed "
                              "FROM eve.etl_runs").fetchone()
    assert ledger == ("failed", 3, 0, 0, 0, 0, 0)


@pytest.mark.parametrize("schema,table", [("Eve", "t"), ("eve", "drop table x;--"), ("eve", "a" * 60), ("1x", "t")])
def test_invalid_names_refused_before_any_sql(schema, table):
    # The DSN points nowhere: a ConfigError (not a connection error) proves nothing was tried.
    with pytest.raises(ConfigError):
        run_etl("esi-history", [1], None, "postgresql://nobody@127.0.0.1:1/x", schema=schema, table=table,
                settings=SETTINGS, batches=[])


def test_unreachable_database_is_one_line_without_password():
    with pytest.raises(DestinationError) as err:
        run_etl("esi-history", [1], None, "postgresql://u:hunter2@127.0.0.1:1/x", settings=SETTINGS, batches=[])
    message = str(err.value)
    assert "127.0.0.1:1" in message and "hunter2" not in message and "\n" not in message


def test_destination_profiles():
    from eveflow_etl.destinations import describe, resolve_dsn

    crunchy = resolve_dsn("crunchy", "postgresql://app:pw@p.abc.db.example:5432/main?sslmode=disable", SETTINGS)
    assert "sslmode=require" in crunchy
    env = {"SNOWFLAKE_POSTGRES_HOST": "sf.example", "SNOWFLAKE_POSTGRES_USER": "u",
           "SNOWFLAKE_POSTGRES_PASSWORD": "topsecret", "SNOWFLAKE_POSTGRES_DATABASE": "eve"}
    snow = resolve_dsn("snowflake", None, SETTINGS, env)
    assert "sslmode=require" in snow and describe(snow) == "sf.example:5432/eve"
    with pytest.raises(ConfigError, match="SNOWFLAKE_POSTGRES_PASSWORD"):
        resolve_dsn("snowflake", None, SETTINGS, {k: v for k, v in env.items() if "PASSWORD" not in k})
    with pytest.raises(ConfigError, match="unknown --profile"):
        resolve_dsn("oracle", None, SETTINGS)


def test_a_run_abandoned_at_its_budget_never_commits_after_it_is_reported(pg_dsn):
    """Issue 13 item 4: the flow closes the gate, then reports the region timed out; a region
    thread still running (here: its source still pulling) must not commit anything afterwards."""
    from eveflow_etl.load.gate import CommitGate, RunAbandoned

    gate = CommitGate()

    def batches():
        yield Batch("esi-history", 10000002, history_frame(500))
        gate.close()  # the flow gave up on this region while it was still pulling
        yield Batch("esi-history", 10000002, history_frame(500, seed=2).assign(type_id=lambda f: f.type_id + 50))

    with pytest.raises(RunAbandoned):
        run_etl("esi-history", [10000002], None, pg_dsn, schema="eve", settings=SETTINGS, batches=batches(), gate=gate)
    assert _count(pg_dsn, "SELECT count(*) FROM eve.market_history") == 0
    assert _ledger(pg_dsn)[:3] == ("failed", 1000, 0)


def test_closing_the_gate_waits_for_a_commit_in_progress():
    from eveflow_etl.load.gate import CommitGate, RunAbandoned

    gate, inside, order = CommitGate(), threading.Event(), []

    def committer():
        with gate.commit("run"):
            inside.set()
            threading.Event().wait(0.1)  # a commit taking a moment; close() must wait for it
            order.append("committed")
    thread = threading.Thread(target=committer)
    thread.start()
    inside.wait()
    gate.close()
    order.append("closed")
    thread.join()
    assert order == ["committed", "closed"]
    with pytest.raises(RunAbandoned), gate.commit("run"):
        pass
