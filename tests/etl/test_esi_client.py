"""The ESI client against the local server: cache, limits, retries. Assertions are on what the
server saw (status sequence, counts), never on elapsed time."""

from __future__ import annotations

import socket

import pytest

from eveflow_etl.errors import SourceError
from eveflow_etl.esi import EsiClient, EsiRequestError
from eveflow_etl.esi.ratelimit import ErrorLimitGate, TokenPacer, route_key
from tests.fixtures.esi import settings_for

REGION = 10000002


def orders_url(server, region=REGION):
    return f"{server.esi_base_url}/markets/{region}/orders/"


def statuses(server, part="/orders/"):
    return [status for _, path, status in server.admin.stats()["events"] if part in path]


def test_user_agent_names_app_and_contact(esi_settings):
    with EsiClient(esi_settings) as client:
        assert client.session.headers["User-Agent"].startswith("eveflow/")
        assert "tests@eveflow.invalid" in client.session.headers["User-Agent"]


def test_no_request_before_expires(esi_server, esi_settings):
    with EsiClient(esi_settings) as client:
        first = client.get(orders_url(esi_server), {"order_type": "all", "page": 1})
        again = client.get(orders_url(esi_server), {"order_type": "all", "page": 1})
    # A new client (new process, same cache directory) must not ask either.
    with EsiClient(esi_settings) as other:
        third = other.get(orders_url(esi_server), {"order_type": "all", "page": 1})
    assert esi_server.admin.stats()["requests"] == 1
    assert client.stats.cache_hits == 1 and other.stats.cache_hits == 1 and other.stats.requests == 0
    assert first.json() == again.json() == third.json()
    assert third.pages == first.pages == 3


def test_expired_entry_is_revalidated_with_304_and_no_body(esi_server_factory, tmp_path):
    server = esi_server_factory(orders_expires_seconds=0)
    settings = settings_for(server, tmp_path)
    with EsiClient(settings) as client:
        first = client.get(orders_url(server), {"order_type": "all", "page": 1})
    with EsiClient(settings) as rerun:
        second = rerun.get(orders_url(server), {"order_type": "all", "page": 1})
    assert statuses(server) == [200, 304]
    assert client.stats.body_bytes > 0
    assert rerun.stats.body_bytes == 0 and rerun.stats.not_modified == 1
    assert second.json() == first.json() and second.pages == 3


def test_5xx_is_retried(esi_server, esi_settings):
    esi_server.admin.fault(status=502, count=1)
    esi_server.admin.fault(status=503, count=1)
    with EsiClient(esi_settings) as client:
        resp = client.get(orders_url(esi_server), {"page": 2})
    assert resp.status == 200 and len(resp.json()) == 1000
    assert statuses(esi_server) == [502, 503, 200]
    assert client.stats.retries == 2


def test_5xx_that_persists_fails_after_max_retries(esi_server, esi_settings):
    esi_server.admin.fault(status=503, count=None)
    with EsiClient(esi_settings) as client, pytest.raises(EsiRequestError, match="after 4 attempts: HTTP 503"):
        client.get(orders_url(esi_server), {"page": 1})
    assert statuses(esi_server) == [503] * 4  # esi_max_retries=3 → 4 attempts, then stop


@pytest.mark.parametrize("mode", ["json", "connection"])
def test_truncated_body_is_retried(esi_server, esi_settings, mode):
    esi_server.admin.fault(truncate=mode, count=1)
    with EsiClient(esi_settings) as client:
        resp = client.get(orders_url(esi_server), {"page": 1})
    assert len(resp.json()) == 1000
    assert client.stats.transport_errors == 1 and client.stats.retries == 1
    assert esi_server.admin.stats()["requests"] == 2


def test_timeout_is_retried(esi_server, tmp_path):
    esi_server.admin.fault(delay=1.0, count=1)
    settings = settings_for(esi_server, tmp_path, esi_timeout_seconds=0.3)
    with EsiClient(settings) as client:
        resp = client.get(orders_url(esi_server), {"page": 1})
    assert resp.status == 200
    assert client.stats.transport_errors == 1 and client.stats.requests == 2


def test_420_stops_everyone_until_the_reset(esi_server_factory, tmp_path):
    # Three errors in a two-second window exhaust the error limit.
    server = esi_server_factory(error_limit=3, error_window_seconds=2)
    server.admin.fault(status=503, count=3)
    settings = settings_for(server, tmp_path, esi_max_retries=5)
    with EsiClient(settings) as client:
        resp = client.get(orders_url(server), {"page": 1})
    assert resp.status == 200
    # Exactly one 420: the client did not ask again until the window had reset.
    assert statuses(server) == [503, 503, 503, 420, 200]
    assert client.stats.error_limited == 1 and client.errors.waits_for_reset == 1


def test_429_honours_retry_after(esi_server_factory, tmp_path):
    server = esi_server_factory(rate_limit_tokens=20, rate_window_seconds=2)
    server.admin.drain()  # another client on our IP spent the bucket
    with EsiClient(settings_for(server, tmp_path)) as client:
        resp = client.get(orders_url(server), {"page": 1})
    assert resp.status == 200
    assert statuses(server) == [429, 200]  # waited Retry-After instead of hammering
    assert client.stats.rate_limited == 1


def test_client_paces_itself_to_the_token_bucket(esi_server_factory, tmp_path):
    # 20 tokens a second; 30 history calls cost 60 tokens — more than the bucket holds.
    server = esi_server_factory(rate_limit_tokens=20, rate_window_seconds=1, types_per_region=30)
    settings = settings_for(server, tmp_path, esi_max_concurrency=6)
    types = server.state.types
    from eveflow_etl.sources._pool import bounded_map

    with EsiClient(settings) as client:
        results = list(bounded_map(lambda t: client.get(f"{server.esi_base_url}/markets/{REGION}/history/",
                                                        {"type_id": t}), types, 6))
    assert [r.status for r in results] == [200] * 30
    stats = server.admin.stats()
    assert stats["by_status"] == {"200": 30}
    assert client.stats.rate_limited == 0


def test_unreachable_host_is_one_clear_line(tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    base = f"http://127.0.0.1:{port}/latest"
    from eveflow_etl.settings import EtlSettings

    settings = EtlSettings(data_dir=tmp_path, esi_base_url=base, esi_backoff_seconds=0.01, esi_max_retries=1)
    with EsiClient(settings) as client, pytest.raises(SourceError) as info:
        client.get(f"{base}/markets/{REGION}/orders/", {"page": 1})
    assert str(info.value) == f"cannot reach ESI at {base}: connection refused"


def test_error_gate_spaces_requests_when_remain_is_low():
    clock = [100.0]
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        clock[0] += seconds

    gate = ErrorLimitGate(floor=10, clock=lambda: clock[0], sleep=sleep)
    gate.observe(200, {"X-ESI-Error-Limit-Remain": "50", "X-ESI-Error-Limit-Reset": "30"})
    gate.wait()
    assert sleeps == []  # plenty left: no slow-down
    gate.observe(200, {"X-ESI-Error-Limit-Remain": "4", "X-ESI-Error-Limit-Reset": "20"})
    for _ in range(3):
        gate.wait()
    # 20 s left for 4 errors: one request every 5 s.
    assert sleeps == [5.0, 5.0]
    gate.observe(420, {"X-ESI-Error-Limit-Remain": "0", "X-ESI-Error-Limit-Reset": "7"})
    sleeps.clear()
    gate.wait()
    assert sleeps[0] == 7.0


def test_pacer_learns_group_and_waits_for_tokens():
    clock = [0.0]
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        clock[0] += seconds

    pacer = TokenPacer(clock=lambda: clock[0], sleep=sleep)
    route = route_key("/latest/markets/10000002/orders/")
    assert route == "/latest/markets/{id}/orders/"
    ticket = pacer.acquire(route)
    assert ticket.learning
    pacer.settle(ticket, 200, {"X-Ratelimit-Group": "market-orders", "X-Ratelimit-Limit": "10/10s",
                               "X-Ratelimit-Remaining": "4"})
    for _ in range(2):  # 4 tokens: two requests at once
        pacer.settle(pacer.acquire(route), 200, {})
    assert sleeps == []
    pacer.settle(pacer.acquire(route), 200, {})
    assert sum(sleeps) == pytest.approx(2.0)  # refill is 1 token/s; one request costs 2


def test_concurrency_is_bounded(esi_server, tmp_path):
    # Every answer is slow, so the pool would pile up if the client did not hold back.
    esi_server.admin.fault(path="/history/", delay=0.15, count=None)
    settings = settings_for(esi_server, tmp_path, esi_max_concurrency=2)
    from eveflow_etl.sources._pool import bounded_map

    with EsiClient(settings) as client:
        got = list(bounded_map(lambda t: client.get(f"{esi_server.esi_base_url}/markets/{REGION}/history/",
                                                    {"type_id": t}), esi_server.state.types[:6], 8))
    assert [r.status for r in got] == [200] * 6
    assert esi_server.admin.stats()["max_in_flight"] == 2
