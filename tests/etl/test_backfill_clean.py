"""The backfill's whole-column check of a clean day gives exactly what the validator gives, and
every kind of bad row still reaches the validator, which quarantines it with its reason."""

from __future__ import annotations

import bz2
import datetime as dt
import io

import numpy as np
import pandas as pd
import pytest

from eveflow_etl.backfill.clean import clean_history
from eveflow_etl.backfill.prepare import DayTask, _filter, split_day
from eveflow_etl.devservers import esi_data
from eveflow_etl.sources.everef import EVEREF_COLUMNS
from eveflow_etl.validate import validate

DAY = dt.date(2026, 3, 1)
TASK = DayTask(DAY, "00000000-0000-0000-0000-000000000001", None, "", None, None)


def read_day(regions=(10000002, 10000043), types=40) -> pd.DataFrame:
    """A day as the backfill reads it: the local EVE Ref server's file, parsed as prepare parses it."""
    data = b"".join(esi_data.everef_csv_bz2(7, regions, esi_data.market_types(types, 7), DAY))
    frame = pd.read_csv(io.BytesIO(bz2.decompress(data)), usecols=lambda c: c in EVEREF_COLUMNS,
                        dtype={"date": str, "http_last_modified": str}, engine="c")
    return _filter(frame, None, None)


def test_a_clean_day_passes_as_the_validator_passes_it():
    frame = read_day()
    valid, bad = validate("history", frame, TASK.run_id)
    assert len(bad) == 0
    pd.testing.assert_frame_equal(clean_history(frame), valid)


def test_a_day_without_http_last_modified_passes_as_the_validator_passes_it():
    frame = read_day()
    frame["http_last_modified"] = pd.Series([np.nan] * len(frame), dtype=object)  # old files lack it
    valid, bad = validate("history", frame, TASK.run_id)
    assert len(bad) == 0
    pd.testing.assert_frame_equal(clean_history(frame), valid)


def _set(column, value):
    def change(frame: pd.DataFrame) -> pd.DataFrame:
        frame = frame.astype({column: object})
        frame.at[3, column] = value
        return frame
    return change


def _duplicate(frame: pd.DataFrame) -> pd.DataFrame:
    return pd.concat([frame, frame.iloc[[3]]], ignore_index=True)


def _swap_high_low(frame: pd.DataFrame) -> pd.DataFrame:
    frame.loc[3, ["highest", "lowest"]] = frame.loc[3, ["lowest", "highest"]].to_numpy() * [0.5, 2]
    return frame


@pytest.mark.parametrize("spoil, reason", [
    (_set("region_id", -1), "region_id"),
    (_set("type_id", "abc"), "type_id"),
    (_set("average", np.nan), "average"),
    (_set("volume", -5), "volume"),
    (_set("date", "ERROR: 404"), "date: not a date"),
    (_set("date", np.nan), "date: missing"),
    (_set("http_last_modified", "yesterday"), "http_last_modified: not a date"),
    (_duplicate, "duplicate key"),
    (_swap_high_low, "highest>=average>=lowest"),
], ids=["negative-region", "text-type", "missing-price", "negative-volume",
        "unreadable-date", "missing-date", "unreadable-modified", "duplicate-key", "high-below-low"])
def test_a_bad_row_goes_to_the_validator_and_is_quarantined_with_its_reason(spoil, reason):
    frame = spoil(read_day())
    assert clean_history(frame) is None
    valid, bad = split_day(frame, TASK)
    assert len(bad) == 1 and reason in bad["reason"].iloc[0], bad["reason"].tolist()
    assert len(valid) == len(frame) - 1


def test_a_day_in_the_future_is_left_to_the_validator():
    frame = read_day()
    frame["date"] = "2999-01-01"
    assert clean_history(frame) is None
    _, bad = validate("history", frame, TASK.run_id)
    assert len(bad) == len(frame) and "date_not_in_future" in bad["reason"].iloc[0]


def test_a_row_of_another_day_is_quarantined_with_the_reason():
    frame = _set("date", "2026-02-28")(read_day())
    valid, bad = split_day(frame, TASK)
    assert list(bad["reason"]) == ["date 2026-02-28 is not the file's day 2026-03-01"]
    assert len(valid) == len(frame) - 1 and (valid["date"] == pd.Timestamp(DAY)).all()
