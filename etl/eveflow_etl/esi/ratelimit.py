"""The three brakes every request goes through, shared by all threads of one client.

- :class:`RateBudget` — our own budget in requests per second (settings), evenly spaced.
- :class:`ErrorLimitGate` — ESI's error limit: space requests out when
  ``X-ESI-Error-Limit-Remain`` drops below the floor; after a 420 nobody sends anything until
  ``X-ESI-Error-Limit-Reset`` has passed.
- :class:`TokenPacer` — ESI's token buckets: learns each route's group, limit and window from
  ``X-Ratelimit-*``, keeps a conservative local copy of the bucket (never above what the server
  last reported, minus what is in flight) and waits for tokens instead of earning a 429; a 429
  blocks the group for ``Retry-After``.

Each class takes ``clock``/``sleep`` so tests can drive them without waiting.
"""

from __future__ import annotations

import math
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

Clock = Callable[[], float]
Sleep = Callable[[float], None]

_ID_SEGMENT = re.compile(r"/\d+(?=/|$)")
OK_COST = 2


def route_key(path: str) -> str:
    """``/latest/markets/10000002/orders/`` → ``/latest/markets/{id}/orders/`` (one bucket group)."""
    return _ID_SEGMENT.sub("/{id}", path.split("?", 1)[0])


def cost_of(status: int) -> int:
    if status in (420, 429):
        return 0
    if 200 <= status < 300:
        return 2
    if 300 <= status < 400:
        return 1
    if 400 <= status < 500:
        return 5
    return 0


def parse_limit(text: str | None) -> tuple[int, float] | None:
    """``"12000/15m"`` → (12000, 900.0); None when absent or unreadable."""
    if not text:
        return None
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*", text)
    if not match:
        return None
    unit = {"s": 1, "": 1, "m": 60, "h": 3600}[match.group(3)]
    count, window = int(match.group(1)), float(match.group(2)) * unit
    if count <= 0 or window <= 0:
        return None  # "0/0s" cannot pace anything (and would divide by zero): ignore it
    return count, window


def _num(headers: Mapping[str, str], name: str) -> float | None:
    try:
        value = float(headers[name])
    except (KeyError, TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None  # "nan"/"inf" are no numbers to wait by


class RateBudget:
    """Requests per second across all threads: each caller reserves the next free slot."""

    def __init__(self, rate: float, clock: Clock = time.monotonic, sleep: Sleep = time.sleep) -> None:
        self.interval = 1.0 / rate
        self._clock, self._sleep = clock, sleep
        self._next = 0.0
        self._lock = threading.Lock()

    def acquire(self) -> None:
        with self._lock:
            now = self._clock()
            slot = max(now, self._next)
            self._next = slot + self.interval
        if slot > now:
            self._sleep(slot - now)


class ErrorLimitGate:
    def __init__(self, floor: int, clock: Clock = time.monotonic, sleep: Sleep = time.sleep, *,
                 max_wait: float = 300.0) -> None:
        self.floor = floor
        self.max_wait = max_wait  # a reset further away than this is the server's error, not a wait
        self._clock, self._sleep = clock, sleep
        self._lock = threading.Lock()
        self._blocked_until = 0.0
        self._remain: float | None = None
        self._reset_at = 0.0
        self._next_slot = 0.0
        self.waits_for_reset = 0

    def wait(self) -> None:
        while True:
            spaced = False
            with self._lock:
                now = self._clock()
                if now < self._blocked_until:
                    delay = self._blocked_until - now
                elif self._remain is not None and self._remain < self.floor and now < self._reset_at:
                    # Spread what is left of the error budget over what is left of the window.
                    spacing = (self._reset_at - now) / max(self._remain, 1.0)
                    slot = max(now, self._next_slot)
                    self._next_slot = slot + spacing
                    delay, spaced = slot - now, True
                else:
                    return
            if delay > 0:
                self._sleep(delay)
            if spaced:
                return

    def observe(self, status: int, headers: Mapping[str, str]) -> None:
        remain = _num(headers, "X-ESI-Error-Limit-Remain")
        reset = _num(headers, "X-ESI-Error-Limit-Reset")
        reset = None if reset is None else min(max(reset, 0.0), self.max_wait)
        with self._lock:
            now = self._clock()
            if remain is not None:
                self._remain = remain
                self._reset_at = now + (reset if reset is not None else 60.0)
            if status == 420:
                self.waits_for_reset += 1
                self._blocked_until = max(self._blocked_until, now + (reset if reset else 60.0))


@dataclass
class _Group:
    limit: int
    window: float
    tokens: float
    updated: float
    inflight: float = 0.0
    blocked_until: float = 0.0

    def refill(self, now: float) -> None:
        if now > self.updated:
            self.tokens = min(float(self.limit), self.tokens + (now - self.updated) * self.limit / self.window)
            self.updated = now


@dataclass
class Ticket:
    route: str
    group: str | None
    cost: float
    learning: bool = False


class TokenPacer:
    def __init__(self, clock: Clock = time.monotonic, sleep: Sleep = time.sleep, *, max_wait: float = 300.0) -> None:
        self._clock, self._sleep = clock, sleep
        self.max_wait = max_wait
        self._cond = threading.Condition()
        self._route_group: dict[str, str | None] = {}
        self._learning: set[str] = set()
        self._groups: dict[str, _Group] = {}
        self._route_blocked: dict[str, float] = {}

    def acquire(self, route: str) -> Ticket:
        """Wait until a request on ``route`` may go out; the first request of an unknown route
        goes alone, so the group is learned before anyone else spends its tokens."""
        while True:
            with self._cond:
                now = self._clock()
                delay = self._route_blocked.get(route, 0.0) - now
                if delay <= 0 and route not in self._route_group:
                    if route in self._learning:
                        self._cond.wait(0.5)
                        continue
                    self._learning.add(route)
                    return Ticket(route, None, 0.0, learning=True)
                group_name = self._route_group.get(route)
                group = self._groups.get(group_name) if group_name else None
                if delay <= 0 and group is None:
                    return Ticket(route, None, 0.0)
                if delay <= 0 and group is not None:
                    group.refill(now)
                    delay = group.blocked_until - now
                    if delay <= 0:
                        if group.tokens >= OK_COST:
                            group.tokens -= OK_COST
                            group.inflight += OK_COST
                            return Ticket(route, group_name, OK_COST)
                        delay = (OK_COST - group.tokens) * group.window / group.limit
            self._sleep(max(delay, 0.001))

    def settle(self, ticket: Ticket, status: int | None, headers: Mapping[str, str]) -> None:
        """Book what the answer really cost and adopt what the server says is left.
        ``status`` None: no answer (connection error) — the tokens stay spent."""
        name = headers.get("X-Ratelimit-Group")
        limit = parse_limit(headers.get("X-Ratelimit-Limit"))
        remaining = _num(headers, "X-Ratelimit-Remaining")
        retry_after = _num(headers, "Retry-After")
        retry_after = None if retry_after is None else min(max(retry_after, 0.0), self.max_wait)
        with self._cond:
            now = self._clock()
            if ticket.learning:
                self._learning.discard(ticket.route)
                if status is not None:
                    self._route_group[ticket.route] = name if (name and limit) else None
            if ticket.group is not None:
                group = self._groups[ticket.group]
                group.inflight -= ticket.cost
                if status is not None:
                    group.tokens += ticket.cost - cost_of(status)
            if name and limit and status is not None:
                group = self._groups.get(name)
                if group is None:
                    group = self._groups[name] = _Group(limit[0], limit[1], float(remaining or 0), now)
                group.limit, group.window = limit
                group.refill(now)
                if remaining is not None:
                    group.tokens = min(group.tokens, remaining - group.inflight)
                if status == 429:
                    group.tokens = min(group.tokens, 0.0)
                    group.blocked_until = now + (retry_after if retry_after is not None else 1.0)
            elif status == 429:
                self._route_blocked[ticket.route] = now + (retry_after if retry_after is not None else 1.0)
            self._cond.notify_all()
