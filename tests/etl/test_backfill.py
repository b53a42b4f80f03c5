"""``eveflow etl backfill`` against the local EVE Ref server and a real PostgreSQL, run as a user
runs it (a subprocess): resumable after a kill, a changed total reloads that day only, a day
missing on the server is reported and the others load, bad dates are refused in one line."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest

EVEFLOW = str(Path(sys.executable).parent / "eveflow")
TODAY = dt.datetime.now(dt.UTC).date()
FIRST = TODAY - dt.timedelta(days=12)
LAST = TODAY - dt.timedelta(days=3)
DAYS = [FIRST + dt.timedelta(days=n) for n in range((LAST - FIRST).days + 1)]  # 10 days


def env_for(server, data_dir) -> dict:
    return {**os.environ, "PYTHONWARNINGS": "ignore", "EVEFLOW_DATA_DIR": str(data_dir),
            "EVEFLOW_EVEREF_BASE_URL": server.everef_base_url, "EVEFLOW_ESI_BACKOFF_SECONDS": "0.01",
            "EVEFLOW_ESI_MAX_RETRIES": "2", "EVEFLOW_CONTACT": "tests@eveflow.invalid"}


def backfill_cmd(dsn, *extra, first=FIRST, last=LAST) -> list[str]:
    return [EVEFLOW, "etl", "backfill", "--source", "everef", "--from", first.isoformat(), "--to", last.isoformat(),
            "--dsn", dsn, *extra]


def backfill(server, dsn, data_dir, *extra, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(backfill_cmd(dsn, *extra, **kw), capture_output=True, text=True, timeout=300,
                          env=env_for(server, data_dir))


def rows(dsn, query, *args):
    with psycopg.connect(dsn) as conn:
        return conn.execute(query, args).fetchall()


def checksum(dsn) -> tuple[int, str]:
    return rows(dsn, "SELECT count(*), md5(string_agg(t::text, '|' ORDER BY region_id, type_id, date)) "
                     "FROM eve.market_history t")[0]


def succeeded_runs(dsn) -> int:
    return rows(dsn, "SELECT count(*) FROM eve.etl_runs WHERE status = 'succeeded'")[0][0]


def fresh_db(pg_server_dsn, name):
    from psycopg import sql
    from psycopg.conninfo import make_conninfo

    with psycopg.connect(pg_server_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(name)))
    return make_conninfo(pg_server_dsn, dbname=name)


@pytest.mark.postgres
def test_resume_after_a_kill_loads_every_day_exactly_once(esi_server_factory, pg_dsn, pg_server_dsn, tmp_path):
    server = esi_server_factory(history_days=30)
    # Reference: one uninterrupted run into its own database.
    ref_dsn = fresh_db(pg_server_dsn, f"ref_{os.getpid()}_{int(time.time())}")
    try:
        done = backfill(server, ref_dsn, tmp_path / "ref", "--jobs", "2", "--executor", "process")
        assert done.returncode == 0, done.stderr
        expected = checksum(ref_dsn)
        assert expected[0] > 0 and succeeded_runs(ref_dsn) == len(DAYS)
    finally:
        with psycopg.connect(pg_server_dsn, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {psycopg.conninfo.conninfo_to_dict(ref_dsn)['dbname']} WITH (FORCE)")

    # The 7th day's file hangs: the backfill commits six days, then is killed (the whole process
    # group, as a crash or an OOM kill would) while the 7th is in flight.
    stuck = DAYS[6].isoformat()
    server.admin.fault(path=f"market-history-{stuck}", delay=60, count=None)
    proc = subprocess.Popen(backfill_cmd(pg_dsn, "--jobs", "1"), env=env_for(server, tmp_path / "a"),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if rows(pg_dsn, "SELECT count(*) FROM eve.everef_days")[0][0] >= 6:
                    break
            except psycopg.Error:
                pass  # tables not created yet
            assert proc.poll() is None, "the backfill ended before it was killed"
            time.sleep(0.1)
        else:
            pytest.fail("the backfill did not load six days")
        time.sleep(0.3)  # let it sit in the hung download
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(30)
    assert rows(pg_dsn, "SELECT count(*) FROM eve.everef_days")[0][0] == 6
    server.admin.clear_faults()

    resumed = backfill(server, pg_dsn, tmp_path / "a", "--jobs", "2")
    assert resumed.returncode == 0, resumed.stderr
    assert "EVE Ref" in resumed.stderr and f"{DAYS[-1]} loaded" in resumed.stderr  # log lines, not a TTY
    # Every day loaded exactly once: six before the kill, four after, none twice.
    assert succeeded_runs(pg_dsn) == len(DAYS)
    per_day = dict(rows(pg_dsn, "SELECT d.day, count(*) FROM eve.everef_days d JOIN eve.etl_runs r "
                                "USING (run_id) WHERE r.status = 'succeeded' GROUP BY d.day"))
    assert per_day == {d: 1 for d in DAYS}
    assert checksum(pg_dsn) == expected
    # And a third run does nothing.
    again = backfill(server, pg_dsn, tmp_path / "a")
    assert again.returncode == 0 and succeeded_runs(pg_dsn) == len(DAYS)


@pytest.mark.postgres
def test_changed_total_reloads_that_day_only(esi_server_factory, pg_dsn, tmp_path):
    server = esi_server_factory(history_days=30)
    first = backfill(server, pg_dsn, tmp_path / "d")
    assert first.returncode == 0, first.stderr
    before = server.admin.stats()["requests"]
    target = DAYS[4].isoformat()
    # EVE Ref rewrote that day: five rows fewer and changed figures, and its total says so.
    server.admin.configure(everef_rewrites={target: 1}, everef_short_rows={target: 5},
                           everef_totals_skew={target: -5})
    second = backfill(server, pg_dsn, tmp_path / "d")
    assert second.returncode == 0, second.stderr
    reloaded = rows(pg_dsn, "SELECT d.day, r.updated, r.inserted FROM eve.everef_days d JOIN eve.etl_runs r "
                            "USING (run_id) WHERE r.started_at > (SELECT min(finished_at) FROM eve.etl_runs) "
                            "AND d.day = %s", DAYS[4])
    assert len(reloaded) == 1 and reloaded[0][1] > 0 and reloaded[0][2] == 0
    assert succeeded_runs(pg_dsn) == len(DAYS) + 1
    events = [path for _, path, _ in server.admin.stats()["events"][before:]]
    assert [p for p in events if "csv.bz2" in p] == [f"/market-history/{DAYS[4].year}/market-history-{target}.csv.bz2"]
    summary = second.stdout
    assert "reloaded" in summary


@pytest.mark.postgres
def test_unverified_day_is_loaded_again_once_its_total_is_published(esi_server_factory, pg_dsn, tmp_path):
    server = esi_server_factory(history_days=30)
    target = DAYS[2].isoformat()
    server.admin.configure(everef_totals_unpublished=[target])
    first = backfill(server, pg_dsn, tmp_path / "d")
    assert first.returncode == 0 and "unverified" in first.stdout
    assert rows(pg_dsn, "SELECT day FROM eve.everef_days WHERE NOT verified") == [(DAYS[2],)]
    server.admin.configure(everef_totals_unpublished=[])
    second = backfill(server, pg_dsn, tmp_path / "d")
    assert second.returncode == 0
    assert rows(pg_dsn, "SELECT count(*) FROM eve.everef_days WHERE NOT verified") == [(0,)]
    assert succeeded_runs(pg_dsn) == len(DAYS) + 1


@pytest.mark.postgres
def test_missing_day_is_reported_and_the_others_load(esi_server_factory, pg_dsn, tmp_path):
    server = esi_server_factory(history_days=30)
    gone, short = DAYS[3], DAYS[5]
    server.admin.fault(path=f"market-history-{gone.isoformat()}", status=404, count=None)
    server.admin.configure(everef_short_rows={short.isoformat(): 3})  # its total still counts them
    proc = backfill(server, pg_dsn, tmp_path / "d", "--jobs", "2")
    # The short day fails (and says why); the missing one is reported; the other eight load.
    assert proc.returncode == 3, proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("error: 1 of 10 days failed")
    assert f"{gone} missing: EVE Ref has no history file for {gone}" in proc.stdout
    assert f"{short} failed" in proc.stdout and "expected" in proc.stdout
    loaded = {d for (d,) in rows(pg_dsn, "SELECT day FROM eve.everef_days")}
    assert loaded == set(DAYS) - {gone, short}
    assert rows(pg_dsn, "SELECT count(*) FROM eve.market_history WHERE date IN (%s, %s)", gone, short) == [(0,)]
    assert rows(pg_dsn, "SELECT count(*) FROM eve.etl_runs WHERE status = 'failed' AND error LIKE %s",
                f"%{short}%") == [(1,)]


@pytest.mark.parametrize("args, message", [
    (["--from", "2026-02-30"], "--from must be a date YYYY-MM-DD, got '2026-02-30'"),
    (["--to", "yesterday"], "--to must be a date YYYY-MM-DD, got 'yesterday'"),
    (["--from", "2025-03-02", "--to", "2025-03-01"], "--from 2025-03-02 is after --to 2025-03-01: swap them"),
    (["--from", "2025-03-02", "--to", (TODAY + dt.timedelta(days=3)).isoformat()], "is not published yet"),
    (["--from", "2025-03-02", "--to", TODAY.isoformat()], "is not published yet"),
    (["--from", "2025-03-02", "--jobs", "0"], "--jobs must be between 1 and 64, got 0"),
    (["--source", "esi-history"], "--source: backfill reads everef"),
])
def test_bad_dates_and_ranges_are_refused_in_one_line(args, message, capsys):
    # In process (the console script's own `run`): the refusal comes before any connection, and
    # a subprocess per case spent ~2 s importing the CLI.
    from eveflow_etl.cli import run

    code = run(["etl", "backfill", *args, "--dsn", "postgresql://nobody@127.0.0.1:1/x",
                "--everef-base-url", "http://127.0.0.1:1"])
    stderr = capsys.readouterr().err
    assert code == 2, stderr
    assert stderr.count("\n") == 1 and message in stderr, stderr


@pytest.mark.postgres
def test_types_all_pulls_every_type_the_region_lists(esi_server_factory, pg_dsn, tmp_path):
    """esi-history with ``--types all``: the region's types come from /markets/{region}/types/
    (two pages here), and every one of them is pulled."""
    server = esi_server_factory(types_per_region=1100, history_days=30)
    env = {**env_for(server, tmp_path / "d"), "EVEFLOW_ESI_BASE_URL": server.esi_base_url,
           "EVEFLOW_ESI_RATE_PER_SECOND": "100"}
    proc = subprocess.run([EVEFLOW, "etl", "run", "--source", "esi-history", "--regions", "10000002", "--types", "all",
                           "--dsn", pg_dsn], capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr
    listed = set(server.state.types)
    assert len(listed) == 1100
    loaded = {t for (t,) in rows(pg_dsn, "SELECT DISTINCT type_id FROM eve.market_history")}
    assert loaded == listed
    events = [path for _, path, _ in server.admin.stats()["events"]]
    assert sum("/markets/10000002/types/" in p for p in events) == 2  # both pages, once each
    # Not on a terminal: log lines with the types done and the ETA the client's pace implies
    # (1,100 requests at 100/s here: 0:11 at the start).
    assert "region 10000002: types 0/1,100, ETA 0:11 at 100 req/s" in proc.stderr, proc.stderr[-2000:]
    assert "region 10000002: types 1,100/1,100, ETA 0:00" in proc.stderr, proc.stderr[-2000:]
    assert "types 110/1,100" in proc.stderr  # every tenth of the way


@pytest.mark.postgres
def test_a_day_partly_loaded_before_gets_exact_counts(esi_server_factory, pg_dsn, tmp_path):
    """The Forge's rows of a day exist (an earlier --regions backfill): the full load of the day
    inserts the other regions' rows and leaves the Forge's unchanged, counted exactly."""
    server = esi_server_factory(history_days=30)
    forge = backfill(server, pg_dsn, tmp_path / "d", "--regions", "10000002", first=DAYS[0], last=DAYS[1])
    assert forge.returncode == 0, forge.stderr
    full = backfill(server, pg_dsn, tmp_path / "d", first=DAYS[0], last=DAYS[1])
    assert full.returncode == 0, full.stderr
    counts = rows(pg_dsn, "SELECT d.day, r.inserted, r.updated, r.unchanged FROM eve.everef_days d JOIN eve.etl_runs r "
                          "USING (run_id) ORDER BY d.day")
    for day, inserted, updated, unchanged in counts:
        in_forge = rows(pg_dsn, "SELECT count(*) FROM eve.market_history WHERE date = %s AND region_id = 10000002",
                        day)[0][0]
        total = rows(pg_dsn, "SELECT count(*) FROM eve.market_history WHERE date = %s", day)[0][0]
        assert (inserted, updated, unchanged) == (total - in_forge, 0, in_forge) and in_forge > 0


def test_rows_dated_another_day_are_quarantined_with_the_reason():
    import pandas as pd

    from eveflow_etl.backfill.prepare import DayTask, _off_day

    task = DayTask(dt.date(2026, 3, 1), "00000000-0000-0000-0000-000000000001", 3, "", None, None)
    frame = pd.DataFrame({"region_id": [1, 1, 1], "type_id": [1, 2, 3],
                          "date": ["2026-03-01", "2026-02-28", "garbage"], "average": [1.0, 1.0, 1.0]})
    kept, off = _off_day(frame, task)
    assert list(kept["type_id"]) == [1, 3]  # an unreadable date is the validator's to quarantine
    assert list(off["reason"]) == ["date 2026-02-28 is not the file's day 2026-03-01"]
