"""``eveflow etl run`` / ``eveflow csv`` as a user runs them: a subprocess, exit codes, one-line errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

EVEFLOW = str(Path(sys.executable).parent / "eveflow")


def _eveflow(*args, env=None, timeout=120):
    full_env = {**os.environ, "PYTHONWARNINGS": "ignore", **(env or {})}
    return subprocess.run([EVEFLOW, *args], capture_output=True, text=True, timeout=timeout, env=full_env)


def test_unreachable_database_is_one_line_and_nonzero():
    # The DSN holding a password comes from the environment (in argv it would add a warning line).
    proc = _eveflow("etl", "run", "--source", "esi-history", "--regions", "10000002",
                    env={"EVEFLOW_DSN": "postgresql://eve:s3cret@127.0.0.1:1/eve"})
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "127.0.0.1:1" in lines[0] and "s3cret" not in proc.stderr + proc.stdout
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("dsn", [
    "postgresql://eve:s3cr%zzet@127.0.0.1:1/eve",  # a '%' left unencoded in the password
    "postgresql://eve:s3cret@[]/eve",
    "postgresql://eve:s3cret@[::1]x/eve",
])
def test_unparsable_dsn_is_one_line_without_password(dsn):
    proc = _eveflow("etl", "run", "--source", "esi-history", "--regions", "10000002", env={"EVEFLOW_DSN": dsn})
    assert proc.returncode == 2 and "invalid --dsn" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and proc.stderr.count("\n") == 1
    assert "s3cr" not in proc.stderr + proc.stdout


def test_invalid_table_name_refused():
    proc = _eveflow("etl", "run", "--source", "mokaam", "--regions", "10000002", "--table", "Robert'); DROP",
                    "--dsn", "postgresql://nobody@127.0.0.1:1/x")
    assert proc.returncode == 2 and "invalid table name" in proc.stderr


def test_bad_regions_option(capsys):
    from eveflow_etl.cli import run

    assert run(["etl", "run", "--source", "mokaam", "--regions", "forge"]) == 2
    assert "--regions" in capsys.readouterr().err


@pytest.mark.postgres
def test_csv_cli_malformed_file(pg_dsn, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n3\n")
    proc = _eveflow("csv", "load", str(bad), "t", "--schema", "s", "--dsn", pg_dsn)
    assert proc.returncode == 2 and "line 3, column b" in proc.stderr
    from eveflow_etl.cli import run  # the positive path in-process: each subprocess costs seconds

    good = tmp_path / "good.csv"
    good.write_text("a,b\n1,2\n3,4\n")
    assert run(["csv", "load", str(good), "t", "--schema", "s", "--dsn", pg_dsn]) == 0
    out = tmp_path / "out.csv"
    assert run(["csv", "pull", "s.t", "-o", str(out), "--dsn", pg_dsn]) == 0
    assert out.read_text().splitlines() == ["a,b", "1,2", "3,4"]


@pytest.mark.postgres
def test_csv_pull_failure_leaves_no_file(pg_dsn, tmp_path):
    from eveflow_etl.cli import run

    out = tmp_path / "out.csv"
    assert run(["csv", "pull", "s.missing", "-o", str(out), "--dsn", pg_dsn]) == 2
    assert list(tmp_path.iterdir()) == []


@pytest.mark.postgres
def test_cli_run_against_local_esi_server(pg_dsn, esi_server, tmp_path):
    env = {"EVEFLOW_DATA_DIR": str(tmp_path / "data"), "EVEFLOW_ESI_RATE_PER_SECOND": "100",
           "EVEFLOW_CONTACT": "tests@eveflow.invalid"}
    args = ("etl", "run", "--source", "esi-orders", "--regions", "10000002", "--dsn", pg_dsn,
            "--esi-base-url", esi_server.esi_base_url)
    first = _eveflow(*args, env=env)
    assert first.returncode == 0, first.stderr
    assert "total" in first.stdout
    with psycopg.connect(pg_dsn) as conn:
        orders = conn.execute("SELECT count(*) FROM eve.market_orders").fetchone()[0]
        ledger = conn.execute("SELECT status, fetched, inserted FROM eve.etl_runs").fetchall()
    assert orders > 0 and ledger[0][0] == "succeeded" and ledger[0][1] >= ledger[0][2] > 0
