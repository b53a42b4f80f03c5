"""ESI as it is served today: unversioned routes, and the client's pinned X-Compatibility-Date;
the local server serves both route forms and refuses a future date as ESI does."""

from __future__ import annotations

import datetime as dt

import pytest
import requests

from eveflow_etl.devservers.esi_compat import api_date
from eveflow_etl.esi import EsiClient
from eveflow_etl.settings import EtlSettings

from tests.fixtures.esi import settings_for

PINNED = dt.date(2025, 8, 26)


class RecordingSession(requests.Session):
    def __init__(self):
        super().__init__()
        self.sent: list[tuple[str, dict]] = []

    def send(self, request, **kwargs):
        self.sent.append((request.url, dict(request.headers)))
        return super().send(request, **kwargs)


def test_defaults_are_the_unversioned_base_and_the_pinned_date():
    settings = EtlSettings(contact="tests@eveflow.invalid")
    assert str(settings.esi_base_url).rstrip("/") == "https://esi.evetech.net"
    assert settings.esi_compatibility_date == PINNED


def test_a_future_compatibility_date_is_refused_naming_the_setting():
    with pytest.raises(ValueError, match="EVEFLOW_ESI_COMPATIBILITY_DATE .* is in the future"):
        EtlSettings(contact="x@y.z", esi_compatibility_date=api_date() + dt.timedelta(days=1))


@pytest.mark.parametrize("base", ["unversioned", "latest"])
def test_the_client_sends_the_pinned_date_to_esi_only(esi_server, tmp_path, base):
    url = esi_server.url if base == "unversioned" else esi_server.url + "/latest"
    settings = settings_for(esi_server, tmp_path / "d", esi_base_url=url)
    session = RecordingSession()
    with EsiClient(settings, session=session) as client:
        resp = client.get(f"{url}/markets/10000002/history/", {"type_id": 34})
        assert resp.status == 200 and len(resp.json()) > 0
        client.get(f"{esi_server.everef_base_url}/market-history/totals.json", service="EVE Ref")
    (esi_url, esi_headers), (everef_url, everef_headers) = session.sent
    assert esi_headers["X-Compatibility-Date"] == PINNED.isoformat()
    if base == "latest":  # unversioned, the local ESI base is the EVE Ref base too (not so for real)
        assert "X-Compatibility-Date" not in everef_headers


def test_local_server_serves_both_forms_and_refuses_a_future_date(esi_server):
    path = "/markets/10000002/history/?type_id=34"
    latest = requests.get(esi_server.url + "/latest" + path, timeout=10)
    plain = requests.get(esi_server.url + path, headers={"X-Compatibility-Date": api_date().isoformat()}, timeout=10)
    assert latest.status_code == plain.status_code == 200 and latest.json() == plain.json()
    future = requests.get(esi_server.url + path, timeout=10,
                          headers={"X-Compatibility-Date": (api_date() + dt.timedelta(days=1)).isoformat()})
    assert future.status_code == 400 and "is in the future" in future.json()["error"]
    bad = requests.get(esi_server.url + path, headers={"X-Compatibility-Date": "2025-13-01"}, timeout=10)
    assert bad.status_code == 400 and "expected YYYY-MM-DD" in bad.json()["error"]


def test_api_date_turns_at_eleven_utc():
    assert api_date(dt.datetime(2026, 3, 2, 10, 59, tzinfo=dt.UTC)) == dt.date(2026, 3, 1)
    assert api_date(dt.datetime(2026, 3, 2, 11, 0, tzinfo=dt.UTC)) == dt.date(2026, 3, 2)
