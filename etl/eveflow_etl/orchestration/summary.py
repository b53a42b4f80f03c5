"""The per-region outcome of an ETL run, published as a Prefect table artifact and read back.

The artifact (key ``<pipeline>-summary``, one row per region plus a ``total`` row) is what the
sync library reads to report rows loaded/quarantined of a pipeline's last run, so the Prefect
server alone answers ``eveflow status`` (no database access needed).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

COUNT_FIELDS = ("fetched", "inserted", "updated", "unchanged", "quarantined")
TOTAL_ROW = "total"


@dataclass
class RegionOutcome:
    region: int
    status: str  # COMPLETED, FAILED, CRASHED, TIMED_OUT, …
    counts: dict[str, int] = field(default_factory=dict)
    error: str | None = None
    flow_run_id: str | None = None

    def as_row(self) -> dict[str, Any]:
        row: dict[str, Any] = {"region": str(self.region), "status": self.status}
        row.update({name: int(self.counts.get(name, 0)) for name in COUNT_FIELDS})
        row["error"] = self.error or ""
        return row


def counts_of_report(report: Any) -> dict[str, int]:
    """The counts of a ``RunReport`` (totals over its regions) as a plain dict."""
    if isinstance(report, dict):
        source = report
    elif getattr(report, "totals", None) is not None:
        source = {name: _get(report.totals, name) for name in COUNT_FIELDS}
    else:
        source = {name: getattr(report, name, None) for name in COUNT_FIELDS}
        if any(value is None for value in source.values()):
            regions = getattr(report, "regions", None) or {}
            items = regions.values() if isinstance(regions, dict) else regions
            source = {name: sum(int(_get(r, name) or 0) for r in items) for name in COUNT_FIELDS}
    return {name: int(source.get(name) or 0) for name in COUNT_FIELDS}


def _get(obj: Any, name: str) -> Any:
    return obj.get(name) if isinstance(obj, dict) else getattr(obj, name, None)


def artifact_key(pipeline_name: str) -> str:
    """Artifact keys allow lowercase letters, digits and dashes only."""
    return re.sub(r"[^a-z0-9-]+", "-", f"{pipeline_name}-summary".lower()).strip("-")


def rows_loaded(counts: dict[str, int]) -> int:
    return int(counts.get("inserted", 0)) + int(counts.get("updated", 0))


def summary_rows(outcomes: list[RegionOutcome]) -> list[dict[str, Any]]:
    rows = [o.as_row() for o in outcomes]
    total = {"region": TOTAL_ROW, "status": "COMPLETED" if all(o.status == "COMPLETED" for o in outcomes) else "FAILED"}
    total.update({name: sum(r[name] for r in rows) for name in COUNT_FIELDS})
    total["error"] = ", ".join(r["region"] for r in rows if r["status"] != "COMPLETED")
    return rows + [total]


def summary_text(rows: list[dict[str, Any]]) -> str:
    total = rows[-1]
    text = f"{rows_loaded(total)} rows loaded ({total['inserted']} new, {total['updated']} updated, " \
           f"{total['unchanged']} unchanged), {total['quarantined']} quarantined, {len(rows) - 1} regions"
    if total["error"]:
        text += f"; failed: {total['error']}"
    return text


def publish_summary(outcomes: list[RegionOutcome], pipeline_name: str) -> str:
    """Create the run's table artifact; return the one-line summary."""
    # Prefect (~2.6 s) only here: the sync library, hence `eveflow apply` and the operator, and the
    # demo's report (every `eveflow` start) import this module for its pure functions.
    from prefect.artifacts import create_table_artifact

    rows = summary_rows(outcomes)
    text = summary_text(rows)
    create_table_artifact(rows, key=artifact_key(pipeline_name), description=text)
    return text


def rows_of_artifact(artifact: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows of a summary table artifact as read from the API (its ``data`` is a JSON string)."""
    data = artifact.get("data")
    if isinstance(data, str):
        try:
            data = json.loads(data)
        except ValueError:
            return []
    return data if isinstance(data, list) else []


def totals_of_artifact(artifact: dict[str, Any]) -> tuple[int, int] | None:
    """(rows loaded, rows quarantined) from the artifact's ``total`` row."""
    for row in rows_of_artifact(artifact):
        if isinstance(row, dict) and row.get("region") == TOTAL_ROW:
            return rows_loaded(row), int(row.get("quarantined") or 0)
    return None
