"""``sources.fetch`` against the local server: shapes, paging, failures, sentinels."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest

from eveflow_etl.datasets import SourceKind
from eveflow_etl.errors import SourceError
from eveflow_etl.esi import EsiClient
from eveflow_etl.sources import fetch
from eveflow_etl.sources.esi_history import HISTORY_COLUMNS
from eveflow_etl.sources.esi_orders import ORDER_COLUMNS
from tests.fixtures.esi import settings_for

FORGE, DOMAIN = 10000002, 10000043


def order_pages_asked(server, region):
    return sorted(int(path.rsplit("page=", 1)[1]) for _, path, status in server.admin.stats()["events"]
                  if f"/markets/{region}/orders/" in path and status == 200)


def test_orders_fetches_every_page_as_one_complete_snapshot(esi_server_factory, tmp_path):
    server = esi_server_factory(orders_per_region=5500)
    batches = list(fetch(SourceKind.ESI_ORDERS, [FORGE], None, settings_for(server, tmp_path)))
    assert len(batches) == 1
    batch = batches[0]
    assert batch.snapshot_complete and batch.region_id == FORGE and batch.types is None
    assert list(batch.frame.columns[: len(ORDER_COLUMNS)]) == ORDER_COLUMNS
    assert len(batch.frame) == 5500 and batch.frame["order_id"].is_unique
    assert (batch.frame["region_id"] == FORGE).all()
    assert order_pages_asked(server, FORGE) == [1, 2, 3, 4, 5, 6]


def test_orders_page_that_keeps_failing_fails_loudly_and_yields_nothing_of_the_region(esi_server_factory, tmp_path):
    server = esi_server_factory(orders_per_region=5500)
    server.admin.fault(region=FORGE, page=4, status=502, count=None)
    got = []
    with pytest.raises(SourceError, match=r"region 10000002: page 4 failed .*HTTP 502.*nothing of this") as info:
        for batch in fetch(SourceKind.ESI_ORDERS, [DOMAIN, FORGE], None, settings_for(server, tmp_path)):
            got.append(batch)
    assert "\n" not in str(info.value)
    assert [b.region_id for b in got] == [DOMAIN]  # the whole Forge snapshot was withheld


def test_orders_filtered_by_type_keep_the_type_list(esi_server, esi_settings):
    (batch,) = fetch(SourceKind.ESI_ORDERS, [FORGE], [34, 35], esi_settings)
    assert batch.snapshot_complete and batch.types == (34, 35)
    assert set(batch.frame["type_id"]) <= {34, 35} and len(batch.frame) > 0


def test_orders_rerun_after_expiry_downloads_no_body(esi_server_factory, tmp_path):
    server = esi_server_factory(orders_expires_seconds=0)
    settings = settings_for(server, tmp_path)
    with EsiClient(settings) as first:
        (a,) = fetch(SourceKind.ESI_ORDERS, [FORGE], None, settings, client=first)
    with EsiClient(settings) as second:
        (b,) = fetch(SourceKind.ESI_ORDERS, [FORGE], None, settings, client=second)
    assert second.stats.not_modified == 3 and second.stats.body_bytes == 0
    assert a.frame.equals(b.frame)


def test_history_skips_types_without_market_and_counts_them(esi_server, tmp_path):
    settings = settings_for(esi_server, tmp_path, chunk_rows=500)
    batches = list(fetch(SourceKind.ESI_HISTORY, [FORGE], [34, 35, 36, 99999999], settings))
    assert len(batches) >= 2  # ~395 rows a type, chunks of ~500
    rows = sum(len(b.frame) for b in batches)
    skipped = [s for b in batches for s in b.skipped]
    assert skipped == [(99999999, "HTTP 404: Type not found!")]
    for batch in batches:
        assert list(batch.frame.columns[:8]) == HISTORY_COLUMNS and not batch.snapshot_complete
    frame = pd.concat([b.frame for b in batches])
    assert set(frame["type_id"]) == {34, 35, 36} and (frame["region_id"] == FORGE).all()
    assert rows == len(frame.drop_duplicates(["type_id", "date"]))
    assert frame["date"].max() < dt.datetime.now(dt.UTC).date().isoformat()  # history ends yesterday


def test_history_without_types_lists_the_market_types(esi_server_factory, tmp_path):
    server = esi_server_factory(types_per_region=5)
    batches = list(fetch(SourceKind.ESI_HISTORY, [FORGE], None, settings_for(server, tmp_path)))
    types = {t for b in batches for t in b.frame["type_id"]}
    assert types == set(server.state.types)
    assert any("/markets/10000002/types/" in path for _, path, _ in server.admin.stats()["events"])


def test_mokaam_sentinels_come_through_as_rows(esi_server, esi_settings):
    batches = list(fetch(SourceKind.MOKAAM, [FORGE], None, esi_settings))
    frame = batches[0].frame
    assert len(frame) == 20  # one row per key, none dropped
    assert {"region_id", "type_id", "last_data", "vol_yesterday"} <= set(frame.columns)
    last = frame["last_data"].tolist()
    for sentinel in ("Null", "ERROR: 404", "ERROR: 400", "Itemid not found"):
        assert sentinel in last
    assert frame["last_data"].isna().sum() >= 1
    flagged = frame[frame["_raw_error"].notna()]
    assert flagged["_raw_error"].tolist() == ["value is not an object"]
    assert flagged["_raw_value"].tolist() == ['"Itemid not found"']


def test_mokaam_403_backs_off_and_retries(esi_server, esi_settings):
    esi_server.admin.fault(path="/API/market/all", status=403, count=2)
    (batch,) = fetch(SourceKind.MOKAAM, [FORGE], [34, 35], esi_settings)
    assert sorted(batch.frame["type_id"]) == [34, 35]
    assert esi_server.admin.stats()["by_status"] == {"200": 1, "403": 2}


def test_everef_streams_the_day_filtered_by_region_and_type(esi_server, tmp_path):
    settings = settings_for(esi_server, tmp_path, chunk_rows=100)
    day = dt.date.today() - dt.timedelta(days=3)
    batches = list(fetch(SourceKind.EVEREF, [FORGE, DOMAIN], None, settings, day=day))
    assert {b.region_id for b in batches} == {FORGE, DOMAIN}
    for batch in batches:
        assert (batch.frame["region_id"] == batch.region_id).all()
        assert (batch.frame["date"] == day.isoformat()).all()
        assert "http_last_modified" in batch.frame.columns
    only = list(fetch(SourceKind.EVEREF, [FORGE], [34], settings, day=day))
    assert len(only) == 1 and only[0].frame["type_id"].tolist() == [34]


def test_everef_missing_day_is_a_clear_error(esi_server, esi_settings):
    with pytest.raises(SourceError, match="EVE Ref has no history file for"):
        list(fetch(SourceKind.EVEREF, [FORGE], None, esi_settings, day=dt.date.today() + dt.timedelta(days=1)))


@pytest.mark.parametrize("source,name", [(SourceKind.ESI_ORDERS, "ESI"), (SourceKind.MOKAAM, "Mokaam"),
                                         (SourceKind.EVEREF, "EVE Ref")])
def test_unreachable_source_is_one_line(tmp_path, source, name):
    from eveflow_etl.settings import EtlSettings

    base = "http://127.0.0.1:9"
    settings = EtlSettings(data_dir=tmp_path, esi_base_url=base + "/latest", mokaam_base_url=base,
                           everef_base_url=base, esi_backoff_seconds=0.01, esi_max_retries=1)
    with pytest.raises(SourceError) as info:
        list(fetch(source, [FORGE], None, settings, day=dt.date(2025, 1, 1)))
    message = str(info.value)
    assert "\n" not in message
    assert f"cannot reach {name} at {base}" in message and "connection refused" in message


def test_everef_download_that_breaks_off_is_a_source_error(esi_server, tmp_path):
    esi_server.admin.fault(path="/market-history/", truncate="connection")
    settings = settings_for(esi_server, tmp_path, chunk_rows=100)
    with pytest.raises(SourceError, match="EVE Ref history file .* broke off"):
        list(fetch(SourceKind.EVEREF, [FORGE], None, settings, day=dt.date.today() - dt.timedelta(days=2)))
