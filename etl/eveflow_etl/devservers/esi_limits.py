"""The limits the local ESI server enforces, as plain objects (no I/O, clock passed in).

- :class:`ErrorWindow` — ESI's error limit: a fixed window opened by the first error; once
  ``limit`` 4xx/5xx answers fall in it, every request gets 420 until the window resets.
- :class:`TokenBucket` — ESI's per-route-group rate limit: capacity ``limit`` tokens, refilled
  continuously at ``limit / window`` per second; a 2xx costs 2, 3xx 1, 4xx 5, 5xx 0. A request
  whose answer would cost more than the tokens left gets 429 with ``Retry-After`` instead.
- :class:`FaultRule` — one injected fault, set through ``POST /_admin/faults``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field


def token_cost(status: int) -> int:
    if 200 <= status < 300:
        return 2
    if 300 <= status < 400:
        return 1
    if 400 <= status < 500:
        return 5
    return 0


def parse_rate_limit(text: str) -> tuple[int, float]:
    """``"12000/15m"`` → (12000, 900.0). Units: s, m, h."""
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+(?:\.\d+)?)\s*([smh])\s*", text)
    if not match:
        raise ValueError(f"rate limit {text!r} must look like 12000/15m (tokens/window with s, m or h)")
    unit = {"s": 1, "m": 60, "h": 3600}[match.group(3)]
    return int(match.group(1)), float(match.group(2)) * unit


def format_window(seconds: float) -> str:
    if seconds >= 60 and seconds % 60 == 0:
        return f"{int(seconds // 60)}m"
    return f"{seconds:g}s"


@dataclass
class ErrorWindow:
    limit: int
    window: float
    errors: int = 0
    started: float | None = None

    def _roll(self, now: float) -> None:
        if self.started is not None and now >= self.started + self.window:
            self.started, self.errors = None, 0

    def blocked(self, now: float) -> bool:
        self._roll(now)
        return self.errors >= self.limit

    def record(self, status: int, now: float) -> None:
        self._roll(now)
        if status >= 400 and status not in (420, 429):
            if self.started is None:
                self.started = now
            self.errors += 1

    def headers(self, now: float) -> dict[str, str]:
        self._roll(now)
        reset = self.window if self.started is None else self.started + self.window - now
        return {
            "X-ESI-Error-Limit-Remain": str(max(0, self.limit - self.errors)),
            "X-ESI-Error-Limit-Reset": str(max(0, math.ceil(reset))),
        }


@dataclass
class TokenBucket:
    group: str
    limit: int
    window: float
    tokens: float = -1.0
    updated: float = 0.0
    used_total: int = 0

    def __post_init__(self) -> None:
        if self.tokens < 0:
            self.tokens = float(self.limit)

    @property
    def rate(self) -> float:
        return self.limit / self.window

    def refill(self, now: float) -> None:
        if now > self.updated:
            self.tokens = min(float(self.limit), self.tokens + (now - self.updated) * self.rate)
            self.updated = now

    def try_spend(self, cost: int, now: float) -> bool:
        self.refill(now)
        if cost > self.tokens:
            return False
        self.tokens -= cost
        self.used_total += cost
        return True

    def retry_after(self, cost: int, now: float) -> int:
        self.refill(now)
        return max(1, math.ceil((cost - self.tokens) / self.rate))

    def drain(self, now: float) -> None:
        self.refill(now)
        self.tokens = 0.0

    def headers(self, now: float) -> dict[str, str]:
        self.refill(now)
        remaining = int(self.tokens)
        return {
            "X-Ratelimit-Group": self.group,
            "X-Ratelimit-Limit": f"{self.limit}/{format_window(self.window)}",
            "X-Ratelimit-Remaining": str(remaining),
            "X-Ratelimit-Used": str(self.limit - remaining),
        }


@dataclass
class FaultRule:
    """An injected fault. Matches requests whose path contains ``path`` (and, when set, the
    ``page`` query value and the region in the path); applies to the next ``count`` matches, or
    to every match when ``count`` is None."""

    path: str = "/latest/"
    status: int | None = None
    count: int | None = 1
    delay: float = 0.0
    truncate: str | None = None  # "json": valid length, cut JSON; "connection": short body, closed
    page: int | None = None
    region: int | None = None
    retry_after: int | None = None
    # The order book is rebuilt (next version) as the request arrives, after ``delay``;
    # ``tick_orders`` resizes the new build (X-Pages changes).
    tick: bool = False
    tick_orders: int | None = None
    # Response headers replaced in the answer (None removes one), e.g. {"X-Pages": None}.
    headers: dict[str, str | None] | None = None
    # Body padded to this many bytes (a server sending more than asked).
    body_bytes: int | None = None
    # The body sent in 10 pieces this many seconds apart (each read is quick, the whole is slow).
    trickle: float = 0.0
    hits: int = field(default=0)

    def matches(self, path: str, page: int | None, region: int | None) -> bool:
        if self.count is not None and self.hits >= self.count:
            return False
        if self.path not in path:
            return False
        if self.page is not None and self.page != page:
            return False
        return self.region is None or self.region == region
