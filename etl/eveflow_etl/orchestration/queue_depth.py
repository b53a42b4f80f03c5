"""How many flow runs wait for a work pool's workers: one Prefect read per pool per poll.

The read (``POST /flow_runs/filter``) returns the pool's runs that are scheduled to start
before ``now + lead`` (so also late ones) or are pending, running or cancelling; each pipeline
then keeps its own deployments' runs on its worker's queues (:meth:`PoolRuns.depth`).
:class:`SharedPoolReader` shares one read between the pipelines on a pool.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Awaitable, Callable

from eveflow_etl.orchestration.client import PrefectApi
from eveflow_etl.orchestration.types import PrefectConnection

# State types that hold (or are about to hold) a slot in a worker. SCHEDULED includes Late and
# AwaitingRetry; CANCELLING runs still occupy their worker until they stop.
WAITING_STATES = ("SCHEDULED", "PENDING")
RUNNING_STATES = ("RUNNING", "CANCELLING")
# Prefect's largest page; more runs than this due at once on one pool count as this many.
READ_LIMIT = 200


@dataclass(frozen=True)
class QueueDepth:
    waiting: int  # due soon, pending or running (what needs a worker slot)
    running: int  # of which running or cancelling


@dataclass(frozen=True)
class PoolRuns:
    """The runs of one pool at one moment: (deployment id, queue name, state type) each."""

    runs: tuple[tuple[str | None, str | None, str], ...]
    read_at: float  # time.monotonic() of the read

    def depth(self, deployment_ids: set[str], queues: set[str]) -> QueueDepth:
        mine = [state for dep, queue, state in self.runs if dep in deployment_ids and queue in queues]
        return QueueDepth(waiting=len(mine), running=sum(s in RUNNING_STATES for s in mine))


def runs_filter(pool: str, lead_seconds: float, now: datetime | None = None) -> dict[str, Any]:
    """The one filter body: the pool's runs due before now + lead, in a waiting or running state."""
    now = now or datetime.now(timezone.utc)
    return {
        "work_pools": {"name": {"any_": [pool]}},
        "flow_runs": {
            "state": {"type": {"any_": [*WAITING_STATES, *RUNNING_STATES]}},
            # A pending/running run's expected start is in the past, so this keeps it too.
            "expected_start_time": {"before_": (now + timedelta(seconds=lead_seconds)).isoformat()},
        },
        "sort": "EXPECTED_START_TIME_ASC",
        "limit": READ_LIMIT,
    }


async def read_pool_runs(api: PrefectApi, pool: str, lead_seconds: float) -> PoolRuns:
    """One ``POST /flow_runs/filter`` for ``pool`` (raises the client's Prefect* errors)."""
    rows = await api.query("/flow_runs/filter", runs_filter(pool, lead_seconds))
    runs = tuple((r.get("deployment_id"), r.get("work_queue_name"), (r.get("state") or {}).get("type") or r.get("state_type") or "")
                 for r in rows or [])
    return PoolRuns(runs=runs, read_at=time.monotonic())


class SharedPoolReader:
    """One read per (Prefect API, pool) per poll, shared by every pipeline on that pool.

    A pipeline asking within ``max_age`` seconds of the pool's last read gets that read; a
    second asker while a read is in flight waits for it instead of reading again.
    """

    def __init__(self, reader: Callable[[PrefectConnection, str, float], Awaitable[PoolRuns]] | None = None) -> None:
        self._reader = reader or _read_with_new_client
        self._last: dict[tuple[str, str], PoolRuns] = {}
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}
        self.reads = 0

    async def runs(self, conn: PrefectConnection, pool: str, *, lead_seconds: float, max_age: float) -> PoolRuns:
        key = (conn.api_url, pool)
        async with self._locks.setdefault(key, asyncio.Lock()):
            last = self._last.get(key)
            if last is not None and time.monotonic() - last.read_at < max_age:
                return last
            self.reads += 1
            fresh = await self._reader(conn, pool, lead_seconds)
            self._last[key] = fresh
            return fresh


async def _read_with_new_client(conn: PrefectConnection, pool: str, lead_seconds: float) -> PoolRuns:
    async with PrefectApi(conn) as api:
        return await read_pool_runs(api, pool, lead_seconds)
