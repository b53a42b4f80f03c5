"""ESI market orders: a region's whole order book, every X-Pages page, as one snapshot batch.

ESI rebuilds a region's book every few minutes, and every page of one build carries the same
``Last-Modified``. A pull that straddles a rebuild gets pages of two builds: orders that moved
between pages look gone and the loader would close them. So a region's pages must all share one
build (and one X-Pages); otherwise the whole region is pulled again, asking the server even
before ``Expires`` (unchanged pages answer a cheap 304), up to ``esi_orders_snapshot_attempts``
times before the region fails.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

import pandas as pd

from eveflow_etl.datasets import SourceKind
from eveflow_etl.errors import SourceError
from eveflow_etl.esi import EsiClient, EsiRequestError, EsiResponse
from eveflow_etl.settings import EtlSettings
from eveflow_etl.sources import SourceBatch
from eveflow_etl.sources._pool import bounded_map

log = logging.getLogger(__name__)

ORDER_COLUMNS = ["region_id", "order_id", "type_id", "location_id", "system_id", "volume_total",
                 "volume_remain", "min_volume", "price", "is_buy_order", "duration", "issued", "range"]


class _BuildChanged(Exception):
    """The region's book was rebuilt while we read it (pages disagree, or a page vanished)."""


@dataclass
class _Page:
    number: int
    frame: pd.DataFrame
    build: str | None  # Last-Modified
    pages: int | None  # X-Pages


def _get(client: EsiClient, url: str, region_id: int, page: int, revalidate: bool) -> EsiResponse:
    try:
        resp = client.get(url, {"order_type": "all", "page": page}, revalidate=revalidate)
    except EsiRequestError as exc:
        raise SourceError(f"ESI orders of region {region_id}: page {page} failed ({exc}); "
                          f"nothing of this region's snapshot was loaded") from None
    if resp.status == 404 and page > 1:
        # X-Pages came from an older, longer build than the one now answering.
        raise _BuildChanged(f"page {page} answered 404, the book shrank")
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


def _page(client: EsiClient, url: str, region_id: int, page: int, revalidate: bool) -> _Page:
    # The frame is built here, in the fetch thread, so only frames (not response bodies) pile up.
    resp = _get(client, url, region_id, page, revalidate)
    return _Page(page, _frame(resp.json(), region_id, page), resp.last_modified, resp.pages)


def _instant(last_modified: str | None) -> object:
    try:
        return parsedate_to_datetime(last_modified).timestamp()  # type: ignore[arg-type]
    except (TypeError, ValueError, IndexError):
        return last_modified


def _mixed(pages: list[_Page]) -> str | None:
    """Why these pages are not one build, or None when they are."""
    builds: dict[object, list[int]] = {}
    for p in pages:
        builds.setdefault(_instant(p.build), []).append(p.number)
    if len(builds) > 1:
        by_page = {p.number: p.build for p in pages}
        parts = [f"page{'s' if len(nums) > 1 else ''} {_ranges(nums)} Last-Modified {by_page[nums[0]] or 'missing'}"
                 for nums in builds.values()]
        return "; ".join(parts)
    counts = {p.pages for p in pages if p.pages is not None}
    if len(counts) > 1:
        return f"pages disagree on X-Pages ({', '.join(map(str, sorted(counts)))})"
    return None


def _ranges(numbers: list[int]) -> str:
    """``[1, 2, 3, 7]`` → ``"1-3,7"`` (a region has hundreds of pages; the error stays one short line)."""
    spans: list[list[int]] = []
    for n in sorted(numbers):
        if spans and n == spans[-1][1] + 1:
            spans[-1][1] = n
        else:
            spans.append([n, n])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in spans)


def _pull_once(client: EsiClient, settings: EtlSettings, url: str, region_id: int,
               revalidate: bool) -> list[_Page]:
    first = _page(client, url, region_id, 1, revalidate)  # learns X-Pages of its build
    # Without a page count the book's size is unknown: taking page 1 as the whole book would
    # close every order on the other pages.
    if first.pages is None or first.pages < 1:
        raise SourceError(f"ESI orders of region {region_id}: page 1 has no numeric X-Pages header; "
                          f"nothing of this region's snapshot was loaded")
    if first.pages > settings.esi_orders_max_pages:
        raise SourceError(f"ESI orders of region {region_id}: X-Pages {first.pages} is more than "
                          f"EVEFLOW_ESI_ORDERS_MAX_PAGES ({settings.esi_orders_max_pages}); nothing of this "
                          f"region's snapshot was loaded")
    rest = bounded_map(lambda n: _page(client, url, region_id, n, revalidate), range(2, first.pages + 1),
                       settings.esi_max_concurrency)
    pages = [first, *rest]
    reason = _mixed(pages)
    if reason is not None:
        raise _BuildChanged(reason)
    return sorted(pages, key=lambda p: p.number)


def _pull_region(client: EsiClient, settings: EtlSettings, url: str, region_id: int) -> list[_Page]:
    attempts = settings.esi_orders_snapshot_attempts
    # Keep this pull's pages on disk while it runs: a retry revalidates them (304, no body).
    with client.cache.pinned():
        for attempt in range(1, attempts + 1):
            try:
                # From the second pull on, a cached page may be of the replaced build yet still
                # before its Expires (ESI nodes disagree; the local server ticks at will): ask.
                return _pull_once(client, settings, url, region_id, revalidate=attempt > 1)
            except _BuildChanged as exc:
                reason = str(exc)
            if attempt < attempts:
                log.warning("ESI orders of region %d: the order book was rebuilt during the pull (%s); "
                            "pulling the region again (%d of %d)", region_id, reason, attempt + 1, attempts)
                time.sleep(settings.esi_backoff_seconds * attempt)
    raise SourceError(f"ESI orders of region {region_id}: the order book was rebuilt during each of {attempts} "
                      f"pulls (last: {reason}); nothing of this region's snapshot was loaded; run again later "
                      f"or raise EVEFLOW_ESI_ORDERS_SNAPSHOT_ATTEMPTS")


def fetch_orders(client: EsiClient, settings: EtlSettings, regions: Sequence[int],
                 types: Sequence[int] | None) -> Iterator[SourceBatch]:
    base = str(settings.esi_base_url).rstrip("/")
    for region_id in regions:
        pages = _pull_region(client, settings, f"{base}/markets/{region_id}/orders/", region_id)
        snapshot = pd.concat([p.frame for p in pages], ignore_index=True)
        for col in ORDER_COLUMNS:
            if col not in snapshot.columns:
                snapshot[col] = pd.NA
        snapshot = snapshot[ORDER_COLUMNS + [c for c in snapshot.columns if c not in ORDER_COLUMNS]]
        if types is not None:
            snapshot = snapshot[snapshot["type_id"].isin(types)].reset_index(drop=True)
        yield SourceBatch(SourceKind.ESI_ORDERS, region_id, snapshot, snapshot_complete=True,
                          types=None if types is None else tuple(types))
