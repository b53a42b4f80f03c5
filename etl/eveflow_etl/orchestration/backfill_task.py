"""The scheduled side of ``source: {kind: everef, backfill: {from: …}, verifyDays: N}``.

Each run of the pipeline's ETL flow loads, one transaction a day, every day from ``backfill.from``
(or, with only ``verifyDays``, the last N days) to yesterday that is not loaded and verified yet,
and loads the last ``verifyDays`` days again (EVE Ref rewrites recent days). A first run does the
whole archive; later ones find it done and cost one ledger query plus the re-verified days.
"""

from __future__ import annotations

import datetime as dt

from prefect import get_run_logger, task

from eveflow_etl.errors import SourceError
from eveflow_etl.orchestration.summary import COUNT_FIELDS, RegionOutcome
from eveflow_etl.settings import load_settings

# The backfill covers every listed region in each day's transaction: its summary is one row.
BACKFILL_REGION = 0


def backfill_window(backfill_from: str | None, verify_days: int, today: dt.date | None = None) -> dt.date:
    """The first day a run looks at: ``backfill_from``, else the start of the verify window."""
    if backfill_from:
        return dt.date.fromisoformat(backfill_from)
    yesterday = (today or dt.datetime.now(dt.UTC).date()) - dt.timedelta(days=1)
    return yesterday - dt.timedelta(days=max(verify_days, 1) - 1)


@task(name="backfill-everef")
def backfill_everef(regions: list[int], types: list[int] | None, destination: str, db_schema: str,
                    table: str | None, pipeline_name: str, backfill_from: str | None,
                    verify_days: int) -> dict[str, int]:
    # Imported when the task runs: the operator imports this module (through flows.py), and the
    # backfill package (pandas, pandera) would add ~1.7 s there, destinations (psycopg) ~50 ms.
    from eveflow_etl.backfill import BackfillOptions, run_backfill
    from eveflow_etl.destinations import resolve_dsn

    settings = load_settings()
    logger = get_run_logger()
    # Threads, not processes: a flow-run process has Prefect's threads running, no place to fork.
    options = BackfillOptions(start=backfill_window(backfill_from, verify_days), regions=tuple(regions),
                              types=tuple(types) if types else None, jobs=2, executor="thread",
                              verify_days=verify_days, schema=db_schema, table=table or "market_history",
                              pipeline_name=pipeline_name)
    report = run_backfill(options, resolve_dsn(destination, None, settings), settings)
    for day in report.days:
        if day.action in ("missing", "failed") or day.unverified:
            logger.warning("EVE Ref %s %s%s: %s", day.day, day.action, " (unverified)" if day.unverified else "",
                           day.message)
    logger.info("backfill %s … %s: %d loaded, %d reloaded, %d skipped, %d missing, %d failed, %d rows",
                report.start, report.end, report.count("loaded"), report.count("reloaded"),
                report.count("skipped"), report.count("missing"), report.count("failed"), report.rows)
    if not report.ok:
        raise SourceError(f"{report.count('failed')} of {len(report.days)} EVE Ref days failed: "
                          + ", ".join(str(d.day) for d in report.days if d.action == "failed"))
    counts = {"inserted": sum(d.inserted for d in report.days), "updated": sum(d.updated for d in report.days),
              "unchanged": sum(d.unchanged for d in report.days),
              "quarantined": sum(d.quarantined for d in report.days)}
    counts["fetched"] = sum(counts.values())
    return {name: counts[name] for name in COUNT_FIELDS}


def run_backfill_task(regions, common, retries, retry_delay_seconds, timeout_seconds, backfill_from,
                      verify_days) -> list[RegionOutcome]:
    load = backfill_everef.with_options(retries=retries, retry_delay_seconds=retry_delay_seconds,
                                        timeout_seconds=timeout_seconds)
    future = load.submit(regions, common["types"], common["destination"], common["db_schema"], common["table"],
                         common["pipeline_name"], backfill_from, verify_days)
    future.wait(timeout=timeout_seconds)
    state = future.state
    if not state.is_final():
        return [RegionOutcome(BACKFILL_REGION, "TIMED_OUT", error=f"not done after {timeout_seconds} s")]
    if state.is_completed():
        return [RegionOutcome(BACKFILL_REGION, "COMPLETED", counts=future.result())]
    try:
        state.result()
        error = state.message
    except BaseException as exc:  # noqa: BLE001 - the task's own error
        error = f"{type(exc).__name__}: {exc}"[:300]
    return [RegionOutcome(BACKFILL_REGION, state.type.value, error=error)]
