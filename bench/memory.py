"""Peak RSS of a load of 2,000,000 rows over that of 200,000 rows (streaming → ratio ≈ 1).

    python bench/memory.py

Each load runs ``run_etl`` (validation + upsert, one transaction) in a fresh subprocess against a
local server this script starts; the source is a generator of EVE Ref-sized daily batches
(50,000 rows), so the only thing that differs between the two runs is the number of rows.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "etl"))


def child(dsn: str, rows: int, table: str) -> None:
    import numpy as np
    import pandas as pd

    from eveflow_etl.datasets import SourceKind
    from eveflow_etl.etl_run import run_etl
    from eveflow_etl.settings import EtlSettings
    from eveflow_etl.sources import SourceBatch

    per_batch = 50_000

    def batches():
        rng = np.random.default_rng(1)
        for start in range(0, rows, per_batch):
            n = min(per_batch, rows - start)
            idx = np.arange(start, start + n)
            lowest = rng.uniform(1, 1e6, n).round(2)
            yield SourceBatch(SourceKind.EVEREF, 10000002, pd.DataFrame({
                "region_id": 10000002, "type_id": 18 + idx // 400,
                "date": (pd.Timestamp("2025-01-01") + pd.to_timedelta(idx % 400, unit="D")).strftime("%Y-%m-%d"),
                "average": lowest * 1.1, "highest": lowest * 1.2, "lowest": lowest,
                "order_count": rng.integers(1, 5000, n), "volume": rng.integers(1, 10**9, n),
            }), snapshot_complete=False)

    started = time.perf_counter()
    report = run_etl("everef", [10000002], None, dsn, schema="bench", table=table, settings=EtlSettings(),
                     batches=batches())
    assert report.totals.inserted == rows, report.totals
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"rows": rows, "peak_rss_mb": peak_kb / 1024, "seconds": time.perf_counter() - started}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", type=int, default=200_000)
    parser.add_argument("--large", type=int, default=2_000_000)
    parser.add_argument("--child", nargs=3, metavar=("DSN", "ROWS", "TABLE"))
    args = parser.parse_args()
    if args.child:
        child(args.child[0], int(args.child[1]), args.child[2])
        return

    from eveflow_etl.localpg import start_local_postgres

    server = start_local_postgres(None, fast_unsafe=True)
    results = {}
    try:
        for rows, table in ((args.small, "small"), (args.large, "large")):
            out = subprocess.run([sys.executable, __file__, "--child", server.dsn, str(rows), table],
                                 capture_output=True, text=True, check=True)
            results[rows] = json.loads(out.stdout.strip().splitlines()[-1])
            r = results[rows]
            print(f"{rows:>10,} rows: peak RSS {r['peak_rss_mb']:.0f} MB, {r['seconds']:.1f}s "
                  f"({rows / r['seconds']:,.0f} rows/s end to end)")
    finally:
        server.stop()
    ratio = results[args.large]["peak_rss_mb"] / results[args.small]["peak_rss_mb"]
    print(f"RESULT rss_ratio={ratio:.2f}")


if __name__ == "__main__":
    main()
