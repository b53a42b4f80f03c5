"""Issue 13, item 4: the maintenance flow's connection is bounded and its errors redacted; closed
orders are pruned after their retention period."""

from __future__ import annotations

import socket

import psycopg
import pytest

from eveflow_etl.errors import DestinationError
from eveflow_etl.orchestration.maintenance import prune_and_analyze
from eveflow_etl.etl_run import run_etl
from eveflow_etl.settings import EtlSettings

from tests.etl.helpers import Batch, orders_frame


@pytest.mark.postgres
def test_maintenance_prunes_orders_closed_longer_than_the_retention(pg_dsn):
    settings = EtlSettings(chunk_rows=1000)
    run_etl("esi-orders", [10000002], None, pg_dsn, settings=settings,
            batches=[Batch("esi-orders", 10000002, orders_frame([1, 2, 3, 4]))])
    run_etl("esi-orders", [10000002], None, pg_dsn, settings=settings,
            batches=[Batch("esi-orders", 10000002, orders_frame([1, 2, 3]))])  # order 4 closes now
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        # As if order 3 had closed 100 days ago.
        conn.execute("UPDATE eve.market_orders SET closed_at = now() - interval '100 days' WHERE order_id = 3")
    result = prune_and_analyze(pg_dsn, "eve", "market_orders", retention_days=30, closed_order_retention_days=90)
    assert result["closed_orders_pruned"] == 1
    with psycopg.connect(pg_dsn) as conn:
        left = {r[0]: r[1] for r in conn.execute("SELECT order_id, closed_at IS NULL FROM eve.market_orders")}
    assert left == {1: True, 2: True, 4: False}  # open orders and a recent close stay


@pytest.mark.timeout(60)  # today's main waits for ever on a server that never answers
def test_maintenance_against_a_server_that_never_answers_fails_in_one_redacted_line():
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # accepts the TCP connection (kernel backlog), never says a word
    port = silent.getsockname()[1]
    try:
        with pytest.raises(DestinationError) as info:
            # The DSN's own connect_timeout is honoured (the default is 10 s).
            prune_and_analyze(f"postgresql://eve:s3cret-pw@127.0.0.1:{port}/eve?connect_timeout=1",
                              "eve", "market_orders", 30)
    finally:
        silent.close()
    message = str(info.value)
    assert f"127.0.0.1:{port}/eve" in message and "s3cret-pw" not in message and "\n" not in message
