"""When the resync timer first runs for a pipeline. One whose status already shows its next run:
a full period after the pass its creation or the operator's start brought, plus a per-pipeline
phase -- within the phase alone, an operator restart gave every pipeline a second, redundant
Prefect sync. A new one: within the phase, because Prefect schedules the runs seconds after the
deployment and only the next pass can show them (status.nextRun)."""

from __future__ import annotations

import kopf

from eveflow_operator import handlers
from eveflow_operator.settings import OperatorSettings

SCHEDULED = {"schedules": [{"slug": "daily", "cron": "15 12 * * *"}]}
NEXT_RUN = {"nextRun": {"deployment": "x", "state": "Scheduled", "time": "2026-12-02T12:15:00Z"}}


def _resync_timer(settings: OperatorSettings):
    registry = kopf.OperatorRegistry()
    handlers.register(settings, registry)
    # kopf keeps timers with the daemons ("spawning" handlers); kopf is pinned (pyproject).
    (timer,) = [h for h in registry._spawning.get_all_handlers() if str(h.id).endswith(".resync")]
    return timer


def test_a_pipeline_showing_its_next_run_is_first_resynced_one_period_later_spread() -> None:
    timer = _resync_timer(OperatorSettings(resync_seconds=300, resync_jitter_seconds=30))
    firsts = [timer.initial_delay(body={"spec": SCHEDULED, "status": NEXT_RUN}) for _ in range(200)]
    assert timer.interval == 300
    assert all(300 <= first <= 330 for first in firsts)
    assert max(firsts) - min(firsts) > 15  # spread, not all pipelines at once


def test_a_new_pipeline_is_resynced_within_the_phase_to_show_its_next_run() -> None:
    timer = _resync_timer(OperatorSettings(resync_seconds=300, resync_jitter_seconds=30))
    assert all(0 <= timer.initial_delay(body={"spec": SCHEDULED}) <= 30 for _ in range(50))
    # Suspended or without schedules there is no next run to wait for: a full period.
    assert timer.initial_delay(body={"spec": {**SCHEDULED, "suspend": True}}) >= 300
    assert timer.initial_delay(body={"spec": {}}) >= 300


def test_without_jitter_the_first_resync_is_exactly_one_period() -> None:
    timer = _resync_timer(OperatorSettings(resync_seconds=2, resync_jitter_seconds=0))
    assert timer.initial_delay(body={"spec": SCHEDULED, "status": NEXT_RUN}) == 2
