"""A Prefect URL with credentials in it (``https://user:pass@host/api``, ``?token=…``) is never
printed: not by describe()/repr, not in the errors the sync library, the worker and the CLI raise."""

from __future__ import annotations

import pytest

from eveflow_etl.errors import ConfigError
from eveflow_etl.orchestration.server import free_port
from eveflow_etl.orchestration.sync import sync_pipeline
from eveflow_etl.orchestration.types import PrefectAuthError, PrefectConnection, PrefectUnavailable, redact_url
from eveflow_etl.orchestration.worker_process import check_api, connection_from_env
from eveflow_etl.spec import parse_pipeline
from tests.fixtures.prefect import pipeline_document

PASSWORD = "url-pw-7c1e"
TOKEN = "url-token-93ad"


@pytest.mark.parametrize(("url", "shown"), [
    (f"https://eve:{PASSWORD}@prefect.example:4200/api", "https://***@prefect.example:4200/api"),
    (f"https://{TOKEN}@prefect.example/api", "https://***@prefect.example/api"),
    (f"https://prefect.example/api?token={TOKEN}&region=eu", "https://prefect.example/api?token=***&region=***"),
    (f"https://prefect.example/api?{TOKEN}", "https://prefect.example/api?***"),
    (f"https://prefect.example/api#{TOKEN}", "https://prefect.example/api#***"),
    (f"eve:{PASSWORD}@prefect.example/api", "***@prefect.example/api"),
    (f"http://[::1:{PASSWORD}/api", "<unparsable URL>"),
    ("http://127.0.0.1:4200/api", "http://127.0.0.1:4200/api"),
])
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_describe_and_repr_show_the_host_but_no_credential() -> None:
    conn = PrefectConnection(f"https://eve:{PASSWORD}@prefect.example/api?token={TOKEN}", api_key="k-secret")
    for text in (conn.describe(), repr(conn), str(conn), f"{conn}"):
        assert PASSWORD not in text and TOKEN not in text and "k-secret" not in text, text
        assert "prefect.example/api" in text
    assert conn.describe() == "https://***@prefect.example/api?token=*** (api key)"


def _unreachable_url() -> str:
    return f"http://eve:{PASSWORD}@127.0.0.1:{free_port()}/api?token={TOKEN}"


async def test_sync_error_for_an_unreachable_api_names_the_host_not_the_password() -> None:
    pipeline = parse_pipeline(pipeline_document("redact", "redact-pool"))
    with pytest.raises(PrefectUnavailable) as error:
        await sync_pipeline(pipeline, PrefectConnection(_unreachable_url()))
    message = str(error.value)
    assert PASSWORD not in message and TOKEN not in message, message
    assert "http://***@127.0.0.1:" in message


@pytest.mark.prefect
async def test_refused_credentials_error_hides_the_urls_password(prefect_cloud) -> None:
    """The Cloud stand-in wants a bearer key; the user:password in the URL is refused (401)."""
    url = prefect_cloud.api_url.replace("http://", f"http://eve:{PASSWORD}@", 1)
    pipeline = parse_pipeline(pipeline_document("redact", "redact-pool"))
    with pytest.raises(PrefectAuthError) as error:
        await sync_pipeline(pipeline, PrefectConnection(url))
    message = str(error.value)
    assert PASSWORD not in message and "http://***@127.0.0.1:" in message, message


def test_worker_errors_hide_the_urls_password() -> None:
    with pytest.raises(PrefectUnavailable) as unreachable:
        check_api(PrefectConnection(_unreachable_url()), "a-pool", timeout=2.0)
    with pytest.raises(ConfigError) as bad_scheme:
        connection_from_env(f"ftp://eve:{PASSWORD}@prefect.example/api", environ={})
    for error in (unreachable, bad_scheme):
        assert PASSWORD not in str(error.value) and TOKEN not in str(error.value), str(error.value)
        assert "***@" in str(error.value)
