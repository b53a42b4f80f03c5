"""Paged ESI orders pull against the local server enforcing a token budget.

Pulls one region's order book (>= 300 pages of 1000 orders) through ``sources.fetch`` while the
server enforces ESI's token bucket (2 tokens per 200), then runs the same pull again at once.

Figures:
- budget_used: tokens the server booked for the pull / tokens the bucket allowed over the pull's
  duration (its capacity at the start plus the refill during the run). 1.0 = every token used.
- rate_limited: 420 + 429 answers the server gave during both runs.
- rerun_body_bytes: body bytes the immediate re-run downloaded (cached until Expires: none).

Usage: python bench/esi.py [--pages 301] [--tokens 200] [--window 10] [--concurrency 8]
"""

from __future__ import annotations

import argparse
import tempfile
import time

from eveflow_etl.datasets import SourceKind
from eveflow_etl.devservers.esi_server import ORDERS_GROUP, EsiServerConfig, serve_in_thread
from eveflow_etl.esi import EsiClient
from eveflow_etl.settings import EtlSettings
from eveflow_etl.sources import fetch

REGION = 10000002


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=int, default=301)
    parser.add_argument("--tokens", type=int, default=200, help="bucket size (tokens per window)")
    parser.add_argument("--window", type=float, default=10.0, help="bucket window in seconds")
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()

    config = EsiServerConfig(orders_per_region=args.pages * 1000, types_per_region=200,
                             rate_limit_tokens=args.tokens, rate_window_seconds=args.window)
    with serve_in_thread(config) as server, tempfile.TemporaryDirectory() as data_dir:
        settings = EtlSettings(data_dir=data_dir, esi_base_url=server.esi_base_url, esi_rate_per_second=100,
                               esi_max_concurrency=args.concurrency, contact="bench@eveflow.invalid")
        with EsiClient(settings) as client:
            start = time.monotonic()
            (batch,) = fetch(SourceKind.ESI_ORDERS, [REGION], None, settings, client=client)
            elapsed = time.monotonic() - start
        first = client.stats.snapshot()
        used = server.admin.stats()["tokens"][ORDERS_GROUP]["used_total"]
        allowed = args.tokens + elapsed * args.tokens / args.window

        with EsiClient(settings) as rerun_client:
            rerun_start = time.monotonic()
            (again,) = fetch(SourceKind.ESI_ORDERS, [REGION], None, settings, client=rerun_client)
            rerun_elapsed = time.monotonic() - rerun_start
        rerun = rerun_client.stats.snapshot()
        stats = server.admin.stats()

    by_status = stats["by_status"]
    rate_limited = by_status.get("420", 0) + by_status.get("429", 0)
    pages = first["requests"]
    print(f"bucket: {args.tokens} tokens / {args.window:g} s ({args.tokens / args.window:g} tokens/s, "
          f"{args.tokens / args.window / 2:g} pages/s), concurrency {args.concurrency}")
    print(f"pull:   {len(batch.frame):,} orders, {pages} requests, {first['body_bytes'] / 1e6:.1f} MB "
          f"in {elapsed:.1f} s ({pages / elapsed:.1f} req/s)")
    print(f"budget: {used} tokens used of {allowed:.0f} allowed over the run")
    print(f"rerun:  {len(again.frame):,} orders in {rerun_elapsed:.2f} s, {rerun['requests']} requests, "
          f"{rerun['cache_hits']} served from cache, {rerun['body_bytes']} body bytes")
    print(f"server: {by_status}")
    print(f"RESULT budget_used={used / allowed:.3f} rate_limited={rate_limited} rerun_body_bytes={rerun['body_bytes']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
