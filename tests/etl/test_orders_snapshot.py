"""ESI order books pulled across a rebuild: one build per region or nothing.

The local server rebuilds the book (next version, new Last-Modified) when a fault with
``tick=True`` matches, i.e. exactly while that page is being asked: pages asked before it are of
the old build, so the first pull is a mix every time, without depending on timing.
"""

from __future__ import annotations

import datetime as dt

import pandas as pd
import psycopg
import pytest
from eveflow_etl.datasets import SourceKind
from eveflow_etl.devservers import esi_data as data
from eveflow_etl.errors import SourceError
from eveflow_etl.etl_run import run_etl
from eveflow_etl.sources import fetch
from eveflow_etl.sources.esi_orders import ORDER_COLUMNS

from tests.fixtures.esi import settings_for

FORGE, DOMAIN = 10000002, 10000043


def server_book(server, region: int) -> pd.DataFrame:
    """The server's current build of a region's book, as the source shapes it."""
    s = server.state
    anchor = dt.datetime.fromtimestamp(s.version_started, dt.UTC)
    rows = [row for page in range(1, data.order_pages(s.config.orders_per_region) + 1)
            for row in data.orders_page(s.config.seed, region, page, orders_per_region=s.config.orders_per_region,
                                        types=s.types, version=s.version, anchor=anchor)]
    frame = pd.DataFrame.from_records(rows)
    frame.insert(0, "region_id", region)
    return frame[ORDER_COLUMNS]


def same_rows(got: pd.DataFrame, want: pd.DataFrame) -> bool:
    def norm(f):
        return f[ORDER_COLUMNS].sort_values("order_id").reset_index(drop=True)
    return norm(got).equals(norm(want))


def pages_asked(server, region: int) -> list[int]:
    return [int(path.rsplit("page=", 1)[1]) for _, path, _ in server.admin.stats()["events"]
            if f"/markets/{region}/orders/" in path]


def test_pull_across_a_rebuild_yields_exactly_the_new_build(esi_server_factory, tmp_path):
    # Default Expires (300 s): the old build's pages stay "fresh" in the cache after the
    # rebuild, so the second pull must ask the server rather than trust them.
    server = esi_server_factory(orders_per_region=5500)
    old = server_book(server, FORGE)
    server.admin.fault(region=FORGE, page=4, delay=0.2, tick=True)
    (batch,) = fetch(SourceKind.ESI_ORDERS, [FORGE], None, settings_for(server, tmp_path))
    assert server.admin.stats()["version"] == 1
    new = server_book(server, FORGE)
    assert not same_rows(old, new)
    assert same_rows(batch.frame, new) and batch.snapshot_complete
    assert pages_asked(server, FORGE).count(1) == 2  # the mixed first pull was thrown away


@pytest.mark.parametrize("new_size", [3200, 7500], ids=["book-shrinks", "book-grows"])
def test_x_pages_changing_with_the_rebuild_is_followed(esi_server_factory, tmp_path, new_size):
    server = esi_server_factory(orders_per_region=5500)  # 6 pages, then 4 or 8
    server.admin.fault(region=FORGE, page=3, tick=True, tick_orders=new_size)
    (batch,) = fetch(SourceKind.ESI_ORDERS, [FORGE], None, settings_for(server, tmp_path))
    assert len(batch.frame) == new_size
    assert same_rows(batch.frame, server_book(server, FORGE))


@pytest.mark.postgres
def test_load_across_a_rebuild_closes_only_orders_really_gone(esi_server_factory, tmp_path, pg_dsn):
    # Expires at once: every rerun revalidates, so unchanged pages answer 304 from the cache.
    server = esi_server_factory(orders_per_region=5500, orders_expires_seconds=0)
    settings = settings_for(server, tmp_path)
    run_etl("esi-orders", [FORGE], None, pg_dsn, settings=settings)
    before = server_book(server, FORGE)

    server.admin.fault(region=FORGE, page=4, tick=True)
    report = run_etl("esi-orders", [FORGE], None, pg_dsn, settings=settings)
    after = server_book(server, FORGE)
    gone = set(before["order_id"]) - set(after["order_id"])
    assert server.admin.stats()["version"] == 1 and gone  # the market really moved

    with psycopg.connect(pg_dsn) as conn:
        open_rows = conn.execute("SELECT order_id, price, volume_remain FROM eve.market_orders "
                                 "WHERE closed_at IS NULL").fetchall()
        closed = {r[0] for r in conn.execute("SELECT order_id FROM eve.market_orders WHERE closed_at IS NOT NULL")}
    assert closed == gone and report.totals.closed == len(gone)
    want = set(after[["order_id", "price", "volume_remain"]].itertuples(index=False, name=None))
    assert set(open_rows) == want


@pytest.mark.postgres
def test_book_rebuilt_on_every_request_fails_the_run_in_one_line_and_loads_nothing(
        esi_server_factory, tmp_path, pg_dsn):
    server = esi_server_factory()
    server.admin.fault(path="/orders/", region=FORGE, tick=True, count=None)
    settings = settings_for(server, tmp_path)

    with pytest.raises(SourceError) as info:
        run_etl("esi-orders", [DOMAIN, FORGE], None, pg_dsn, settings=settings)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("ESI orders of region 10000002: the order book was rebuilt during each of 3 pulls")
    assert "nothing of this region's snapshot was loaded" in message
    assert "EVEFLOW_ESI_ORDERS_SNAPSHOT_ATTEMPTS" in message
    assert pages_asked(server, FORGE).count(1) == 3  # bounded: three pulls, then stop

    with psycopg.connect(pg_dsn) as conn:
        assert conn.execute("SELECT count(*) FROM eve.market_orders WHERE region_id = %s", (FORGE,)).fetchone()[0] == 0
        status, error = conn.execute("SELECT status, error FROM eve.etl_runs").fetchone()
    assert status == "failed" and error == message


def test_other_regions_before_the_failing_one_come_through(esi_server_factory, tmp_path):
    server = esi_server_factory()
    server.admin.fault(path="/orders/", region=FORGE, tick=True, count=None)
    got = []
    with pytest.raises(SourceError, match="region 10000002: the order book was rebuilt"):
        for batch in fetch(SourceKind.ESI_ORDERS, [DOMAIN, FORGE], None, settings_for(server, tmp_path)):
            got.append(batch)  # noqa: PERF402 - keeps what came before the error
    assert [b.region_id for b in got] == [DOMAIN]
