"""EVE Ref daily bulk history (``market-history-YYYY-MM-DD.csv.bz2``), checked and cached.

The compressed file is kept on disk (:mod:`eveflow_etl.sources.everef_cache`) and revalidated on
the next run: a 304 re-reads the cached copy, a 200 replaces it once the new file has been read
to the end. The file is parsed chunk by chunk from disk, so memory does not grow with it.

Completeness: after the last row, the rows read (every region, before filtering) must equal
the count EVE Ref publishes for the day in ``/market-history/totals.json``. A mismatch is a
:class:`SourceError` raised while the run is still pulling (a run spools every batch before it
loads any), so nothing of the file is loaded. When the count cannot be checked (the day is not in totals.json
yet, or totals.json is unreachable or malformed) the rows are loaded, a warning is logged and a
final empty batch carries a note saying the day is unverified, for the run's ledger row
(``notes``) and summary.
"""

from __future__ import annotations

import bz2
import datetime as dt
import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

import pandas as pd

from eveflow_etl.datasets import SourceKind
from eveflow_etl.errors import SourceError
from eveflow_etl.esi import EsiClient
from eveflow_etl.esi.bounded import CappedReader, TooLarge, declared_length
from eveflow_etl.esi.cache import remove_file
from eveflow_etl.settings import EtlSettings
from eveflow_etl.sources import SourceBatch
from eveflow_etl.sources.everef_cache import EverefCache

log = logging.getLogger(__name__)

EVEREF_COLUMNS = ["region_id", "type_id", "date", "average", "highest", "lowest", "order_count", "volume",
                  "http_last_modified"]
# Rows whose region_id cannot be read cannot be filtered; they go through under this region id
# for the validator to quarantine, rather than vanish.
UNKNOWN_REGION = 0
_DOWNLOAD_BLOCK = 1 << 16


class MissingDay(SourceError):
    """EVE Ref has no file for the day (HTTP 404): a gap in the archive, not a broken load."""


def everef_url(base: str, day: dt.date) -> str:
    return f"{base}/market-history/{day.year}/market-history-{day.isoformat()}.csv.bz2"


def totals_url(base: str) -> str:
    return f"{base}/market-history/totals.json"


def fetch_everef(client: EsiClient, settings: EtlSettings, regions: Sequence[int] | None,
                 types: Sequence[int] | None, day: dt.date | None) -> Iterator[SourceBatch]:
    day = day or (dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1))
    base = str(settings.everef_base_url).rstrip("/")
    url = everef_url(base, day)
    region_set = set(regions) if regions else None
    type_set = set(types) if types is not None else None
    cache = EverefCache(settings.cache_dir / "everef", settings.everef_cache_max_bytes)
    rows_read = 0
    last_region = regions[0] if regions else UNKNOWN_REGION
    with _local_copy(client, cache, url) as fh:
        for chunk in _read_csv(fh, url, settings.chunk_rows, settings.everef_max_decompressed_bytes):
            rows_read += len(chunk)
            for batch in _split(chunk, region_set, type_set):
                last_region = batch.region_id
                yield batch
    # The batches so far are only spooled (a run loads after the whole pull): an error here loads none.
    note = _check_count(client, base, day, url, rows_read)
    if note:  # an empty batch carries it to the run's ledger row and summary
        yield SourceBatch(SourceKind.EVEREF, last_region, pd.DataFrame(columns=EVEREF_COLUMNS),
                          snapshot_complete=False, notes=(note,))


@contextmanager
def _local_copy(client: EsiClient, cache: EverefCache, url: str) -> Iterator[BinaryIO]:
    """The day's compressed file, open for reading: the cached copy if the server says it has
    not changed (304), else a fresh download, cached only if it was read to the end."""
    entry = cache.lookup(url)
    part: Path | None = None
    try:
        with client.stream(url, service="EVE Ref", headers=entry.conditional_headers() if entry else None) as resp:
            if resp.status_code == 304 and entry is not None:
                client.stats.add(not_modified=1)
                cache.touch(entry)
                log.info("EVE Ref %s: not modified, reading the cached copy (%d bytes)", url, entry.size)
            elif resp.status_code == 404:
                raise MissingDay(f"EVE Ref has no history file for {_day_of(url)} ({url}: HTTP 404)")
            elif resp.status_code != 200:
                raise SourceError(f"EVE Ref history file {url}: HTTP {resp.status_code}")
            else:
                part = _download(client, cache, resp, url, client.settings.everef_max_download_bytes)
                etag, last_modified = resp.headers.get("ETag"), resp.headers.get("Last-Modified")
        if part is None:
            fh: BinaryIO = entry.handle  # type: ignore[union-attr]
        else:
            if entry is not None:
                entry.handle.close()
            fh = open(part, "rb")  # noqa: SIM115 - closed below
        try:
            with fh:
                yield fh
        except SourceError:
            if part is None:  # the cached copy itself is unreadable: fetch it afresh next time
                cache.forget(url)
            raise
        if part is not None:
            try:
                cache.commit(url, part, etag, last_modified)
            except OSError as exc:  # a cache that cannot be written must not fail the load
                log.warning("EVE Ref cache: could not keep %s: %s", url, exc)
    finally:
        if entry is not None:
            entry.handle.close()
        if part is not None:  # failed or abandoned: a broken download never replaces a good copy
            remove_file(part)


def _download(client: EsiClient, cache: EverefCache, resp, url: str, max_bytes: int) -> Path:
    declared = declared_length(resp.headers)
    if declared is not None and declared > max_bytes:
        raise TooLarge(f"EVE Ref history file {url} announces {declared} bytes, more than "
                       f"EVEFLOW_EVEREF_MAX_DOWNLOAD_BYTES ({max_bytes}); nothing downloaded")
    part, out = cache.new_part(url)
    received = 0
    try:
        with out:
            for block in resp.iter_content(_DOWNLOAD_BLOCK):
                out.write(block)
                received += len(block)
                if received > max_bytes:
                    raise TooLarge(f"EVE Ref history file {url} is larger than EVEFLOW_EVEREF_MAX_DOWNLOAD_BYTES "
                                   f"({max_bytes}); download stopped")
    except TooLarge:
        remove_file(part)
        raise
    except Exception as exc:  # noqa: BLE001 - connection dropped, timed out, disk full: one line
        remove_file(part)
        raise SourceError(f"EVE Ref history file {url} broke off after {received} bytes: "
                          f"{type(exc).__name__}: {exc}; the cached copy, if any, is kept".splitlines()[0]) from None
    finally:
        client.stats.add(body_bytes=received)
    return part


def _read_csv(fh: BinaryIO, url: str, chunk_rows: int, max_bytes: int) -> Iterator[pd.DataFrame]:
    rows = 0
    try:
        with bz2.BZ2File(fh) as bz:
            # A few kB of bz2 can expand to gigabytes: the limit is on what comes out.
            raw = CappedReader(bz, max_bytes, f"EVE Ref history file {url}", "EVEFLOW_EVEREF_MAX_DECOMPRESSED_BYTES")
            # Columns by name: the header order changed over the years; http_last_modified is
            # missing from old files.
            reader = pd.read_csv(raw, chunksize=chunk_rows, usecols=lambda c: c in EVEREF_COLUMNS,
                                 dtype={"date": str, "http_last_modified": str})
            for chunk in reader:
                rows += len(chunk)
                yield chunk
    except SourceError:
        raise
    except Exception as exc:  # noqa: BLE001 - truncated or broken bz2, unreadable CSV: one line
        raise SourceError(f"EVE Ref history file {url} broke off after {rows} rows: "
                          f"{type(exc).__name__}: {exc}".splitlines()[0]) from None


def _check_count(client: EsiClient, base: str, day: dt.date, url: str, rows: int) -> str | None:
    """Raise if ``rows`` differs from the published total; return a note if it cannot be checked."""
    expected, reason = _published_total(client, base, day)
    if expected is None:
        note = f"EVE Ref {day.isoformat()}: row count unverified ({reason})"
        log.warning("%s; loading the %d rows read", note, rows)
        return note
    if rows != expected:
        raise SourceError(f"EVE Ref history file {url}: expected {expected} rows (totals.json), got {rows}; "
                          f"nothing of it loaded - retry later, the file or its total may be mid-update")
    log.info("EVE Ref %s: %d rows, as totals.json says", day.isoformat(), rows)
    return None


def _published_total(client: EsiClient, base: str, day: dt.date) -> tuple[int | None, str]:
    """EVE Ref's row count for ``day``, or None and why not."""
    url = totals_url(base)
    try:
        resp = client.get(url, service="EVE Ref")
        if resp.status != 200:
            return None, f"{url}: HTTP {resp.status}"
        totals = resp.json()
    except SourceError as exc:
        return None, str(exc)
    except ValueError:
        return None, f"{url} is not JSON"
    if not isinstance(totals, dict):
        return None, f"{url} is not an object of day -> row count"
    if day.isoformat() not in totals:
        return None, f"{day.isoformat()} not in {url} yet"
    value = totals[day.isoformat()]
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return None, f"{url} gives {value!r} for {day.isoformat()}, not a row count"
    return value, ""


def _day_of(url: str) -> str:
    return url.rsplit("market-history-", 1)[-1].removesuffix(".csv.bz2")


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
