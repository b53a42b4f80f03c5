"""The EvePipeline model: what users write is accepted, and every mistake names its field."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from eveflow_etl.errors import ConfigError
from eveflow_etl.spec import EvePipeline, load_pipeline, parse_pipeline

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))


@pytest.fixture
def document() -> dict:
    return yaml.safe_load((ROOT / "examples" / "pipeline.yaml").read_text())


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_examples_load(path: Path) -> None:
    pipeline = load_pipeline(path)
    assert isinstance(pipeline, EvePipeline)
    assert pipeline.spec.source.regions


def test_defaults_match_the_reference_project(document: dict) -> None:
    for key in ("retries", "retryDelaySeconds", "timeoutSeconds"):
        document["spec"].pop(key)
    spec = parse_pipeline(document).spec
    assert (spec.retries, spec.retry_delay_seconds, spec.timeout_seconds) == (3, 60, 3600)
    assert spec.deletion_policy == "Delete" and spec.suspend is False


def test_round_trip_keeps_camel_case(document: dict) -> None:
    dumped = parse_pipeline(document).model_dump(by_alias=True, exclude_none=True, mode="json")
    assert dumped["spec"]["workPool"]["name"] == "eveflow-process"
    assert dumped["spec"]["destination"]["schema"] == "eve"
    assert parse_pipeline(dumped) == parse_pipeline(document)


def _error_for(document: dict) -> str:
    with pytest.raises(ConfigError) as info:
        parse_pipeline(document)
    return str(info.value)


@pytest.mark.parametrize(
    ("mutate", "field", "hint"),
    [
        (lambda d: d["spec"]["schedules"][0].update(cron="61 * * * *"), "spec.schedules[0].cron", "five fields"),
        (lambda d: d["spec"]["schedules"][0].update(cron="* * *"), "spec.schedules[0].cron", "cron"),
        (lambda d: d["spec"]["schedules"][1].update(timezone="Mars/Olympus"), "spec.schedules[1].timezone", "IANA"),
        (lambda d: d["spec"]["schedules"][1].update(slug="daily"), "spec", "repeated: daily"),
        (lambda d: d["spec"]["workPool"].update(type="lambda"), "spec.workPool.type", "process"),
        (lambda d: d["spec"]["workPool"].update(kubernetes={"namespace": "x"}), "spec.workPool", "type: kubernetes"),
        (lambda d: d["spec"]["workPool"].update(concurrencyLimt=3), "spec.workPool.concurrencyLimt", "unknown field"),
        (lambda d: d["spec"]["worker"].update(queues=["gpu"]), "spec", "not queues of work pool"),
        (lambda d: d["spec"]["source"].update(regions=[]), "spec.source.regions", "at least 1"),
        (lambda d: d["spec"]["source"].update(regions=[42]), "spec.source.regions[0]", "greater than"),
        (lambda d: d["spec"]["destination"].update(schema="eve; drop table x"), "spec.destination.schema", "pattern"),
        (lambda d: d["spec"]["prefect"].update(apiKeySecretRef={"name": "k", "key": "v"}), "spec.prefect", "Prefect Cloud"),
        (lambda d: d["spec"].pop("workPool"), "spec.workPool", "required"),
        (lambda d: d["metadata"].update(name="Bad_Name"), "metadata.name", "pattern"),
    ],
)
def test_mistakes_name_the_field_and_the_fix(document: dict, mutate, field: str, hint: str) -> None:
    bad = copy.deepcopy(document)
    mutate(bad)
    message = _error_for(bad)
    assert f"{field}:" in message or f"{field} " in message, message
    assert hint in message, message


def test_wrong_kind_and_missing_file(tmp_path: Path, document: dict) -> None:
    document["kind"] = "Deployment"
    assert "expected 'EvePipeline'" in _error_for(document)
    with pytest.raises(ConfigError, match="no such file"):
        load_pipeline(tmp_path / "absent.yaml")
    (tmp_path / "broken.yaml").write_text("spec: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_pipeline(tmp_path / "broken.yaml")


@pytest.mark.parametrize(
    ("prefect", "secret_ref"),
    [
        ({"apiUrl": "https://admin:s3cret@prefect.example.org/api"}, "spec.prefect.authStringSecretRef"),
        ({"apiUrl": "http://admin:s3cret@10.0.0.5:4200/api"}, "spec.prefect.authStringSecretRef"),
        ({"mode": "cloud", "apiUrl": "https://s3cret@api.prefect.cloud/api/accounts/a/workspaces/w",
          "apiKeySecretRef": {"name": "prefect", "key": "key"}}, "spec.prefect.apiKeySecretRef"),
    ],
)
def test_credentials_in_the_prefect_url_are_refused(document: dict, prefect: dict, secret_ref: str) -> None:
    # The URL lands in the worker Deployment's env and in rendered files: credentials go in a Secret.
    document["spec"]["prefect"] = prefect
    message = _error_for(document)
    assert "spec.prefect.apiUrl:" in message and "credentials" in message, message
    assert secret_ref in message, message
    assert "s3cret" not in message, message  # the error is printed and goes to the status


@pytest.mark.parametrize("url", ["https://prefect.example.org/api", "http://prefect-server:4200/api",
                                 "https://prefect.example.org/api?owner=ops@example.org",
                                 "https://prefect.example.org/a@b/api"])
def test_an_at_sign_after_the_host_is_not_a_credential(document: dict, url: str) -> None:
    document["spec"]["prefect"] = {"apiUrl": url}
    assert parse_pipeline(document).spec.prefect.api_url == url
