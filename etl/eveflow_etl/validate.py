"""pandera models per dataset and the one function that splits a raw frame into valid and quarantined.

``validate(dataset, frame, run_id)`` never drops a row: every input row ends up either in the
valid frame (coerced to the table's types) or in the quarantine frame with the failed check(s)
and the raw row as JSON, so ``len(valid) + len(quarantine) == len(frame)``.
"""

from __future__ import annotations

import datetime as dt

from collections import defaultdict
from typing import Any, Optional

import numpy as np
import pandas as pd
import pandera.pandas as pa
from pandera.errors import SchemaErrors
from pandera.typing.pandas import Series

from eveflow_etl.datasets import Dataset
from eveflow_etl.load.ddl import MOKAAM_METRICS, MOKAAM_PERIODS

QUARANTINE_COLUMNS = ["run_id", "region_id", "reason", "raw"]
ORDER_RANGES = {"station", "region", "solarsystem", "1", "2", "3", "4", "5", "10", "20", "30", "40"}
# Float noise in upstream averages must not quarantine a row.
_REL_TOL = 1e-9


def _today() -> pd.Timestamp:
    # EVE market days are UTC days; allow the current UTC day, nothing later.
    return pd.Timestamp.now(tz="UTC").tz_localize(None).normalize()


class HistoryModel(pa.DataFrameModel):
    region_id: Series[np.int32] = pa.Field(ge=0)
    type_id: Series[np.int32] = pa.Field(ge=0)
    date: Series[pa.DateTime]
    average: Series[np.float64] = pa.Field(ge=0)
    highest: Series[np.float64] = pa.Field(ge=0)
    lowest: Series[np.float64] = pa.Field(ge=0)
    order_count: Series[np.int64] = pa.Field(ge=0)
    volume: Series[np.int64] = pa.Field(ge=0)

    @pa.check("date", name="date_not_in_future")
    def _not_future(cls, date: Series[pa.DateTime]) -> Series[bool]:
        return date <= _today()

    @pa.dataframe_check(name="highest>=average>=lowest")
    def _ordered(cls, df: pd.DataFrame) -> Series[bool]:
        return (df["highest"] * (1 + _REL_TOL) >= df["average"]) & (df["average"] * (1 + _REL_TOL) >= df["lowest"])

    class Config:
        coerce = True
        unique = ["region_id", "type_id", "date"]


class OrdersModel(pa.DataFrameModel):
    region_id: Series[np.int32] = pa.Field(ge=0)
    order_id: Series[np.int64] = pa.Field(ge=0)
    type_id: Series[np.int32] = pa.Field(ge=0)
    location_id: Series[np.int64] = pa.Field(ge=0)
    system_id: Optional[Series[pd.Int32Dtype]] = pa.Field(ge=0, nullable=True)
    volume_total: Series[np.int64] = pa.Field(ge=0)
    volume_remain: Series[np.int64] = pa.Field(ge=0)
    min_volume: Series[np.int64] = pa.Field(ge=0)
    price: Series[np.float64] = pa.Field(ge=0)
    is_buy_order: Series[bool]
    duration: Series[np.int32] = pa.Field(ge=0)
    issued: Series[pa.DateTime]
    range: Series[str] = pa.Field(isin=sorted(ORDER_RANGES))

    @pa.check("issued", name="issued_not_in_future")
    def _not_future(cls, issued: Series[pa.DateTime]) -> Series[bool]:
        return issued <= _today() + pd.Timedelta(days=1)

    @pa.dataframe_check(name="volume_remain<=volume_total")
    def _remain(cls, df: pd.DataFrame) -> Series[bool]:
        return df["volume_remain"] <= df["volume_total"]

    class Config:
        coerce = True
        unique = ["region_id", "order_id"]


def _aggregates_model() -> type[pa.DataFrameModel]:
    annotations = {
        "region_id": Series[np.int32],
        "type_id": Series[np.int32],
        "last_data": Series[pa.DateTime],
    }
    namespace: dict = {"region_id": pa.Field(ge=0), "type_id": pa.Field(ge=0)}
    for metric in MOKAAM_METRICS:  # optional: Mokaam adds and drops fields over time
        annotations[metric] = Optional[Series[np.float64]]
        namespace[metric] = pa.Field(ge=0, nullable=True)

    def _not_future(cls, last_data):
        return last_data <= _today()

    def _ordered(cls, df: pd.DataFrame):
        ok = pd.Series(True, index=df.index)
        for p in MOKAAM_PERIODS:
            cols = [f"high_{p}", f"avg_price_{p}", f"low_{p}"]
            if all(c in df.columns for c in cols):
                hi, avg, lo = (df[c] for c in cols)
                bad = (hi * (1 + _REL_TOL) < avg) | (avg * (1 + _REL_TOL) < lo)
                ok &= ~bad.fillna(False)  # a missing value is not a violation
        return ok

    namespace["_not_future"] = pa.check("last_data", name="last_data_not_in_future")(_not_future)
    namespace["_ordered"] = pa.dataframe_check(name="high>=avg_price>=low")(_ordered)
    namespace["__annotations__"] = annotations
    namespace["Config"] = type("Config", (), {"coerce": True, "unique": ["region_id", "type_id", "last_data"]})
    return type("AggregatesModel", (pa.DataFrameModel,), namespace)


AggregatesModel = _aggregates_model()

MODELS: dict[Dataset, type[pa.DataFrameModel]] = {
    Dataset.HISTORY: HistoryModel,
    Dataset.ORDERS: OrdersModel,
    Dataset.AGGREGATES: AggregatesModel,
}
_SCHEMAS: dict[Dataset, pa.DataFrameSchema] = {}


def schema_for(dataset: Dataset) -> pa.DataFrameSchema:
    if dataset not in _SCHEMAS:
        schema = MODELS[dataset].to_schema()
        # Keep the first of duplicated keys, quarantine the rest.
        schema.report_duplicates = "exclude_first"
        _SCHEMAS[dataset] = schema
    return _SCHEMAS[dataset]


# --- pre-parsing of date-like columns (clear reasons for sentinels such as "ERROR: 404") -------


def _parse_dates(frame: pd.DataFrame, column: str, reasons: dict, *, utc: bool, required: bool) -> None:
    if column not in frame.columns:
        return
    raw = frame[column]
    # Only text can be an ISO date; anything else (false, 3, a list) is unparsable, not a crash:
    # pandas turns an all-bool column into a tz-naive result that tz_convert refuses.
    text = raw.where(raw.map(lambda v: isinstance(v, (str, dt.date))), None).astype(object)
    parsed = pd.to_datetime(text, errors="coerce", utc=utc, format="ISO8601")
    if utc:
        if getattr(parsed.dt, "tz", None) is None:
            parsed = parsed.dt.tz_localize("UTC")
        parsed = parsed.dt.tz_convert("UTC").dt.tz_localize(None)
    blank = raw.isna() | (raw.astype(str).str.strip() == "")
    unparsable = parsed.isna() & ~blank
    for idx, value in raw[unparsable].items():
        reasons[idx].append(f"{column}: not a date: {str(value)[:60]!r}")
    if required:
        for idx in raw.index[blank]:
            reasons[idx].append(f"{column}: missing")
    frame[column] = parsed


def _prepare(dataset: Dataset, frame: pd.DataFrame, reasons: dict) -> pd.DataFrame:
    frame = frame.copy()
    if "_raw_error" in frame.columns:
        for idx, value in frame["_raw_error"].dropna().items():
            reasons[idx].append(f"source: {value}")
    if dataset is Dataset.HISTORY:
        _parse_dates(frame, "date", reasons, utc=False, required=True)
        _parse_dates(frame, "http_last_modified", reasons, utc=True, required=False)
    elif dataset is Dataset.ORDERS:
        _parse_dates(frame, "issued", reasons, utc=True, required=True)
    else:
        _parse_dates(frame, "last_data", reasons, utc=False, required=True)
    return frame


def _reason(row: pd.Series) -> str:
    check = str(row["check"])
    column = row["column"]
    if row["schema_context"] == "DataFrameSchema" and column is not None and "uniqueness" not in check:
        return check  # a dataframe-level check is reported once per row, not per column
    if "uniqueness" in check:
        return "duplicate key"
    return f"{column}: {check}" if column is not None and not pd.isna(column) else check


def validate(dataset: Dataset | str, frame: pd.DataFrame, run_id: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split ``frame`` into (valid rows coerced to the model, quarantine rows).

    Quarantine columns: ``run_id, region_id, reason, raw`` (raw = the input row as JSON).
    """
    dataset = Dataset(dataset)
    frame = frame.reset_index(drop=True)
    reasons: dict[int, list[str]] = defaultdict(list)
    work = _prepare(dataset, frame, reasons)
    schema = schema_for(dataset)
    valid = None
    # A failed coercion hides later checks on that column, so re-check the survivors until clean.
    for _round in range(5):
        candidates = work.drop(index=list(reasons)) if reasons else work
        if candidates.empty:
            valid = candidates
            break
        try:
            valid = schema.validate(candidates, lazy=True)
            break
        except SchemaErrors as exc:
            cases = exc.failure_cases
            located = cases[cases["index"].notna()]
            if located.empty:  # e.g. a required column is missing: no row can pass
                why = "; ".join(sorted({f"{_reason(r)}: {r['failure_case']}" for _, r in cases.iterrows()}))
                for idx in candidates.index:
                    reasons[idx].append(why)
                valid = candidates.iloc[0:0]
                break
            for (idx, why) in {(int(r["index"]), _reason(r)) for _, r in located.iterrows()}:
                reasons[idx].append(why)
    else:  # pragma: no cover - five rounds always settle
        raise RuntimeError("validation did not converge")
    quarantine = _quarantine_frame(frame, reasons, run_id)
    assert len(valid) + len(quarantine) == len(frame), "validation lost rows"
    return valid.reset_index(drop=True), quarantine


def _quarantine_region(bad: pd.DataFrame) -> Any:
    """The region a quarantined row names, where it is a whole number that fits the column; else
    NA (the raw row keeps what was there: 'INF', 2**40 or 'abc' must not fail the quarantine)."""
    if "region_id" not in bad.columns:
        return pd.NA
    region = pd.to_numeric(bad["region_id"], errors="coerce").astype("float64")
    fits = region.between(-(2**31), 2**31 - 1) & (region % 1 == 0)
    return region.where(fits).astype("Int32").to_numpy()


def _quarantine_frame(frame: pd.DataFrame, reasons: dict[int, list[str]], run_id: str) -> pd.DataFrame:
    if not reasons:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in QUARANTINE_COLUMNS})
    idx = sorted(reasons)
    bad = frame.loc[idx]
    raw = bad.to_json(orient="records", lines=True, date_format="iso", default_handler=str).splitlines()
    return pd.DataFrame({
        "run_id": run_id,
        "region_id": _quarantine_region(bad),
        "reason": ["; ".join(dict.fromkeys(reasons[i])) for i in idx],
        "raw": raw,
    })
