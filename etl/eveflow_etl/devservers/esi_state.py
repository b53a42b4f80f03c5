"""State of one local ESI server: what it serves (config), its limits, faults and counters.
Only touched from the server's event loop."""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from email.utils import format_datetime

from eveflow_etl.devservers import esi_data as data
from eveflow_etl.devservers.esi_limits import ErrorWindow, FaultRule, TokenBucket

HISTORY_GROUP = "market-history"
ORDERS_GROUP = "market-orders"
HUB_REGIONS = (10000002, 10000043, 10000032, 10000030, 10000042)


@dataclass
class EsiServerConfig:
    """What the server serves and how strictly it limits. Defaults follow the real services."""

    seed: int = 20031
    types_per_region: int = 40
    orders_per_region: int = 5000
    history_days: int = 395
    everef_regions: tuple[int, ...] = HUB_REGIONS
    today: dt.date | None = None  # None: the current UTC date
    # None: history expires at the next 11:05 UTC, like ESI's daily refresh.
    history_expires_seconds: float | None = None
    orders_expires_seconds: float = 300.0
    error_limit: int = 100
    error_window_seconds: float = 60.0
    rate_limit_tokens: int = 12000
    rate_window_seconds: float = 900.0
    mokaam_sentinels: bool = True
    # EVE Ref, by ISO day: the file rewritten (revision → changed rows, new ETag/Last-Modified);
    # rows left out of the file; a wrong published total (added to the true one); days not yet
    # in totals.json. totals.json covers the last ``history_days`` days.
    everef_rewrites: dict[str, int] = field(default_factory=dict)
    everef_short_rows: dict[str, int] = field(default_factory=dict)
    everef_totals_skew: dict[str, int] = field(default_factory=dict)
    everef_totals_unpublished: tuple[str, ...] = ()


@dataclass
class _Stats:
    requests: int = 0
    by_status: Counter = field(default_factory=Counter)
    body_bytes: int = 0
    in_flight: int = 0
    max_in_flight: int = 0
    events: deque = field(default_factory=lambda: deque(maxlen=20000))


def http_date(ts: float) -> str:
    return format_datetime(dt.datetime.fromtimestamp(ts, dt.UTC), usegmt=True)


def int_or_none(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


class EsiServerState:
    """All mutable state of one server; only touched from the server's event loop."""

    def __init__(self, config: EsiServerConfig) -> None:
        self.config = config
        self.reset()

    def reset(self) -> None:
        cfg = self.config
        self.stats = _Stats()
        self.faults: list[FaultRule] = []
        self.version = 0
        self.version_started = time.time()
        self.errors = ErrorWindow(cfg.error_limit, cfg.error_window_seconds)
        self.buckets = {g: TokenBucket(g, cfg.rate_limit_tokens, cfg.rate_window_seconds, updated=time.monotonic())
                        for g in (HISTORY_GROUP, ORDERS_GROUP)}
        self.types = data.market_types(cfg.types_per_region, cfg.seed)
        self._type_set = set(self.types)

    def rebuild(self, orders_per_region: int | None = None) -> None:
        """The market moves on: the next order book build (``orders_per_region`` resizes it, so
        its X-Pages changes). Real builds are minutes apart, so no two share a Last-Modified
        second; tests tick faster, hence the one-second step."""
        self.version += 1
        self.version_started = max(time.time(), math.floor(self.version_started) + 1.0)
        if orders_per_region is not None:
            self.config.orders_per_region = orders_per_region

    def today(self) -> dt.date:
        return self.config.today or dt.datetime.now(dt.UTC).date()

    def history_expires(self) -> float:
        if self.config.history_expires_seconds is not None:
            return time.time() + self.config.history_expires_seconds
        now = dt.datetime.now(dt.UTC)
        nxt = now.replace(hour=11, minute=5, second=0, microsecond=0)
        if nxt <= now:
            nxt += dt.timedelta(days=1)
        return nxt.timestamp()

    def orders_expires(self) -> float:
        """ESI rebuilds a region's order book every ``orders_expires_seconds``; all pages of one
        build share the same ``Expires`` (the next rebuild)."""
        period = self.config.orders_expires_seconds
        now = time.time()
        return now if period <= 0 else (now // period + 1) * period

    def match_fault(self, path: str, page: int | None, region: int | None) -> FaultRule | None:
        for rule in self.faults:
            if rule.matches(path, page, region):
                rule.hits += 1
                return rule
        return None

    def snapshot(self) -> dict:
        now = time.monotonic()
        for bucket in self.buckets.values():
            bucket.refill(now)
        return {
            "requests": self.stats.requests,
            "by_status": {str(k): v for k, v in sorted(self.stats.by_status.items())},
            "body_bytes": self.stats.body_bytes,
            "max_in_flight": self.stats.max_in_flight,
            "events": list(self.stats.events),
            "version": self.version,
            "tokens": {g: {"remaining": int(b.tokens), "used_total": b.used_total, "limit": b.limit,
                           "window": b.window} for g, b in self.buckets.items()},
            "error_limit": {"errors": self.errors.errors, "limit": self.errors.limit},
            "faults": [dataclasses.asdict(f) for f in self.faults],
        }
