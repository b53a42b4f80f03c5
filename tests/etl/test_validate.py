"""Validation splits every row into valid or quarantined, with reasons; nothing is dropped."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from eveflow_etl.validate import validate
from tests.etl.helpers import history_frame, orders_frame


def test_clean_history_is_coerced_and_complete():
    frame = history_frame(300)
    valid, quarantine = validate("history", frame, "run-1")
    assert len(valid) == 300 and quarantine.empty
    assert str(valid["region_id"].dtype) == "int32" and valid["date"].dtype.kind == "M"


def test_history_failures_each_have_a_reason():
    frame = history_frame(10)
    frame.loc[0, "volume"] = -1
    frame.loc[1, "lowest"] = 10**9  # lowest above average
    frame.loc[2, "date"] = "2999-12-31"
    frame["type_id"] = frame["type_id"].astype(object)
    frame.loc[3, "type_id"] = "abc"
    frame.loc[4, "date"] = None
    frame = pd.concat([frame, frame.iloc[[5]]], ignore_index=True)  # a duplicate key
    valid, q = validate("history", frame, "run-1")
    assert len(valid) + len(q) == len(frame) == 11
    assert len(q) == 6
    reasons = dict(zip(q["raw"].map(lambda r: json.loads(r)["type_id"]), q["reason"]))
    joined = " | ".join(q["reason"])
    for expected in ("volume: greater_than_or_equal_to(0)", "highest>=average>=lowest", "date_not_in_future",
                     "type_id: coerce_dtype", "date: missing", "duplicate key"):
        assert expected in joined, (expected, reasons)
    assert set(q["run_id"]) == {"run-1"}


@pytest.mark.parametrize("sentinel", ["Null", "ERROR: 404", "ERROR: 400", "Itemid not found", None])
def test_mokaam_sentinels_go_to_quarantine(sentinel):
    frame = pd.DataFrame({"region_id": [1, 1], "type_id": [34, 35], "last_data": ["2025-01-01", sentinel],
                          "vol_week": [1.0, 2.0], "std_dev_week": [0.1, 0.2], "unknown_future_field": ["a", "b"]})
    valid, q = validate("aggregates", frame, "r")
    assert len(valid) == 1 and len(q) == 1
    assert "last_data" in q["reason"].iloc[0]


def test_mokaam_raw_error_rows_are_quarantined_with_that_reason():
    frame = pd.DataFrame({"region_id": [1, 1], "type_id": [34, 35], "last_data": ["2025-01-01", None],
                          "_raw_error": [None, "value is a string, not an object"]})
    valid, q = validate("aggregates", frame, "r")
    assert len(valid) == 1 and "value is a string" in q["reason"].iloc[0]


def test_orders_checks():
    frame = orders_frame([1, 2, 3, 4, 5])
    frame.loc[0, "range"] = "galaxy"
    frame.loc[1, "volume_remain"] = 1000  # above volume_total
    frame.loc[2, "issued"] = "not-a-time"
    frame.loc[3, "price"] = -1
    valid, q = validate("orders", frame, "r")
    assert list(valid["order_id"]) == [5]
    joined = " | ".join(q["reason"])
    assert "range" in joined and "volume_remain<=volume_total" in joined and "issued" in joined and "price" in joined


def test_missing_required_column_quarantines_every_row():
    frame = history_frame(5).drop(columns=["volume"])
    valid, q = validate("history", frame, "r")
    assert valid.empty and len(q) == 5 and "volume" in q["reason"].iloc[0]
