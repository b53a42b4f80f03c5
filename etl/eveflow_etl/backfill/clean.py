"""A clean day of EVE Ref history, validated with a handful of numpy comparisons.

The pandera model (``validate.HistoryModel``) is the definition of a valid history row; running
it costs ~50 ms of GIL-holding Python per 50k-row day (a per-value ``isinstance`` map, coercion,
lazy error collection), a third of a backfill worker's time after bz2. Almost every day of the
archive is clean, so :func:`clean_history` checks the same rules over whole columns and, only if
*every* row passes, returns the frame exactly as ``validate`` would (same dtypes, same values).
Any row that fails any rule, or a column of an unexpected type, returns None and the day goes
through ``validate``, which finds and explains each bad row. ``tests/etl/test_backfill_clean.py``
holds both paths to the same output.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from eveflow_etl.validate import _REL_TOL, HistoryModel, _today

_INT32_MAX = np.iinfo(np.int32).max
_IDS = ("region_id", "type_id")
_COUNTS = ("order_count", "volume")
_PRICES = ("average", "highest", "lowest")
KEY = list(HistoryModel.Config.unique)  # the model's own uniqueness rule


def clean_history(frame: pd.DataFrame) -> pd.DataFrame | None:
    """``frame`` (the EVE Ref columns, as read) coerced like ``validate``, or None if any row
    would be quarantined or the columns are not plainly typed (then ``validate`` decides)."""
    if len(frame) == 0 or "http_last_modified" not in frame.columns:
        return None
    out = {}
    for col in _IDS + _COUNTS:
        values = frame[col].to_numpy()
        if values.dtype.kind not in "iu" or values.min() < 0:
            return None
        if col in _IDS and values.max() > _INT32_MAX:
            return None
        out[col] = values.astype(np.int32 if col in _IDS else np.int64, copy=False)
    for col in _PRICES:
        values = frame[col].to_numpy()
        if values.dtype.kind not in "iuf":
            return None
        values = values.astype(np.float64, copy=False)
        if not (values >= 0).all():  # NaN fails too: the model's prices are not nullable
            return None
        out[col] = values
    hi, avg, lo = out["highest"], out["average"], out["lowest"]
    if not ((hi * (1 + _REL_TOL) >= avg) & (avg * (1 + _REL_TOL) >= lo)).all():
        return None
    date = _dates(frame["date"], utc=False)
    if date is None or date.isna().any() or (date > _today()).any():
        return None
    modified = frame["http_last_modified"]
    parsed = _dates(modified, utc=True)
    # Missing is allowed; anything unreadable (even blank text) is left to validate.
    if parsed is None or (parsed.isna() & modified.notna()).any():
        return None
    # The model's DateTime is nanoseconds; http_last_modified (not in the model) keeps its parse.
    clean = pd.DataFrame({"region_id": out["region_id"], "type_id": out["type_id"],
                          "date": date.to_numpy(dtype="datetime64[ns]"), "average": avg, "highest": hi, "lowest": lo, "order_count": out["order_count"],
                          "volume": out["volume"], "http_last_modified": parsed.to_numpy()})
    if clean.duplicated(KEY).any():
        return None
    return clean


def _dates(column: pd.Series, *, utc: bool) -> pd.Series | None:
    """ISO text → datetimes as ``validate`` parses them (naive; UTC for timestamps); None if the
    column holds anything but text and missing values (``validate`` explains those)."""
    if pd.api.types.infer_dtype(column, skipna=True) not in ("string", "empty"):
        return None
    parsed = pd.to_datetime(column, errors="coerce", utc=utc, format="ISO8601")
    if utc:
        parsed = parsed.dt.tz_convert("UTC").dt.tz_localize(None)
    return parsed
