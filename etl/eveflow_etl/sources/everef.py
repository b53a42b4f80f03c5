"""EVE Ref daily bulk history (``market-history-YYYY-MM-DD.csv.bz2``), streamed: the download is
decompressed and parsed chunk by chunk, so memory does not grow with the file."""

from __future__ import annotations

import bz2
import datetime as dt
from collections.abc import Iterator, Sequence

import pandas as pd

from eveflow_etl.datasets import SourceKind
from eveflow_etl.errors import SourceError
from eveflow_etl.esi import EsiClient
from eveflow_etl.settings import EtlSettings
from eveflow_etl.sources import SourceBatch

EVEREF_COLUMNS = ["region_id", "type_id", "date", "average", "highest", "lowest", "order_count", "volume",
                  "http_last_modified"]
# Rows whose region_id cannot be read cannot be filtered; they go through under this region id
# for the validator to quarantine, rather than vanish.
UNKNOWN_REGION = 0


def everef_url(base: str, day: dt.date) -> str:
    return f"{base}/market-history/{day.year}/market-history-{day.isoformat()}.csv.bz2"


def fetch_everef(client: EsiClient, settings: EtlSettings, regions: Sequence[int] | None,
                 types: Sequence[int] | None, day: dt.date | None) -> Iterator[SourceBatch]:
    day = day or (dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1))
    url = everef_url(str(settings.everef_base_url).rstrip("/"), day)
    region_set = set(regions) if regions else None
    type_set = set(types) if types is not None else None
    rows_read = 0
    with client.stream(url, service="EVE Ref") as resp:
        if resp.status_code == 404:
            raise SourceError(f"EVE Ref has no history file for {day.isoformat()} ({url}: HTTP 404)")
        if resp.status_code != 200:
            raise SourceError(f"EVE Ref history file {url}: HTTP {resp.status_code}")
        resp.raw.decode_content = True
        try:
            with bz2.BZ2File(resp.raw) as fh:
                # Columns by name: the header order changed over the years; http_last_modified is
                # missing from old files.
                reader = pd.read_csv(fh, chunksize=settings.chunk_rows, usecols=lambda c: c in EVEREF_COLUMNS,
                                     dtype={"date": str, "http_last_modified": str})
                for chunk in reader:
                    rows_read += len(chunk)
                    yield from _split(chunk, region_set, type_set)
        except SourceError:
            raise
        except Exception as exc:  # truncated download, broken bz2, unreadable CSV
            raise SourceError(f"EVE Ref history file {url} broke off after {rows_read} rows: "
                              f"{type(exc).__name__}: {exc}".splitlines()[0]) from None


def _split(chunk: pd.DataFrame, regions: set[int] | None, types: set[int] | None) -> Iterator[SourceBatch]:
    for col in EVEREF_COLUMNS:
        if col not in chunk.columns:
            chunk[col] = pd.NA
    region = pd.to_numeric(chunk["region_id"], errors="coerce")
    type_ = pd.to_numeric(chunk["type_id"], errors="coerce")
    keep = pd.Series(True, index=chunk.index)
    if regions is not None:
        keep &= region.isin(regions) | region.isna()
    if types is not None:
        keep &= type_.isin(types) | type_.isna()
    chunk = chunk[keep]
    region = region[keep].fillna(UNKNOWN_REGION).astype("int64")
    for region_id, part in chunk.groupby(region, sort=True):
        yield SourceBatch(SourceKind.EVEREF, int(region_id), part.reset_index(drop=True)[EVEREF_COLUMNS],
                          snapshot_complete=False)
