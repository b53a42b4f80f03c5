"""EVE Ref bulk history against the local server: the row count checked against ``totals.json``
(through ``run_etl`` and the CLI into a real PostgreSQL), and the on-disk cache of the daily files
revalidated with conditional requests."""

from __future__ import annotations

import bz2
import datetime as dt
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest
import requests
from eveflow_etl.datasets import SourceKind
from eveflow_etl.devservers import esi_data
from eveflow_etl.errors import SourceError
from eveflow_etl.esi import EsiClient
from eveflow_etl.orchestration.maintenance import trim_cache
from eveflow_etl.etl_run import run_etl
from eveflow_etl.sources import fetch
from eveflow_etl.sources.everef import everef_url
from eveflow_etl.sources.everef_cache import EverefCache

from tests.fixtures.esi import settings_for

FORGE, DOMAIN = 10000002, 10000043
DAY = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=3)
# ~900 rows a day over the five hubs: with 100-row chunks, several batches are loaded before the
# count can be checked, so "nothing loaded" really depends on the rollback.
BIG = {"types_per_region": 200}
EVEFLOW = str(Path(sys.executable).parent / "eveflow")


def file_url(server, day=DAY) -> str:
    return everef_url(server.everef_base_url, day)


def file_rows(server, day=DAY, headers=None) -> list[str]:
    resp = requests.get(file_url(server, day), headers=headers, timeout=10)
    resp.raise_for_status()
    return bz2.decompress(resp.content).decode().splitlines()[1:]


def totals(server) -> dict[str, int]:
    return requests.get(server.url + "/market-history/totals.json", timeout=10).json()


def body_bytes(server) -> int:
    return server.admin.stats()["body_bytes"]


def load(server, dsn, tmp_path, seen=None, **overrides):
    """One ``run_etl`` of DAY for the Forge and Domain; ``seen`` collects each loaded batch's counts."""
    settings = settings_for(server, tmp_path / "eveflow", chunk_rows=100, **overrides)
    return run_etl("everef", [FORGE, DOMAIN], None, dsn, schema="eve", settings=settings, day=DAY,
                   progress=lambda region, counts: seen.append(counts) if seen is not None else None)


def scalar(dsn, query, *args):
    with psycopg.connect(dsn) as conn:
        return conn.execute(query, args).fetchone()[0]


# --- the local server ------------------------------------------------------------------------

def test_totals_json_counts_the_rows_each_file_holds(esi_server_factory):
    server = esi_server_factory(history_days=30)
    first = totals(server)
    assert len(first) == 30 and max(first) == (DAY + dt.timedelta(days=2)).isoformat()
    for day in (DAY, DAY - dt.timedelta(days=20)):
        assert first[day.isoformat()] == len(file_rows(server, day)) > 0
    assert totals(server) == first  # deterministic

    later = (DAY - dt.timedelta(days=1)).isoformat()
    server.admin.configure(everef_short_rows={DAY.isoformat(): 4}, everef_totals_skew={DAY.isoformat(): 2},
                           everef_totals_unpublished=[later])
    faulty = totals(server)
    assert len(file_rows(server)) == first[DAY.isoformat()] - 4
    assert faulty[DAY.isoformat()] == first[DAY.isoformat()] + 2 and later not in faulty


def test_files_and_totals_answer_conditional_requests_with_304(esi_server):
    url = file_url(esi_server)
    first = requests.get(url, timeout=10)
    etag, modified = first.headers["ETag"], first.headers["Last-Modified"]
    spent = body_bytes(esi_server)
    for headers in ({"If-None-Match": etag}, {"If-Modified-Since": modified}, {"If-None-Match": f'"x", W/{etag}'}):
        again = requests.get(url, headers=headers, timeout=10)
        assert again.status_code == 304 and again.content == b"" and again.headers["ETag"] == etag
    assert body_bytes(esi_server) == spent
    assert requests.get(url, headers={"If-None-Match": '"other"', "If-Modified-Since": modified},
                        timeout=10).status_code == 200  # If-None-Match decides when both are sent

    tot = requests.get(esi_server.url + "/market-history/totals.json", timeout=10)
    assert requests.get(tot.url, headers={"If-None-Match": tot.headers["ETag"]}, timeout=10).status_code == 304

    esi_server.admin.configure(everef_rewrites={DAY.isoformat(): 1})
    for headers in ({"If-None-Match": etag}, {"If-Modified-Since": modified}):
        rewritten = requests.get(url, headers=headers, timeout=10)
        assert rewritten.status_code == 200 and rewritten.headers["ETag"] != etag
    assert rewritten.headers["Last-Modified"] != modified


# --- completeness ----------------------------------------------------------------------------

@pytest.mark.postgres
def test_wrong_published_total_fails_the_run_and_loads_nothing(esi_server_factory, pg_dsn, tmp_path):
    server = esi_server_factory(**BIG)
    published = totals(server)[DAY.isoformat()]
    server.admin.configure(everef_totals_skew={DAY.isoformat(): 5})
    seen = []
    with pytest.raises(SourceError) as info:
        load(server, pg_dsn, tmp_path, seen)
    message = str(info.value)
    assert "\n" not in message
    assert f"market-history-{DAY.isoformat()}.csv.bz2" in message
    assert f"expected {published + 5} rows" in message and f"got {published}" in message
    assert seen == []  # the whole file is pulled and checked before any batch is loaded
    assert scalar(pg_dsn, "SELECT count(*) FROM eve.market_history") == 0
    status, error = scalar(pg_dsn, "SELECT array[status, error] FROM eve.etl_runs")
    assert status == "failed" and error == message


@pytest.mark.postgres
def test_cli_file_with_rows_missing_exits_nonzero_with_one_line(esi_server_factory, pg_dsn, tmp_path):
    server = esi_server_factory(**BIG)
    published = totals(server)[DAY.isoformat()]
    server.admin.configure(everef_short_rows={DAY.isoformat(): 3})
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "EVEFLOW_DATA_DIR": str(tmp_path / "data"),
           "EVEFLOW_CONTACT": "tests@eveflow.invalid", "EVEFLOW_CHUNK_ROWS": "100"}
    proc = subprocess.run([EVEFLOW, "etl", "run", "--source", "everef", "--regions", f"{FORGE},{DOMAIN}",
                           "--day", DAY.isoformat(), "--dsn", pg_dsn, "--everef-base-url", server.everef_base_url],
                          check=False, capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 3, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and f"expected {published} rows" in lines[0] and f"got {published - 3}" in lines[0]
    assert scalar(pg_dsn, "SELECT count(*) FROM eve.market_history") == 0


@pytest.mark.postgres
def test_day_not_in_totals_yet_is_loaded_and_noted_unverified(esi_server, pg_dsn, tmp_path, caplog):
    esi_server.admin.configure(everef_totals_unpublished=[DAY.isoformat()])
    with caplog.at_level(logging.WARNING, logger="eveflow_etl.sources.everef"):
        report = load(esi_server, pg_dsn, tmp_path)
    expected = sum(1 for row in file_rows(esi_server) if row.split(",")[6] in (str(FORGE), str(DOMAIN)))
    assert report.status == "succeeded" and report.totals.inserted == expected > 0
    assert scalar(pg_dsn, "SELECT count(*) FROM eve.market_history") == expected
    (note,) = report.notes
    assert "unverified" in note and f"{DAY.isoformat()} not in" in note and "totals.json" in note
    assert scalar(pg_dsn, "SELECT notes FROM eve.etl_runs WHERE status = 'succeeded'") == note
    assert any("unverified" in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)


@pytest.mark.postgres
def test_ledger_from_before_notes_gets_the_column(esi_server, pg_dsn, tmp_path):
    with psycopg.connect(pg_dsn, autocommit=True) as conn:  # the ledger as earlier versions made it
        conn.execute("CREATE SCHEMA eve")
        conn.execute("""CREATE TABLE eve.etl_runs (run_id uuid PRIMARY KEY, pipeline_name text NOT NULL,
            source text NOT NULL, target_table text NOT NULL, regions int4[] NOT NULL, types_count int4,
            started_at timestamptz NOT NULL, finished_at timestamptz, fetched int8 NOT NULL DEFAULT 0,
            inserted int8 NOT NULL DEFAULT 0, updated int8 NOT NULL DEFAULT 0, unchanged int8 NOT NULL DEFAULT 0,
            quarantined int8 NOT NULL DEFAULT 0, closed int8 NOT NULL DEFAULT 0, status text NOT NULL, error text)""")
    esi_server.admin.configure(everef_totals_unpublished=[DAY.isoformat()])
    report = load(esi_server, pg_dsn, tmp_path)
    assert scalar(pg_dsn, "SELECT notes FROM eve.etl_runs") == report.notes[0]


@pytest.mark.postgres
@pytest.mark.parametrize("fault", [{"status": 503}, {"truncate": "json"}], ids=["503", "broken-json"])
def test_unavailable_totals_is_loaded_and_noted_unverified(esi_server, pg_dsn, tmp_path, fault):
    esi_server.admin.fault(path="/market-history/totals.json", count=None, **fault)
    report = load(esi_server, pg_dsn, tmp_path, esi_max_retries=1)
    assert report.status == "succeeded" and report.totals.inserted > 0
    (note,) = report.notes
    assert "unverified" in note and "totals.json" in note and "\n" not in note
    assert scalar(pg_dsn, "SELECT notes FROM eve.etl_runs") == note


def test_counts_are_checked_when_every_row_is_filtered_out(esi_server, tmp_path):
    esi_server.admin.configure(everef_totals_skew={DAY.isoformat(): 1})
    settings = settings_for(esi_server, tmp_path)
    with pytest.raises(SourceError, match="expected"):
        list(fetch(SourceKind.EVEREF, [FORGE], [99999999], settings, day=DAY))
    esi_server.admin.configure(everef_totals_skew={}, everef_totals_unpublished=[DAY.isoformat()])
    (carrier,) = fetch(SourceKind.EVEREF, [FORGE], [99999999], settings, day=DAY)
    assert carrier.frame.empty and "unverified" in carrier.notes[0]


# --- the download cache ----------------------------------------------------------------------

@pytest.mark.postgres
def test_second_run_downloads_nothing_and_changes_nothing(esi_server, pg_dsn, tmp_path):
    first = load(esi_server, pg_dsn, tmp_path)
    spent = body_bytes(esi_server)
    second = load(esi_server, pg_dsn, tmp_path)
    assert body_bytes(esi_server) == spent > 0  # file and totals.json both answered 304
    assert esi_server.admin.stats()["by_status"]["304"] == 2
    assert first.totals.inserted > 0 and not first.notes and not second.notes
    t = second.totals
    assert (t.fetched, t.inserted, t.updated, t.unchanged) == (first.totals.inserted, 0, 0, first.totals.inserted)


@pytest.mark.postgres
def test_rewritten_past_day_is_downloaded_again_and_updates_the_changed_rows(esi_server, pg_dsn, tmp_path):
    first = load(esi_server, pg_dsn, tmp_path)
    esi_server.admin.configure(everef_rewrites={DAY.isoformat(): 1})
    spent = body_bytes(esi_server)
    second = load(esi_server, pg_dsn, tmp_path)
    assert body_bytes(esi_server) > spent

    cfg, types = esi_server.state.config, esi_server.state.types
    changed = volumes = 0
    for region in (FORGE, DOMAIN):
        before = esi_data.everef_day(cfg.seed, region, types, DAY, 0)
        after = esi_data.everef_day(cfg.seed, region, types, DAY, 1)
        changed += int((before["volume"] != after["volume"]).sum())
        volumes += int(after["volume"].sum())
    assert changed > 0
    t = second.totals
    assert (t.inserted, t.updated, t.unchanged) == (0, changed, first.totals.inserted - changed)
    assert scalar(pg_dsn, "SELECT sum(volume) FROM eve.market_history") == volumes
    assert scalar(pg_dsn, "SELECT count(DISTINCT http_last_modified) FROM eve.market_history") == 2

    spent = body_bytes(esi_server)
    third = load(esi_server, pg_dsn, tmp_path)
    assert body_bytes(esi_server) == spent and third.totals.unchanged == first.totals.inserted


def cache_dir(tmp_path) -> Path:
    return tmp_path / "eveflow" / "cache" / "everef"


def cached_meta(tmp_path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(cache_dir(tmp_path).glob("*.json"))]


def test_broken_download_never_replaces_the_good_cached_copy(esi_server, tmp_path):
    settings = settings_for(esi_server, tmp_path / "eveflow")
    good = list(fetch(SourceKind.EVEREF, [FORGE], None, settings, day=DAY))
    (meta,) = cached_meta(tmp_path)

    esi_server.admin.configure(everef_rewrites={DAY.isoformat(): 1})
    esi_server.admin.fault(path="/market-history/2", truncate="connection")
    with pytest.raises(SourceError, match="EVE Ref history file .* broke off after"):
        list(fetch(SourceKind.EVEREF, [FORGE], None, settings, day=DAY))
    assert cached_meta(tmp_path) == [meta]
    stem = meta["body"].split(".")[0]
    assert sorted(p.name for p in cache_dir(tmp_path).iterdir()) == [meta["body"], stem + ".json"]  # no .part

    esi_server.admin.configure(everef_rewrites={})  # back to the cached version: a 304 serves it
    spent = body_bytes(esi_server)
    again = list(fetch(SourceKind.EVEREF, [FORGE], None, settings, day=DAY))
    assert body_bytes(esi_server) == spent
    assert [b.frame.to_dict() for b in again] == [b.frame.to_dict() for b in good]


def test_first_download_that_breaks_off_leaves_nothing_behind(esi_server, tmp_path):
    esi_server.admin.fault(path="/market-history/2", truncate="connection")
    with pytest.raises(SourceError, match="broke off"):
        list(fetch(SourceKind.EVEREF, [FORGE], None, settings_for(esi_server, tmp_path / "eveflow"), day=DAY))
    assert list(cache_dir(tmp_path).iterdir()) == []


def test_file_not_read_to_the_end_is_not_cached(esi_server_factory, tmp_path):
    server = esi_server_factory(**BIG)
    batches = fetch(SourceKind.EVEREF, [FORGE], None, settings_for(server, tmp_path / "eveflow", chunk_rows=100),
                    day=DAY)
    next(batches)  # the load stops after its first batch (e.g. the database failed)
    batches.close()
    assert list(cache_dir(tmp_path).iterdir()) == []


def test_unreadable_cached_copy_is_dropped_and_fetched_again(esi_server, tmp_path):
    settings = settings_for(esi_server, tmp_path / "eveflow")
    good = list(fetch(SourceKind.EVEREF, [FORGE], None, settings, day=DAY))
    (meta,) = cached_meta(tmp_path)
    body = cache_dir(tmp_path) / meta["body"]
    body.write_bytes(b"\0" * body.stat().st_size)  # same size, so only reading it tells
    with pytest.raises(SourceError, match="broke off after 0 rows"):
        list(fetch(SourceKind.EVEREF, [FORGE], None, settings, day=DAY))
    assert cached_meta(tmp_path) == []
    again = list(fetch(SourceKind.EVEREF, [FORGE], None, settings, day=DAY))
    assert [b.frame.to_dict() for b in again] == [b.frame.to_dict() for b in good]


def test_cache_stays_within_its_byte_budget_least_recently_used_first(esi_server, tmp_path):
    days = [DAY - dt.timedelta(days=n) for n in (2, 1, 0)]
    sizes = [len(requests.get(file_url(esi_server, d), timeout=10).content) for d in days]
    settings = settings_for(esi_server, tmp_path / "eveflow", everef_cache_max_bytes=int(max(sizes) * 2.5))
    for day in days:
        list(fetch(SourceKind.EVEREF, [FORGE], None, settings, day=day))
    kept = sorted(m["url"] for m in cached_meta(tmp_path))
    assert kept == sorted(file_url(esi_server, d) for d in days[1:])  # the oldest use went first
    assert sum(p.stat().st_size for p in cache_dir(tmp_path).glob("*.bz2")) <= settings.everef_cache_max_bytes

    with EsiClient(settings) as client:
        list(fetch(SourceKind.EVEREF, [FORGE], None, settings, day=days[2], client=client))
        assert client.stats.not_modified == 2 and client.stats.body_bytes == 0  # file and totals
    with EsiClient(settings) as client:
        list(fetch(SourceKind.EVEREF, [FORGE], None, settings, day=days[0], client=client))
        assert client.stats.body_bytes == sizes[0] and client.stats.not_modified == 1  # evicted: downloaded again


def test_cache_off_downloads_every_time_and_keeps_nothing(esi_server, tmp_path):
    settings = settings_for(esi_server, tmp_path / "eveflow", everef_cache_max_bytes=0)
    for _ in range(2):
        with EsiClient(settings) as client:
            list(fetch(SourceKind.EVEREF, [FORGE], None, settings, day=DAY, client=client))
            assert client.stats.body_bytes > 0
    assert list(cache_dir(tmp_path).iterdir()) == []


def test_download_after_the_maintenance_trim_removed_the_empty_cache_folder(tmp_path):
    # The trim removes empty folders; a run that opened the cache just before must still download.
    cache = EverefCache(tmp_path / "cache" / "everef", max_bytes=10_000_000)
    trim_cache(tmp_path / "cache", max_age_days=7)
    assert not cache.directory.exists()
    part, out = cache.new_part("https://everef.example/market-history-2026-01-01.csv.bz2")
    with out:
        out.write(b"data")
    cache.commit("https://everef.example/market-history-2026-01-01.csv.bz2", part, '"v1"', None)
    entry = cache.lookup("https://everef.example/market-history-2026-01-01.csv.bz2")
    assert entry is not None and entry.handle.read() == b"data"
    entry.handle.close()


def test_a_commit_in_another_process_is_not_swept_as_an_orphan_mid_way(tmp_path, monkeypatch):
    # Process A has renamed its download into place but not yet written the metadata naming it
    # when process B's commit sweeps bodies no metadata names: A's fresh body must survive.
    from eveflow_etl.sources import everef_cache

    url_a, url_b = (f"https://everef.example/market-history-2026-01-0{n}.csv.bz2" for n in (1, 2))
    a, b = (EverefCache(tmp_path / "everef", max_bytes=10_000_000) for _ in range(2))
    parts = {}
    for cache, url in ((a, url_a), (b, url_b)):
        parts[url], out = cache.new_part(url)
        with out:
            out.write(url.encode())
    crashed = tmp_path / "everef" / "market-history-2025-12-01-000000000000.0123456789abcdef.csv.bz2"
    crashed.write_bytes(b"left by a writer that died between its two renames")
    two_hours_ago = time.time() - 7200
    os.utime(crashed, (two_hours_ago, two_hours_ago))

    write = everef_cache.atomic_write

    def b_commits_first(path, data):
        if not parts.get("b done"):
            parts["b done"] = True
            b.commit(url_b, parts[url_b], '"b"', None)
        write(path, data)

    monkeypatch.setattr(everef_cache, "atomic_write", b_commits_first)
    a.commit(url_a, parts[url_a], '"a"', None)

    for url in (url_a, url_b):
        entry = a.lookup(url)
        assert entry is not None and entry.handle.read() == url.encode()
        entry.handle.close()
    assert not crashed.exists()  # a real orphan still goes
