"""Issue 13, item 4: the CLI's smaller safety items, as the user (or the attacker) sees them."""

from __future__ import annotations

import psycopg
import pytest

from eveflow_etl.cli import run

pytestmark = pytest.mark.postgres


def _rows(dsn, query):
    with psycopg.connect(dsn) as conn:
        return conn.execute(query).fetchall()


def test_a_csv_with_a_bare_end_marker_line_loads_every_row(pg_dsn, tmp_path):
    one_column = tmp_path / "names.csv"
    one_column.write_bytes(b"name\nalpha\n\\.\nomega\n")  # "\." is a value here, not the end
    assert run(["csv", "load", str(one_column), "names", "--schema", "s", "--dsn", pg_dsn]) == 0
    assert _rows(pg_dsn, "SELECT name FROM s.names ORDER BY name") == [("\\.",), ("alpha",), ("omega",)]


def test_a_bare_end_marker_in_a_wider_csv_is_an_error_not_a_silent_cut(pg_dsn, tmp_path, capsys):
    two_columns = tmp_path / "t.csv"
    two_columns.write_bytes(b"a,b\n1,2\n\\.\n3,4\n")
    assert run(["csv", "load", str(two_columns), "t", "--schema", "s", "--dsn", pg_dsn]) == 2
    assert "line 3" in capsys.readouterr().err
    assert _rows(pg_dsn, "SELECT count(*) FROM information_schema.tables WHERE table_schema = 's' "
                         "AND table_name = 't'")[0][0] in (0, 1)
    with psycopg.connect(pg_dsn) as conn:
        exists = conn.execute("SELECT to_regclass('s.t')").fetchone()[0]
        assert exists is None or conn.execute("SELECT count(*) FROM s.t").fetchone()[0] == 0


def test_csv_pull_never_writes_through_a_planted_symlink(pg_dsn, tmp_path):
    good = tmp_path / "good.csv"
    good.write_text("a,b\n1,2\n")
    assert run(["csv", "load", str(good), "t", "--schema", "s", "--dsn", pg_dsn]) == 0
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    out = tmp_path / "out.csv"
    (tmp_path / "out.csv.part").symlink_to(victim)  # the name the old code used, planted by another user
    assert run(["csv", "pull", "s.t", "-o", str(out), "--dsn", pg_dsn]) == 0
    assert victim.read_text() == "precious\n"
    assert out.read_text().splitlines() == ["a,b", "1,2"] and not out.is_symlink()


def test_dsn_from_a_file_or_the_environment_and_a_warning_for_a_password_in_argv(pg_dsn, tmp_path, capsys,
                                                                                   monkeypatch):
    good = tmp_path / "good.csv"
    good.write_text("a\n1\n")
    dsn_file = tmp_path / "dsn"
    dsn_file.write_text(pg_dsn + "\n")
    assert run(["csv", "load", str(good), "t1", "--schema", "s", "--dsn-file", str(dsn_file)]) == 0
    monkeypatch.setenv("EVEFLOW_DSN", pg_dsn)
    assert run(["csv", "load", str(good), "t2", "--schema", "s"]) == 0
    assert "warning" not in capsys.readouterr().err
    monkeypatch.delenv("EVEFLOW_DSN")

    secret = "hunter2-sekret"
    argv = ["csv", "load", str(good), "t3", "--schema", "s", "--dsn",
            f"postgresql://eve:{secret}@127.0.0.1:1/db?connect_timeout=1"]
    monkeypatch.setattr("sys.argv", ["eveflow", *argv])
    assert run(argv) != 0  # nothing listens there
    err = capsys.readouterr().err
    assert "--dsn on the command line holds a password" in err and "--dsn-file" in err
    assert secret not in err
