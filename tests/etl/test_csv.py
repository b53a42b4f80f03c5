"""``eveflow csv``: load, upsert, pull against a real PostgreSQL; malformed files write nothing."""

from __future__ import annotations

import psycopg
import pytest

from eveflow_etl.csvtool import load_csv, pull_csv, upsert_csv
from eveflow_etl.errors import ConfigError

pytestmark = pytest.mark.postgres


def _write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return path


def _rows(dsn, query):
    with psycopg.connect(dsn) as conn:
        return conn.execute(query).fetchall()


def test_load_upsert_pull_roundtrip(pg_dsn, tmp_path):
    path = _write(tmp_path, "a.csv", "region_id,type_id,price\n1,34,5.5\n1,35,6.5\n")
    assert load_csv(pg_dsn, path, "s", "prices").rows == 2
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("ALTER TABLE s.prices ADD PRIMARY KEY (region_id, type_id)")
    upd = _write(tmp_path, "b.csv", "region_id,type_id,price\n1,34,5.5\n1,35,7.0\n1,36,1.0\n")
    result = upsert_csv(pg_dsn, upd, "s", "prices", ["region_id", "type_id"])
    assert (result.rows, result.inserted, result.updated, result.unchanged) == (3, 1, 1, 1)
    out = tmp_path / "out.csv"
    with out.open("wb") as fh:
        pull_csv(pg_dsn, "s.prices", fh)
    lines = sorted(out.read_text().splitlines())
    assert lines == sorted(["region_id,type_id,price", "1,34,5.5", "1,35,7", "1,36,1"])


def test_upsert_creates_table_with_key(pg_dsn, tmp_path):
    path = _write(tmp_path, "a.csv", "k,v\n1,a\n2,b\n")
    assert upsert_csv(pg_dsn, path, "s", "kv", ["k"]).inserted == 2
    assert upsert_csv(pg_dsn, path, "s", "kv", ["k"]).unchanged == 2


def test_wrong_field_count_names_line_and_column_and_writes_nothing(pg_dsn, tmp_path):
    path = _write(tmp_path, "bad.csv", "a,b,c\n1,2,3\n4,5\n")
    with pytest.raises(ConfigError, match=r"line 3, column c"):
        load_csv(pg_dsn, path, "s", "t")
    assert _rows(pg_dsn, "SELECT to_regclass('s.t')") == [(None,)]


def test_bad_value_names_line_and_column_and_writes_nothing(pg_dsn, tmp_path):
    good = _write(tmp_path, "good.csv", "a,b\n1,2\n")
    load_csv(pg_dsn, good, "s", "t")
    bad = _write(tmp_path, "bad.csv", "a,b\n3,4\n5,x\n")
    with pytest.raises(ConfigError, match=r"line 3, column b") as err:
        load_csv(pg_dsn, bad, "s", "t")
    assert "nothing written" in str(err.value)
    assert _rows(pg_dsn, "SELECT a, b FROM s.t") == [(1, 2)]


@pytest.mark.parametrize("schema,table", [("S", "t"), ("s", "t;drop"), ("s", "x" * 64)])
def test_invalid_names_refused_before_sql(tmp_path, schema, table):
    path = _write(tmp_path, "a.csv", "a\n1\n")
    with pytest.raises(ConfigError):
        load_csv("postgresql://nobody@127.0.0.1:1/x", path, schema, table)


def test_bad_header_column_name_is_refused(tmp_path):
    path = _write(tmp_path, "a.csv", "a,b c\n1,2\n")
    with pytest.raises(ConfigError, match="column"):
        load_csv("postgresql://nobody@127.0.0.1:1/x", path, "s", "t")
