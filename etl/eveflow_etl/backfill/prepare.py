"""One day of EVE Ref, from the server to rows ready for ``COPY … (FORMAT BINARY)``.

Runs in a worker of the backfill's pool (a process by default: bz2 and the CSV parser then run
beside the loader instead of taking turns with it under the GIL). Everything a day needs travels
in a :class:`DayTask` and comes back as a :class:`PreparedDay`: the encoded valid rows in key
order, the quarantined rows, and the row count read before any region/type filter, already
checked against the published total.
"""

from __future__ import annotations

import bz2
import datetime as dt
import io
import threading
import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from eveflow_etl.backfill.clean import clean_history
from eveflow_etl.datasets import Dataset
from eveflow_etl.errors import SourceError
from eveflow_etl.esi import EsiClient
from eveflow_etl.load.binary import encode_rows
from eveflow_etl.load.ddl import HISTORY
from eveflow_etl.load.upsert import sort_by_key
from eveflow_etl.settings import EtlSettings
from eveflow_etl.sources.everef import EVEREF_COLUMNS, MissingDay, _local_copy, everef_url
from eveflow_etl.sources.everef_cache import EverefCache
from eveflow_etl.validate import _quarantine_frame, validate


@dataclass(frozen=True)
class DayTask:
    day: dt.date
    run_id: str
    expected: int | None  # the published total, or None if it cannot be checked
    unverified_reason: str
    regions: tuple[int, ...] | None
    types: tuple[int, ...] | None


@dataclass
class PreparedDay:
    day: dt.date
    run_id: str
    status: str  # ready | missing | failed
    message: str = ""
    rows_read: int = 0
    valid_rows: int = 0
    payload: bytes = b""  # binary COPY tuples, no header/trailer
    quarantine: pd.DataFrame | None = None
    compressed_bytes: int = 0
    downloaded: bool = False  # False: the cached copy was still current (304)
    note: str | None = None
    seconds: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)


# Per worker thread (each thread of a thread pool, the one thread of each pool process).
_local = threading.local()


def init_worker(settings: EtlSettings) -> None:
    """Per worker: one HTTP client (its stats tell a download from a 304) and one cache handle."""
    _local.client = EsiClient(settings)
    _local.cache = EverefCache(settings.cache_dir / "everef", settings.everef_cache_max_bytes)
    _local.base = str(settings.everef_base_url).rstrip("/")


def prepare_day(task: DayTask) -> PreparedDay:
    started = time.perf_counter()
    out = PreparedDay(task.day, task.run_id, "ready")
    try:
        _prepare(task, out)
    except MissingDay as exc:
        out.status, out.message = "missing", str(exc)
    except SourceError as exc:
        out.status, out.message = "failed", str(exc)
    except Exception as exc:  # noqa: BLE001 - one day's surprise must not stop the others
        out.status, out.message = "failed", f"{type(exc).__name__}: {exc}".splitlines()[0]
    out.seconds = time.perf_counter() - started
    return out


def _prepare(task: DayTask, out: PreparedDay) -> None:
    client: EsiClient = _local.client
    url = everef_url(_local.base, task.day)
    t0 = time.perf_counter()
    before = client.stats.body_bytes
    with _local_copy(client, _local.cache, url) as fh:
        compressed = fh.read()
    out.compressed_bytes = len(compressed)
    out.downloaded = client.stats.body_bytes > before
    t1 = time.perf_counter()
    try:
        raw = bz2.decompress(compressed)
    except (OSError, ValueError, EOFError) as exc:
        raise SourceError(f"EVE Ref history file {url} is not readable bz2: {exc}") from None
    del compressed
    t2 = time.perf_counter()
    try:
        # Columns by name: the header order changed over the years; http_last_modified is
        # missing from old files.
        frame = pd.read_csv(io.BytesIO(raw), usecols=lambda c: c in EVEREF_COLUMNS,
                            dtype={"date": str, "http_last_modified": str}, engine="c")
    except Exception as exc:  # noqa: BLE001 - broken CSV: one line
        raise SourceError(f"EVE Ref history file {url} is not readable CSV: "
                          f"{type(exc).__name__}: {exc}".splitlines()[0]) from None
    del raw
    t3 = time.perf_counter()
    out.rows_read = len(frame)
    if task.expected is None:
        out.note = f"EVE Ref {task.day.isoformat()}: row count unverified ({task.unverified_reason})"
    elif out.rows_read != task.expected:
        raise SourceError(f"EVE Ref history file {url}: expected {task.expected} rows (totals.json), got "
                          f"{out.rows_read}; nothing of the day loaded - retry later, the file or its total "
                          f"may be mid-update")
    valid, bad = split_day(_filter(frame, task.regions, task.types), task)
    t4 = time.perf_counter()
    out.valid_rows = len(valid)
    out.payload = encode_rows(sort_by_key(valid, HISTORY.key), HISTORY.columns)
    out.quarantine = bad
    out.timings = {"download": t1 - t0, "bz2": t2 - t1, "csv": t3 - t2, "validate": t4 - t3,
                   "encode": time.perf_counter() - t4}


def split_day(frame: pd.DataFrame, task: DayTask) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """(valid rows, quarantined rows or None) of a day's file: a clean day (nearly all of them)
    by whole-column checks, any other by the validator, which explains each bad row."""
    valid = clean_history(frame)
    if valid is not None and (valid["date"].to_numpy() == np.datetime64(task.day, "ns")).all():
        return valid, None
    frame, off_day = _off_day(frame, task)
    valid, bad = validate(Dataset.HISTORY, frame, task.run_id)
    if off_day is not None:
        bad = pd.concat([off_day, bad], ignore_index=True) if len(bad) else off_day
    return valid, bad if len(bad) else None


def _off_day(frame: pd.DataFrame, task: DayTask) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """Rows dated another day than the file's go to quarantine (a day's file holds that day only,
    and a day is loaded into its own partition); unreadable dates are the validator's."""
    parsed = pd.to_datetime(frame["date"], errors="coerce", format="ISO8601")
    off = parsed.notna() & (parsed.dt.date != task.day)
    if not off.any():
        return frame, None
    reasons = {i: [f"date {frame.at[i, 'date']} is not the file's day {task.day.isoformat()}"]
               for i in frame.index[off]}
    return frame[~off].reset_index(drop=True), _quarantine_frame(frame, reasons, task.run_id)


def _filter(frame: pd.DataFrame, regions: tuple[int, ...] | None, types: tuple[int, ...] | None) -> pd.DataFrame:
    for col in EVEREF_COLUMNS:
        if col not in frame.columns:
            frame[col] = pd.NA
    frame = frame[EVEREF_COLUMNS]
    if regions is None and types is None:
        return frame
    keep = pd.Series(True, index=frame.index)
    # Rows whose ids cannot be read stay, for the validator to quarantine rather than drop.
    if regions is not None:
        region = pd.to_numeric(frame["region_id"], errors="coerce")
        keep &= region.isin(regions) | region.isna()
    if types is not None:
        type_ = pd.to_numeric(frame["type_id"], errors="coerce")
        keep &= type_.isin(types) | type_.isna()
    return frame[keep].reset_index(drop=True)
