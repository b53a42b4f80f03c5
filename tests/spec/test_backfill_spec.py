"""``source: {kind: everef, backfill: {from: …}, verifyDays: N}`` in the model, the deployments
(and so the render targets, which read them) and the refusals that name the field."""

from __future__ import annotations

import copy
import datetime as dt
from pathlib import Path

import pytest
import yaml

from eveflow_etl.errors import ConfigError
from eveflow_etl.spec import parse_pipeline

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def document() -> dict:
    doc = yaml.safe_load((ROOT / "examples" / "pipeline.yaml").read_text())
    doc["spec"]["source"] = {"kind": "everef", "regions": [10000002], "backfill": {"from": "2025-01-01"},
                             "verifyDays": 30}
    return doc


def test_backfill_and_verify_days_reach_the_flow_parameters(document: dict) -> None:
    from eveflow_etl.orchestration.deployments import desired_deployments

    pipeline = parse_pipeline(document)
    assert pipeline.spec.source.backfill.from_ == "2025-01-01" and pipeline.spec.source.verify_days == 30
    etl = desired_deployments(pipeline, "default")[0]
    assert etl.body["parameters"]["backfill_from"] == "2025-01-01"
    assert etl.body["parameters"]["verify_days"] == 30
    assert {"backfill_from", "verify_days"} <= set(etl.body["parameter_openapi_schema"]["properties"])
    dumped = pipeline.model_dump(by_alias=True, exclude_none=True, mode="json")
    assert dumped["spec"]["source"]["backfill"] == {"from": "2025-01-01"}
    assert dumped["spec"]["source"]["verifyDays"] == 30


def test_pipelines_without_backfill_keep_their_parameters(document: dict) -> None:
    from eveflow_etl.orchestration.deployments import desired_deployments

    del document["spec"]["source"]["backfill"], document["spec"]["source"]["verifyDays"]
    params = desired_deployments(parse_pipeline(document), "default")[0].body["parameters"]
    assert "backfill_from" not in params and "verify_days" not in params


def test_vm_render_carries_the_backfill(document: dict) -> None:
    from eveflow_etl.render.vm import build_prefect_yaml

    rendered = build_prefect_yaml(parse_pipeline(document))["deployments"][0]["parameters"]
    assert rendered["backfill_from"] == "2025-01-01" and rendered["verify_days"] == 30


@pytest.mark.parametrize("change, message", [
    (lambda s: s.update(kind="esi-history"), "need kind everef, got kind esi-history"),
    (lambda s: s.update(backfill={"from": "2025-02-30"}), "backfill.from must be a date YYYY-MM-DD"),
    (lambda s: s.update(backfill={"from": "25-01-01"}), "source.backfill.from"),
    (lambda s: s.update(backfill={"from": dt.date.today().replace(year=dt.date.today().year + 1).isoformat()}),
     "is not in the past"),
    (lambda s: s.update(verifyDays=-1), "source.verifyDays"),
])
def test_mistakes_name_the_field(document: dict, change, message: str) -> None:
    doc = copy.deepcopy(document)
    change(doc["spec"]["source"])
    with pytest.raises(ConfigError) as err:
        parse_pipeline(doc)
    assert message in str(err.value)
