"""Deployment schedules, reconciled one by one by slug.

Never through the deployment's ``schedules`` field: an update carrying it recreates the list (new
ids, future runs dropped). Here a schedule is created (``POST …/schedules``), patched in place
(``PATCH …/schedules/{id}``, same id) or deleted, and only when it differs from the spec.
"""

from __future__ import annotations

from typing import Any

from eveflow_etl.orchestration.client import PrefectApi


def cron_schedule(slug: str, cron: str, timezone: str, parameters: dict[str, Any] | None = None,
                  active: bool = True) -> dict[str, Any]:
    """A schedule as the API takes it (``DeploymentScheduleCreate``)."""
    return {
        "slug": slug,
        "schedule": {"cron": cron, "timezone": timezone, "day_or": True},
        "active": active,
        "parameters": dict(parameters or {}),
    }


def schedule_differences(desired: dict[str, Any], observed: dict[str, Any]) -> dict[str, Any]:
    """The fields of ``desired`` a PATCH must send to make ``observed`` equal (empty: in sync)."""
    patch: dict[str, Any] = {}
    want, have = desired["schedule"], observed.get("schedule") or {}
    if (
        " ".join(str(have.get("cron", "")).split()) != " ".join(want["cron"].split())
        or (have.get("timezone") or "UTC") != want["timezone"]
        or bool(have.get("day_or", True)) != want["day_or"]
        or "interval" in have or "rrule" in have
    ):
        patch["schedule"] = want
    if bool(observed.get("active", True)) != desired["active"]:
        patch["active"] = desired["active"]
    if (observed.get("parameters") or {}) != desired["parameters"]:
        patch["parameters"] = desired["parameters"]
    return patch


async def ensure_schedules(api: PrefectApi, deployment: dict[str, Any], desired: list[dict[str, Any]],
                           actions: list[str]) -> dict[str, str]:
    """Bring ``deployment``'s schedules to ``desired`` (by slug). Returns slug → schedule id.

    Schedules without a slug or with a slug not in the spec are deleted: the deployment is
    eveflow's, and the spec is the only list of its schedules.
    """
    deployment_id, name = deployment["id"], deployment["name"]
    # Slug-less schedules are keyed by id: under one ``None`` key all but one would be missed.
    observed = {s.get("slug") or s["id"]: s for s in deployment.get("schedules") or []}
    ids: dict[str, str] = {}
    to_create = []
    for schedule in desired:
        current = observed.pop(schedule["slug"], None)
        if current is None:
            to_create.append(schedule)
            continue
        ids[schedule["slug"]] = current["id"]
        patch = schedule_differences(schedule, current)
        if patch:
            await api.write("PATCH", f"/deployments/{deployment_id}/schedules/{current['id']}", patch)
            actions.append(f"updated schedule {name}/{schedule['slug']} ({', '.join(sorted(patch))})")
    for slug, stale in observed.items():
        await api.write("DELETE", f"/deployments/{deployment_id}/schedules/{stale['id']}", missing_ok=True)
        actions.append(f"deleted schedule {name}/{slug}")
    if to_create:
        created = await api.write("POST", f"/deployments/{deployment_id}/schedules", to_create)  # type: ignore[arg-type]
        for item in created or []:
            ids[item["slug"]] = item["id"]
        actions.extend(f"created schedule {name}/{s['slug']}" for s in to_create)
    return ids
