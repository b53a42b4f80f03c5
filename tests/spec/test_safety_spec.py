"""Issue 13, item 4: ``finishedJobTtlSeconds: null`` no longer keeps Jobs for ever without saying so."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from eveflow_etl.spec import parse_pipeline

ROOT = Path(__file__).resolve().parents[2]


def test_a_null_finished_job_ttl_is_refused_with_what_to_give_instead():
    doc = yaml.safe_load((ROOT / "examples" / "pipeline-kubernetes.yaml").read_text())
    doc["spec"]["workPool"].setdefault("kubernetes", {})["finishedJobTtlSeconds"] = None
    with pytest.raises(Exception) as info:
        parse_pipeline(doc)
    message = str(info.value)
    assert "finishedJobTtlSeconds" in message and "for ever" in message and "604800" in message
    doc["spec"]["workPool"]["kubernetes"]["finishedJobTtlSeconds"] = 0
    assert parse_pipeline(doc).spec.work_pool.kubernetes.finished_job_ttl_seconds == 0
