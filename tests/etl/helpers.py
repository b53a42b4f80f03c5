"""Synthetic frames and an in-test source for the loader tests."""

from __future__ import annotations

import numpy as np
import pandas as pd

from eveflow_etl.datasets import SourceKind
from eveflow_etl.sources import SourceBatch


def Batch(source: str, region_id: int, frame: pd.DataFrame, snapshot_complete: bool = True,  # noqa: N802
          types: tuple[int, ...] | None = None) -> SourceBatch:
    """A source batch built in a test (the real type, so tests feed run_etl what sources do)."""
    return SourceBatch(SourceKind(source), region_id, frame, snapshot_complete, types)


def history_frame(rows: int, region: int = 10000002, seed: int = 1) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    days = 100
    idx = np.arange(rows)
    lowest = rng.uniform(1, 1000, rows).round(2)
    return pd.DataFrame({
        "region_id": region,
        "type_id": 34 + idx // days,
        "date": (pd.Timestamp("2025-01-01") + pd.to_timedelta(idx % days, unit="D")).strftime("%Y-%m-%d"),
        "average": (lowest * 1.1).round(2),
        "highest": (lowest * 1.2).round(2),
        "lowest": lowest,
        "order_count": rng.integers(1, 100, rows),
        "volume": rng.integers(1, 10**6, rows),
    })


def orders_frame(order_ids, region: int = 10000002, price: float = 10.0) -> pd.DataFrame:
    n = len(order_ids)
    return pd.DataFrame({
        "order_id": list(order_ids), "type_id": [34 + (i % 2) for i in range(n)],
        "location_id": 60003760, "system_id": 30000142, "volume_total": 100, "volume_remain": 50,
        "min_volume": 1, "price": [price + i for i in range(n)], "is_buy_order": [i % 3 == 0 for i in range(n)],
        "duration": 90, "issued": "2025-05-01T12:00:00Z", "range": "region", "region_id": region,
    })
