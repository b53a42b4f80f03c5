"""Mokaam per-region aggregates (``/API/market/all?regionid=R``), one row per type key.

Every key becomes a row, sentinels and all: ``last_data`` values such as ``"Null"`` or
``"ERROR: 404"`` pass through unchanged, and a value that is not an object becomes a row with
``_raw_error`` set, so the validator quarantines it instead of anything being dropped."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence

import pandas as pd

from eveflow_etl.datasets import SourceKind
from eveflow_etl.errors import SourceError
from eveflow_etl.esi import EsiClient, EsiRequestError
from eveflow_etl.settings import EtlSettings
from eveflow_etl.sources import SourceBatch

NOT_AN_OBJECT = "value is not an object"


# A type id key: ASCII digits, perhaps padded with the whitespace int() accepts. str.isdigit and
# str.strip are wider than int() ('²', '\x1f'): such a key stays a string and is quarantined.
_TYPE_ID_KEY = re.compile(r"\s*[0-9]+\s*", re.ASCII)


def _type_id(key: str) -> int | str:
    return int(key) if _TYPE_ID_KEY.fullmatch(key) else key


def mokaam_rows(payload: dict, region_id: int) -> list[dict]:
    rows = []
    for key, value in payload.items():
        if isinstance(value, dict):
            rows.append({**value, "region_id": region_id, "type_id": _type_id(key)})
        else:
            rows.append({"region_id": region_id, "type_id": _type_id(key), "_raw_error": NOT_AN_OBJECT,
                         "_raw_value": json.dumps(value)})
    return rows


def fetch_mokaam(client: EsiClient, settings: EtlSettings, regions: Sequence[int],
                 types: Sequence[int] | None) -> Iterator[SourceBatch]:
    base = str(settings.mokaam_base_url).rstrip("/")
    wanted = None if types is None else {int(t) for t in types}
    for region_id in regions:
        try:  # 403 is Mokaam's "slow down": back off and try again
            resp = client.get(f"{base}/API/market/all", {"regionid": region_id}, retry_statuses=(403,),
                              backoff=settings.mokaam_backoff_seconds, service="Mokaam")
        except EsiRequestError as exc:
            raise SourceError(f"Mokaam aggregates of region {region_id}: {exc}") from None
        if resp.status != 200:
            raise SourceError(f"Mokaam aggregates of region {region_id}: HTTP {resp.status} ({resp.error_text()})")
        payload = resp.json()
        if not isinstance(payload, dict):
            raise SourceError(f"Mokaam aggregates of region {region_id}: expected a JSON object keyed by "
                              f"type id, got {type(payload).__name__}")
        rows = mokaam_rows(payload, region_id)
        if wanted is not None:
            rows = [r for r in rows if not isinstance(r["type_id"], int) or r["type_id"] in wanted]
        for start in range(0, max(len(rows), 1), settings.chunk_rows):
            chunk = rows[start:start + settings.chunk_rows]
            frame = pd.DataFrame.from_records(chunk) if chunk else pd.DataFrame(columns=["region_id", "type_id"])
            yield SourceBatch(SourceKind.MOKAAM, region_id, frame, snapshot_complete=False)
