"""Issue 13, item 1: a live order is closed only when it is absent from a complete snapshot.

Written as the failure a user would see: an order still on the market shown closed.
"""

from __future__ import annotations

import psycopg
import pytest

from eveflow_etl.errors import SourceError
from eveflow_etl.etl_run import run_etl
from eveflow_etl.settings import EtlSettings

from tests.etl.helpers import Batch, orders_frame
from tests.fixtures.esi import settings_for

pytestmark = pytest.mark.postgres
FORGE = 10000002


def _run(dsn, frame, **settings):
    return run_etl("esi-orders", [FORGE], None, dsn, schema="eve", settings=EtlSettings(chunk_rows=1000, **settings),
                   batches=[Batch("esi-orders", FORGE, frame)])


def _open_ids(dsn) -> set[int]:
    with psycopg.connect(dsn) as conn:
        return {r[0] for r in conn.execute("SELECT order_id FROM eve.market_orders WHERE closed_at IS NULL")}


def test_a_quarantined_live_order_is_not_closed(pg_dsn):
    _run(pg_dsn, orders_frame([1, 2, 3, 4]))
    snap = orders_frame([1, 2, 3, 4])
    snap.loc[snap.order_id == 3, "range"] = "galaxy"  # fails validation, but order 3 is on the market
    report = _run(pg_dsn, snap)
    assert report.totals.quarantined == 1
    assert report.totals.closed == 0
    assert _open_ids(pg_dsn) == {1, 2, 3, 4}


def test_schema_drift_quarantining_a_whole_region_closes_nothing(pg_dsn):
    _run(pg_dsn, orders_frame(range(1, 11)))
    drifted = orders_frame(range(1, 11)).rename(columns={"price": "unit_price"})  # every row quarantined
    report = _run(pg_dsn, drifted)
    assert report.totals.quarantined == 10
    assert report.totals.closed == 0
    assert _open_ids(pg_dsn) == set(range(1, 11))


def test_closing_more_than_half_of_the_book_fails_with_nothing_changed(pg_dsn):
    _run(pg_dsn, orders_frame(range(1, 11)))
    snap = orders_frame([1, 2, 3, 4, 99], price=20.0)  # 6 of 10 open orders would close, 1 new, 4 changed
    with pytest.raises(SourceError) as info:
        _run(pg_dsn, snap)
    message = str(info.value)
    assert "6 of 10 open orders" in message and "EVEFLOW_ORDERS_MAX_CLOSE_SHARE" in message
    assert "\n" not in message
    with psycopg.connect(pg_dsn) as conn:
        assert conn.execute("SELECT count(*), max(price) FROM eve.market_orders WHERE closed_at IS NULL"
                            ).fetchone() == (10, 19.0)
        assert conn.execute("SELECT count(*) FROM eve.market_orders WHERE order_id = 99").fetchone()[0] == 0
        assert conn.execute("SELECT status FROM eve.etl_runs ORDER BY started_at DESC LIMIT 1").fetchone()[0] == "failed"
    # The operator who knows the market really emptied raises the share and runs again.
    report = _run(pg_dsn, snap, orders_max_close_share=0.7)
    assert report.totals.closed == 6
    assert _open_ids(pg_dsn) == {1, 2, 3, 4, 99}


@pytest.mark.parametrize("x_pages", [None, "many", ""], ids=["missing", "non-numeric", "empty"])
def test_a_first_page_without_a_numeric_x_pages_fails_the_pull(esi_server_factory, tmp_path, pg_dsn, x_pages):
    server = esi_server_factory(orders_per_region=3500)  # 4 pages
    settings = settings_for(server, tmp_path)
    run_etl("esi-orders", [FORGE], None, pg_dsn, settings=settings)
    before = _open_ids(pg_dsn)
    assert len(before) == 3500

    server.admin.fault(path="/orders/", region=FORGE, page=1, headers={"X-Pages": x_pages}, count=None)
    with pytest.raises(SourceError, match="X-Pages"):
        run_etl("esi-orders", [FORGE], None, pg_dsn, settings=settings_for(server, tmp_path / "fresh"))
    assert _open_ids(pg_dsn) == before  # nothing closed on the word of page 1 alone
