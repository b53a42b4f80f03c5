"""Issue 13, item 4 (operator side): Secret key names stay out of status/Events, and the
operator's prefectTimeoutSeconds is the time the Prefect client allows a call."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
import yaml

from eveflow_etl.orchestration.client import PrefectApi
from eveflow_etl.spec import parse_pipeline

from eveflow_operator.prefect_conn import SecretNotFound, build_connection
from eveflow_operator.settings import OperatorSettings

ROOT = Path(__file__).resolve().parents[2]


def _cloud_pipeline():
    doc = yaml.safe_load((ROOT / "examples" / "pipeline.yaml").read_text())
    doc["spec"]["prefect"] = {"mode": "cloud", "apiUrl": "https://api.prefect.cloud/api/accounts/a/workspaces/w",
                              "apiKeySecretRef": {"name": "prefect-cloud", "key": "key"}}
    return parse_pipeline(doc)


def _secret(**data):
    # opted in as Prefect credentials (the tenant boundary refuses any other Secret first)
    return {"metadata": {"labels": {"eveflow.dev/prefect-credentials": "true"}},
            "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}}


async def test_a_missing_secret_key_is_reported_without_the_secrets_other_key_names():
    async def read_secret(namespace, name):
        return _secret(**{"db-master-password": "x", "aws-root-access-key": "y"})

    with pytest.raises(SecretNotFound) as info:
        await build_connection(_cloud_pipeline(), OperatorSettings(prefect_api_url="http://p:4200/api"), "ns",
                               read_secret)
    message = str(info.value)
    assert "'prefect-cloud' has no key 'key'" in message
    assert "db-master-password" not in message and "aws-root-access-key" not in message


async def test_prefect_timeout_seconds_is_the_timeout_of_every_prefect_call():
    async def read_secret(namespace, name):
        return _secret(key="pnu_secret")

    settings = OperatorSettings(prefect_api_url="http://p:4200/api", prefect_timeout_seconds=2.5)
    conn = await build_connection(_cloud_pipeline(), settings, "ns", read_secret)
    async with PrefectApi(conn) as api:
        timeout = api._http.timeout  # noqa: SLF001 - the value the user's setting must reach
    assert (timeout.read, timeout.write, timeout.pool) == (2.5, 2.5, 2.5) and timeout.connect <= 2.5
