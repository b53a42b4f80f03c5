"""ESI market orders: a region's whole order book, every X-Pages page, as one snapshot batch."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import pandas as pd

from eveflow_etl.datasets import SourceKind
from eveflow_etl.errors import SourceError
from eveflow_etl.esi import EsiClient, EsiRequestError, EsiResponse
from eveflow_etl.settings import EtlSettings
from eveflow_etl.sources import SourceBatch
from eveflow_etl.sources._pool import bounded_map

ORDER_COLUMNS = ["region_id", "order_id", "type_id", "location_id", "system_id", "volume_total",
                 "volume_remain", "min_volume", "price", "is_buy_order", "duration", "issued", "range"]


def _page(client: EsiClient, url: str, region_id: int, page: int) -> EsiResponse:
    try:
        resp = client.get(url, {"order_type": "all", "page": page})
    except EsiRequestError as exc:
        raise SourceError(f"ESI orders of region {region_id}: page {page} failed ({exc}); "
                          f"nothing of this region's snapshot was loaded") from None
    if resp.status != 200:
        raise SourceError(f"ESI orders of region {region_id}: page {page} answered HTTP {resp.status} "
                          f"({resp.error_text()}); nothing of this region's snapshot was loaded")
    return resp


def _frame(payload: object, region_id: int, page: int) -> pd.DataFrame:
    if not isinstance(payload, list):
        raise SourceError(f"ESI orders of region {region_id}: page {page} is not a JSON list; "
                          f"nothing of this region's snapshot was loaded")
    frame = pd.DataFrame.from_records(payload) if payload else pd.DataFrame(columns=ORDER_COLUMNS[1:])
    frame.insert(0, "region_id", region_id)
    return frame


def fetch_orders(client: EsiClient, settings: EtlSettings, regions: Sequence[int],
                 types: Sequence[int] | None) -> Iterator[SourceBatch]:
    base = str(settings.esi_base_url).rstrip("/")
    for region_id in regions:
        url = f"{base}/markets/{region_id}/orders/"
        first = _page(client, url, region_id, 1)  # learns X-Pages
        frames = {1: _frame(first.json(), region_id, 1)}
        pages = first.pages or 1

        def one(page: int, region_id: int = region_id, url: str = url) -> tuple[int, pd.DataFrame]:
            return page, _frame(_page(client, url, region_id, page).json(), region_id, page)

        for page, frame in bounded_map(one, range(2, pages + 1), settings.esi_max_concurrency):
            frames[page] = frame
        snapshot = pd.concat([frames[p] for p in sorted(frames)], ignore_index=True)
        for col in ORDER_COLUMNS:
            if col not in snapshot.columns:
                snapshot[col] = pd.NA
        snapshot = snapshot[ORDER_COLUMNS + [c for c in snapshot.columns if c not in ORDER_COLUMNS]]
        if types is not None:
            snapshot = snapshot[snapshot["type_id"].isin(types)].reset_index(drop=True)
        yield SourceBatch(SourceKind.ESI_ORDERS, region_id, snapshot, snapshot_complete=True,
                          types=None if types is None else tuple(types))
