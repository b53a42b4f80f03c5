"""The Prefect flows every pipeline deploys: ``eve-market-etl`` and ``eve-maintenance``.

Deployments point at them by module path (``eveflow_etl.orchestration.flows.eve_market_etl``):
Prefect 3.8 imports a dotted entrypoint from the installed package, with no code storage or pull
step, so the same deployment runs in a process worker, a container or a Kubernetes Job.

``eve-market-etl`` runs one task per region on a thread pool (retries, retry delay and the run's
time budget come from its parameters, which the deployment fills from the spec). A failed region
does not stop the others; the run then ends Failed with a message naming the failed regions. With
``fan_out`` the run instead starts one flow run per region of its own deployment (so a kubernetes
pool spreads regions over Jobs) and waits for them. Either way it publishes a table artifact with
the counts per region (see :mod:`eveflow_etl.orchestration.summary`).
"""

from __future__ import annotations

import threading
import time
from typing import Any, Literal

from prefect import flow, get_run_logger, task
from prefect.context import FlowRunContext
from prefect.deployments import run_deployment
from prefect.runtime import deployment as current_deployment
from prefect.runtime import flow_run as current_flow_run
from prefect.states import Completed, Failed
from prefect.task_runners import ThreadPoolTaskRunner

from eveflow_etl.load.gate import CommitGate
from eveflow_etl.orchestration.summary import (
    COUNT_FIELDS,
    RegionOutcome,
    counts_of_report,
    publish_summary,
)
from eveflow_etl.orchestration.fanout import cancel_children, parent_tag, read_child_outcomes
from eveflow_etl.orchestration.backfill_task import run_backfill_task
from eveflow_etl.settings import load_settings
from eveflow_etl.spec import ETL_FLOW_NAME, MAINTENANCE_FLOW_NAME

# Deployments' entrypoints are module paths into this module (see deployments.py).
from eveflow_etl.orchestration.deployments import ETL_ENTRYPOINT, MAINTENANCE_ENTRYPOINT  # noqa: E402

# A hard ceiling (the spec's maximum); the per-run budget is the timeout_seconds parameter.
_FLOW_CEILING_SECONDS = 86_400


class _BudgetedThreadPoolTaskRunner(ThreadPoolTaskRunner):
    """A ``ThreadPoolTaskRunner`` that can leave task threads behind once the run is over budget.

    A region past the budget is usually blocked in I/O (the ETL engine's own fetch threads).
    Python cannot kill a thread, and Prefect's task timeout only raises in the task's thread
    when it runs Python code again; the stock runner's exit waits for every running thread, so
    the flow would return only when those requests give up (minutes: ESI timeout × retries).
    When ``abandon_running`` is set, exiting cancels queued tasks and returns at once; the
    abandoned threads end on their own (a worker's flow-run process still exits only then).
    """

    abandon_running = False

    def cancel_all(self) -> None:
        if not self.abandon_running:
            return super().cancel_all()
        for event in self._cancel_events.values():
            event.set()
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None


@task(name="load-region", task_run_name="load-region-{region}")
def load_region(
    region: int, source: str, types: list[int] | None, destination: str, db_schema: str,
    table: str | None, pipeline_name: str,
) -> dict[str, int]:
    """Run the ETL engine for one region (it writes its own ledger row); return its counts."""
    # Imported when the task runs: the operator imports this module (deployments.py reads the
    # flows' parameter schemas), where the engine (pandas, pandera) would add ~0.5 s and its
    # memory, destinations (psycopg) ~50 ms.
    from eveflow_etl.destinations import resolve_dsn
    from eveflow_etl.etl_run import run_etl

    settings = load_settings()
    report = run_etl(
        source, [region], types, resolve_dsn(destination, None, settings),
        schema=db_schema, table=table, pipeline_name=pipeline_name, settings=settings,
        gate=_commit_gate(),
    )
    for note in report.notes:  # e.g. an EVE Ref day loaded unverified: in the run's log, not only the ledger
        get_run_logger().warning("region %s: %s", region, note)
    return counts_of_report(report)


@flow(name=ETL_FLOW_NAME, task_runner=_BudgetedThreadPoolTaskRunner(max_workers=8), timeout_seconds=_FLOW_CEILING_SECONDS,
      log_prints=True, on_cancellation=[cancel_children], on_crashed=[cancel_children],
      on_failure=[cancel_children])
def eve_market_etl(
    regions: list[int],
    source: str = "esi-history",
    types: list[int] | None = None,
    destination: Literal["env", "crunchy", "snowflake", "local"] = "env",
    db_schema: str = "eve",
    table: str | None = None,
    pipeline_name: str = "adhoc",
    fan_out: bool = False,
    retries: int = 3,
    retry_delay_seconds: int = 60,
    timeout_seconds: int = 3600,
    backfill_from: str | None = None,
    verify_days: int = 0,
):
    """Load market data for ``regions`` into ``db_schema.table``; one task (or flow run) per region.
    EVE Ref with ``backfill_from`` or ``verify_days``: every day not loaded and verified yet, one
    task for all regions (see :mod:`eveflow_etl.orchestration.backfill_task`)."""
    logger = get_run_logger()
    started = time.monotonic()
    common = dict(source=source, types=types, destination=destination, db_schema=db_schema, table=table,
                  pipeline_name=pipeline_name)
    if source == "everef" and (backfill_from or verify_days):
        outcomes = run_backfill_task(regions, common, retries, retry_delay_seconds, timeout_seconds,
                                     backfill_from, verify_days)
    elif fan_out and len(regions) > 1:
        outcomes = _fan_out(regions, common, retries, retry_delay_seconds, timeout_seconds)
    else:
        if fan_out:
            logger.info("fan_out with one region: running it here")
        outcomes = _run_regions(regions, common, retries, retry_delay_seconds, timeout_seconds, started)
    return _finish(outcomes, pipeline_name)


def _run_regions(regions: list[int], common: dict[str, Any], retries: int, retry_delay_seconds: int,
                 timeout_seconds: int, started: float) -> list[RegionOutcome]:
    # The task timeout is what stops a region left behind at the budget from committing later
    # (it raises in the thread as soon as that thread runs Python again, before the commit);
    # Prefect's warning that it cannot interrupt a blocked thread is about that delay.
    load = load_region.with_options(retries=retries, retry_delay_seconds=retry_delay_seconds,
                                    timeout_seconds=timeout_seconds)
    futures = {region: load.submit(region, **common) for region in regions}
    outcomes = []
    for region, future in futures.items():
        remaining = max(1.0, timeout_seconds - (time.monotonic() - started))
        future.wait(timeout=remaining)
        state = future.state
        if not state.is_final():
            outcomes.append(RegionOutcome(region, "TIMED_OUT", error=f"not done after {timeout_seconds} s"))
            _abandon_running_tasks()
            continue
        if state.is_completed():
            outcomes.append(RegionOutcome(region, "COMPLETED", counts=future.result()))
        else:
            outcomes.append(RegionOutcome(region, state.type.value, error=_state_error(state)))
    return outcomes


# One commit gate per flow run of this process: the region threads load through it, and the
# flow closes it before it reports regions timed out, so an abandoned thread never commits after.
_GATES: dict[str, CommitGate] = {}
_GATES_LOCK = threading.Lock()


def _commit_gate() -> CommitGate:
    key = str(current_flow_run.id or "")
    with _GATES_LOCK:
        return _GATES.setdefault(key, CommitGate())


def _abandon_running_tasks() -> None:
    """Over budget: let the flow end without waiting for the task threads still running; close
    the commit gate first, so none of them commits after the run reports them timed out."""
    _commit_gate().close()
    context = FlowRunContext.get()
    if context is not None and isinstance(context.task_runner, _BudgetedThreadPoolTaskRunner):
        context.task_runner.abandon_running = True


def _fan_out(regions: list[int], common: dict[str, Any], retries: int, retry_delay_seconds: int,
             timeout_seconds: int) -> list[RegionOutcome]:
    """One flow run per region of this run's deployment, started together, then awaited."""
    logger = get_run_logger()
    name = current_deployment.name
    if not name:
        logger.warning("fan_out needs a deployment (this run has none): running the regions here")
        return _run_regions(regions, common, retries, retry_delay_seconds, timeout_seconds, time.monotonic())
    children = {}
    for region in regions:
        children[region] = run_deployment(
            name=f"{ETL_FLOW_NAME}/{name}",
            parameters={**common, "regions": [region], "fan_out": False, "retries": retries,
                        "retry_delay_seconds": retry_delay_seconds, "timeout_seconds": timeout_seconds},
            timeout=0,  # start them all; they are awaited below
            flow_run_name=f"{common['pipeline_name']}-region-{region}",
            tags=[parent_tag(current_flow_run.id)],
        )
        logger.info("started flow run %s for region %s", children[region].id, region)
    return read_child_outcomes(children, timeout_seconds)


def _finish(outcomes: list[RegionOutcome], pipeline_name: str):
    text = publish_summary(outcomes, pipeline_name)
    failed = [o for o in outcomes if o.status != "COMPLETED"]
    if failed:
        names = ", ".join(f"{o.region} ({o.error or o.status})" for o in failed)
        return Failed(message=f"{len(failed)} of {len(outcomes)} regions failed: {names}. {text}")
    return Completed(message=text)


def _state_error(state) -> str:
    try:
        state.result()
    except BaseException as exc:  # the task's own exception, re-raised by result()
        return f"{type(exc).__name__}: {exc}"[:300]
    return state.message or state.type.value


@flow(name=MAINTENANCE_FLOW_NAME, log_prints=True, timeout_seconds=3600)
def eve_maintenance(
    destination: Literal["env", "crunchy", "snowflake", "local"] = "env",
    db_schema: str = "eve",
    table: str | None = None,
    source: str = "esi-history",
    retention_days: int = 30,
    cache_max_age_days: int = 7,
    pipeline_name: str = "adhoc",
    closed_order_retention_days: int = 90,
) -> dict[str, int]:
    """Prune quarantine and ledger rows older than ``retention_days`` and orders closed more than
    ``closed_order_retention_days`` ago, ANALYZE, trim the ESI cache."""
    from eveflow_etl.orchestration.maintenance import run_maintenance  # psycopg: ~90 ms in the operator

    result = run_maintenance(destination=destination, schema=db_schema, table=table, source=source,
                             retention_days=retention_days, cache_max_age_days=cache_max_age_days,
                             pipeline_name=pipeline_name, closed_order_retention_days=closed_order_retention_days)
    get_run_logger().info("maintenance: %s", ", ".join(f"{k}={v}" for k, v in result.items()))
    return result


__all__ = ["eve_market_etl", "eve_maintenance", "load_region", "COUNT_FIELDS", "ETL_ENTRYPOINT",
           "MAINTENANCE_ENTRYPOINT"]
