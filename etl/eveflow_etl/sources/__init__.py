"""Market data sources. One entry point: :func:`fetch` yields :class:`SourceBatch` frames of raw
values (validation and coercion happen later, in the pandera layer), always with ``region_id``
and ``type_id`` columns."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import pandas as pd

from eveflow_etl.datasets import SourceKind
from eveflow_etl.esi import EsiClient
from eveflow_etl.settings import EtlSettings


@dataclass(frozen=True)
class SourceBatch:
    """A chunk of raw rows of one region.

    ``snapshot_complete``: the frame is a whole snapshot (ESI orders: every page of the region
    succeeded), so the loader may close orders missing from it — but, when ``types`` is set,
    only orders of those types. ``skipped``: (type_id, reason) pairs a source left out on purpose
    (e.g. ESI history 404 for a type without a market), for the run's counts. ``notes``: what
    the user should know about the data (e.g. an EVE Ref day whose row count could not be
    checked), for the run's ledger row and summary.
    """

    source: SourceKind
    region_id: int
    frame: pd.DataFrame
    snapshot_complete: bool
    types: tuple[int, ...] | None = None
    skipped: tuple[tuple[int, str], ...] = ()
    notes: tuple[str, ...] = ()


def fetch(source: SourceKind, regions: Sequence[int], types: Sequence[int] | None, settings: EtlSettings, *,
          day: dt.date | None = None, client=None) -> Iterator[SourceBatch]:
    """Pull ``source`` for ``regions`` (and ``types``, None = every type), yielding batches of
    about ``settings.chunk_rows`` rows (ESI orders: one whole-snapshot batch per region).

    ``day`` is the EVE Ref file's day (default: yesterday, UTC). ``client`` is an
    :class:`~eveflow_etl.esi.EsiClient` to share (its cache, limits and counters); one is made
    and closed here otherwise. Raises :class:`~eveflow_etl.errors.SourceError` when a source
    fails for good.
    """
    # Imported late: each source module imports SourceBatch from this one (a cycle at the top).
    from eveflow_etl.sources import esi_history, esi_orders, everef, mokaam

    source = SourceKind(source)
    own = client is None
    client = client or EsiClient(settings)
    type_list = None if types is None else tuple(int(t) for t in types)
    try:
        if source is SourceKind.ESI_HISTORY:
            yield from esi_history.fetch_history(client, settings, regions, type_list)
        elif source is SourceKind.ESI_ORDERS:
            yield from esi_orders.fetch_orders(client, settings, regions, type_list)
        elif source is SourceKind.MOKAAM:
            yield from mokaam.fetch_mokaam(client, settings, regions, type_list)
        else:
            yield from everef.fetch_everef(client, settings, regions, type_list, day)
    finally:
        if own:
            client.close()


__all__ = ["SourceBatch", "fetch"]
