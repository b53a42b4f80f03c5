"""PostgreSQL binary COPY encoding of a DataFrame, vectorised with numpy.

psycopg's ``write_row`` converts every value through Python objects; here each column becomes a
big-endian numpy array once, and rows are laid out as numpy structured records. A binary COPY
row is fixed-size only when its NULLs and text lengths are, so rows are grouped by that layout
(few groups in practice: NULL patterns, the dozen ``range`` strings) and each group is one
structured array. Row order inside a COPY does not matter to the staging table.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from eveflow_etl.load.ddl import Column

HEADER = b"PGCOPY\n\xff\r\n\x00" + b"\x00\x00\x00\x00" + b"\x00\x00\x00\x00"
TRAILER = b"\xff\xff"

_PG_EPOCH_DAYS = 10957  # 2000-01-01 - 1970-01-01
_PG_EPOCH_US = _PG_EPOCH_DAYS * 86_400_000_000
_FIXED = {"int4": ">i4", "int8": ">i8", "float8": ">f8", "bool": "u1", "date": ">i4", "timestamptz": ">i8"}


def _column_arrays(series: pd.Series, pgtype: str) -> tuple[np.ndarray, np.ndarray | None]:
    """(values, null-mask or None); values already in their wire dtype (text: bytes 'S')."""
    mask = series.isna().to_numpy()
    has_null = bool(mask.any())
    if pgtype in ("int4", "int8"):
        values = (series.fillna(0) if has_null else series).to_numpy(dtype=np.int64)
    elif pgtype == "float8":
        values = series.to_numpy(dtype=np.float64, na_value=np.nan)
    elif pgtype == "bool":
        values = (series.fillna(False) if has_null else series).to_numpy(dtype=bool).view(np.uint8)
    elif pgtype == "date":
        days = pd.to_datetime(series).to_numpy(dtype="datetime64[D]")
        values = days.astype(np.int64) - _PG_EPOCH_DAYS
    elif pgtype == "timestamptz":
        ts = pd.to_datetime(series, utc=True).dt.tz_localize(None)
        values = ts.to_numpy(dtype="datetime64[us]").astype(np.int64) - _PG_EPOCH_US
    elif pgtype in ("text", "jsonb"):
        strings = series.fillna("").astype(str).to_numpy(dtype=str)
        values = np.char.encode(strings, "utf-8") if strings.size else np.array([], dtype="S1")
        if pgtype == "jsonb":  # jsonb binary format: version byte 1, then the text
            values = np.char.add(b"\x01", values)
    else:
        raise ValueError(f"unsupported column type {pgtype}")
    if pgtype in _FIXED:
        values = values.astype(_FIXED[pgtype], copy=False)
    return values, (mask if has_null else None)


def encode_rows(frame: pd.DataFrame, columns: Sequence[Column]) -> bytes:
    """Binary COPY tuples (no header/trailer) for ``columns`` of ``frame``; absent columns are NULL."""
    n = len(frame)
    if n == 0:
        return b""
    arrays, widths = [], []  # widths: int (fixed) or per-row int32 array (-1 = NULL)
    for col in columns:
        if col.name not in frame.columns:
            arrays.append(None)
            widths.append(np.full(n, -1, dtype=np.int32))
            continue
        values, mask = _column_arrays(frame[col.name], col.pgtype)
        arrays.append(values)
        if col.pgtype in _FIXED:
            size = np.dtype(_FIXED[col.pgtype]).itemsize
            widths.append(size if mask is None else np.where(mask, -1, size).astype(np.int32))
        else:
            lengths = np.char.str_len(values).astype(np.int32) if n else np.zeros(0, np.int32)
            widths.append(lengths if mask is None else np.where(mask, -1, lengths).astype(np.int32))

    varying = [i for i, w in enumerate(widths) if not isinstance(w, int)]
    if varying:
        layout = np.stack([widths[i] for i in varying], axis=1)
        patterns, inverse = np.unique(layout, axis=0, return_inverse=True)
        inverse = inverse.reshape(-1)
        groups = [(patterns[g], np.nonzero(inverse == g)[0]) for g in range(len(patterns))]
    else:
        groups = [(np.zeros(0, np.int32), None)]

    out = []
    for pattern, rows in groups:
        width_of = dict(zip(varying, (int(w) for w in pattern)))
        fields = [("n", ">i2")]
        for i, col in enumerate(columns):
            w = widths[i] if i not in width_of else width_of[i]
            fields.append((f"l{i}", ">i4"))
            if w > 0:
                fields.append((f"v{i}", _FIXED.get(col.pgtype, f"S{w}")))
        count = n if rows is None else len(rows)
        rec = np.empty(count, dtype=np.dtype(fields))
        rec["n"] = len(columns)
        for i, col in enumerate(columns):
            w = widths[i] if i not in width_of else width_of[i]
            rec[f"l{i}"] = w
            if w > 0:
                rec[f"v{i}"] = arrays[i] if rows is None else arrays[i][rows]
        out.append(rec.tobytes())
    return b"".join(out)


def encode_copy(frame: pd.DataFrame, columns: Sequence[Column]) -> bytes:
    """A complete binary COPY stream (header, rows, trailer)."""
    return HEADER + encode_rows(frame, columns) + TRAILER
