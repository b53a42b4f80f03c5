"""The ESI disk cache against the local server: a byte budget kept on write (least recently used
first), a pull's own pages kept while it may still revalidate them, and the maintenance trim
sharing the same eviction."""

from __future__ import annotations

import os
import time

from eveflow_etl.datasets import SourceKind
from eveflow_etl.esi import EsiClient
from eveflow_etl.esi.cache import CacheEntry, DiskCache, evict
from eveflow_etl.orchestration.maintenance import trim_cache
from eveflow_etl.sources import fetch

from tests.fixtures.esi import settings_for

FORGE = 10000002
HISTORY_ENTRY = 46_000  # one type's 395 days of ESI history plus its metadata, about


def disk_bytes(settings) -> int:
    return sum(f.stat().st_size for f in (settings.cache_dir / "http").rglob("*") if f.is_file())


def history(client, server, type_id):
    return client.get(f"{server.esi_base_url}/markets/{FORGE}/history/", {"type_id": type_id})


def page_statuses(server, page):
    return [status for _, path, status in server.admin.stats()["events"]
            if "/orders/" in path and path.endswith(f"page={page}")]


def test_cache_stays_within_its_budget_dropping_the_least_recently_used(esi_server_factory, tmp_path):
    server = esi_server_factory(types_per_region=30)
    budget = 10 * HISTORY_ENTRY
    settings = settings_for(server, tmp_path, esi_cache_max_bytes=budget)
    keep, *others = server.state.types
    with EsiClient(settings) as client:
        history(client, server, keep)
        for type_id in others:
            history(client, server, type_id)
            history(client, server, keep)  # used all along: the oldest write, never the least used
        assert client.stats.cache_hits == len(others)
    assert disk_bytes(settings) <= budget  # 30 entries would be ~3x that

    with EsiClient(settings) as rerun:
        history(rerun, server, keep)
        history(rerun, server, others[-1])
        assert rerun.stats.requests == 0  # both still on disk, served before Expires
        history(rerun, server, others[0])
        assert rerun.stats.requests == 1  # evicted long ago: asked again


def test_a_pull_keeps_its_own_pages_so_a_refetch_after_a_rebuild_gets_304s(esi_server_factory, tmp_path):
    # Three pages (~260, ~260, ~130 kB) and room for two: without protection, the refetch
    # after the rebuild evicts page 3 before asking for it and downloads it again.
    server = esi_server_factory(orders_per_region=2500)
    budget = 530_000
    settings = settings_for(server, tmp_path, esi_cache_max_bytes=budget, esi_max_concurrency=1)
    server.admin.fault(region=FORGE, page=3, tick=True)
    (batch,) = fetch(SourceKind.ESI_ORDERS, [FORGE], None, settings)
    assert len(batch.frame) == 2500
    assert page_statuses(server, 1) == [200, 200]  # changed with the rebuild
    assert page_statuses(server, 3) == [200, 304]  # of the new build already: no body again
    assert disk_bytes(settings) <= budget  # the overshoot ended with the pull


def test_maintenance_trim_keeps_an_entry_a_304_refreshed(esi_server_factory, tmp_path):
    server = esi_server_factory(orders_expires_seconds=0)
    settings = settings_for(server, tmp_path)
    url = f"{server.esi_base_url}/markets/{FORGE}/orders/"
    with EsiClient(settings) as client:
        client.get(url, {"page": 1})
        client.get(url, {"page": 2})
    ten_days_ago = time.time() - 10 * 86_400
    for path in (settings.cache_dir / "http").rglob("*"):
        if path.is_file():
            os.utime(path, (ten_days_ago, ten_days_ago))
    with EsiClient(settings) as client:
        assert client.get(url, {"page": 1}).json()  # 304: page 1 is in use, its body file still old

    assert trim_cache(settings.cache_dir, max_age_days=7) == 2  # page 2's body and metadata

    with EsiClient(settings) as client:
        client.get(url, {"page": 1})
        client.get(url, {"page": 2})
        assert (client.stats.not_modified, client.stats.body_bytes > 0) == (1, True)
    assert page_statuses(server, 1) == [200, 304, 304] and page_statuses(server, 2) == [200, 200]


def test_an_entry_evicted_while_its_304_was_in_flight_is_written_back_whole(tmp_path):
    cache = DiskCache(tmp_path / "http", max_bytes=10_000_000)
    cache.store(CacheEntry("https://esi.example/x?page=1", '"v1"', time.time() - 1, "Mon, 23 Nov 2026 10:00:00 GMT",
                           3, b"[1, 2, 3]"))
    held = cache.load("https://esi.example/x?page=1")  # the client holds it while asking the server
    # Meanwhile the maintenance trim (or another process over budget) removes it, folder and all.
    evict(tmp_path / "http", older_than=time.time() + 1, remove_empty_dirs=True)
    held.expires = time.time() + 300  # the 304 brought a new Expires
    cache.touch(held)
    again = cache.load("https://esi.example/x?page=1")
    assert again is not None and again.body == b"[1, 2, 3]" and again.etag == '"v1"'
