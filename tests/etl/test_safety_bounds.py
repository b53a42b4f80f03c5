"""Issue 13, item 3: what servers send is bounded, each with a clear error.

Written as a hostile (or broken) upstream: a day-long Retry-After, a 0/0s rate limit, an
X-Pages of 100,000, a body far larger than asked, a server trickling its answer, an EVE Ref file
larger than allowed or decompressing to gigabytes.
"""

from __future__ import annotations

import bz2
import datetime as dt
import io

import pytest

from eveflow_etl.datasets import SourceKind
from eveflow_etl.errors import SourceError
from eveflow_etl.esi import EsiClient, EsiRequestError
from eveflow_etl.sources import fetch

from tests.fixtures.esi import settings_for

FORGE = 10000002
DAY = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=3)


def _history_url(server, type_id=34):
    return f"{server.esi_base_url}/markets/{FORGE}/history/?type_id={type_id}"


@pytest.mark.timeout(120)  # today's main sleeps for the whole day the server asks for
@pytest.mark.parametrize("status,headers", [
    (429, {"Retry-After": "86400"}),
    (420, {"X-ESI-Error-Limit-Reset": "86400", "X-ESI-Error-Limit-Remain": "0"}),
], ids=["429-retry-after-a-day", "420-reset-in-a-day"])
def test_a_day_long_wait_asked_by_the_server_fails_the_request_at_once(esi_server, tmp_path, status, headers):
    esi_server.admin.fault(path="/history/", status=status, headers=headers, count=None)
    with EsiClient(settings_for(esi_server, tmp_path)) as client, pytest.raises(EsiRequestError) as info:
        client.get(_history_url(esi_server))
    message = str(info.value)
    assert "86400" in message and "EVEFLOW_HTTP_MAX_WAIT_SECONDS (300)" in message and "\n" not in message


def test_a_zero_rate_limit_header_does_not_crash_the_pull(esi_server, tmp_path):
    esi_server.admin.fault(path="/history/", headers={"X-Ratelimit-Limit": "0/0s"}, count=None)
    batches = list(fetch(SourceKind.ESI_HISTORY, [FORGE], [34, 35, 36], settings_for(esi_server, tmp_path)))
    assert sum(len(b.frame) for b in batches) > 0


def test_an_absurd_x_pages_fails_the_pull_before_asking_for_the_pages(esi_server, tmp_path):
    esi_server.admin.fault(path="/orders/", page=1, headers={"X-Pages": "100000"}, count=None)
    with pytest.raises(SourceError, match="X-Pages 100000 is more than EVEFLOW_ESI_ORDERS_MAX_PAGES"):
        list(fetch(SourceKind.ESI_ORDERS, [FORGE], None, settings_for(esi_server, tmp_path)))
    asked = [p for _, p, _ in esi_server.admin.stats()["events"] if "/orders/" in p]
    assert len(asked) <= 3  # page 1 only (and its retries), never 100,000 pages


def test_a_body_larger_than_allowed_is_refused(esi_server, tmp_path):
    esi_server.admin.fault(path="/history/", body_bytes=8 * 2**20, count=None)  # 8 MB for a ~40 kB answer
    settings = settings_for(esi_server, tmp_path, http_max_body_bytes=2**20)
    with EsiClient(settings) as client, pytest.raises(EsiRequestError) as info:
        client.get(_history_url(esi_server))
    assert "EVEFLOW_HTTP_MAX_BODY_BYTES (1048576" in str(info.value)


def test_the_http_timeout_is_for_the_whole_request_not_each_read(esi_server, tmp_path):
    # Ten pieces 0.4 s apart: no single read waits 1 s, the whole answer takes 4 s.
    esi_server.admin.fault(path="/history/", trickle=0.4, count=None)
    settings = settings_for(esi_server, tmp_path, esi_timeout_seconds=1, esi_max_retries=0)
    with EsiClient(settings) as client, pytest.raises(EsiRequestError, match="timed out"):
        client.get(_history_url(esi_server))


@pytest.mark.parametrize("setting,words", [
    ("everef_max_download_bytes", "EVEFLOW_EVEREF_MAX_DOWNLOAD_BYTES (1024"),
    ("everef_max_decompressed_bytes", "EVEFLOW_EVEREF_MAX_DECOMPRESSED_BYTES (1024"),
])
def test_an_everef_file_past_its_limits_fails_the_pull(esi_server, tmp_path, setting, words):
    settings = settings_for(esi_server, tmp_path, **{setting: 1024})
    with pytest.raises(SourceError) as info:
        list(fetch(SourceKind.EVEREF, [FORGE], None, settings, day=DAY))
    assert words in str(info.value) and "\n" not in str(info.value)


def test_a_bz2_bomb_stops_at_the_decompressed_limit():
    from eveflow_etl.esi.bounded import CappedReader, TooLarge

    bomb = bz2.compress(b"0" * (64 * 2**20))  # 64 MB of zeros in ~100 bytes
    assert len(bomb) < 1000
    reader = CappedReader(bz2.BZ2File(io.BytesIO(bomb)), 2**20, "bomb.csv.bz2", "EVEFLOW_X")
    with pytest.raises(TooLarge, match=r"decompresses to more than EVEFLOW_X \(1048576 bytes\)"):
        while reader.read(65536):
            pass
    assert reader.read_bytes <= 2**20 + 65536


@pytest.mark.parametrize("value", ["\u00b2", " 12\u00b3", "\u0661\u0662"])  # '²', '³': digits to str.isdigit
def test_a_content_length_of_unicode_digits_is_ignored_not_a_crash(value):
    from eveflow_etl.esi.bounded import declared_length

    assert declared_length({"Content-Length": value}) is None
