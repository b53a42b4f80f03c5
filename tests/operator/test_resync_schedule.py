"""When the resync timer first runs for a pipeline: a full period after the pass its creation
(or the operator's start) brought, plus a per-pipeline phase -- not within the phase alone,
which gave every new pipeline a second, redundant Prefect sync seconds after its first."""

from __future__ import annotations

import kopf

from eveflow_operator import handlers
from eveflow_operator.settings import OperatorSettings


def _resync_timer(settings: OperatorSettings):
    registry = kopf.OperatorRegistry()
    handlers.register(settings, registry)
    # kopf keeps timers with the daemons ("spawning" handlers); kopf is pinned (pyproject).
    (timer,) = [h for h in registry._spawning.get_all_handlers() if str(h.id).endswith(".resync")]
    return timer


def test_a_pipeline_is_first_resynced_one_period_after_its_pass_spread_by_the_jitter() -> None:
    timer = _resync_timer(OperatorSettings(resync_seconds=300, resync_jitter_seconds=30))
    firsts = [timer.initial_delay() for _ in range(200)]
    assert timer.interval == 300
    assert all(300 <= first <= 330 for first in firsts)
    assert max(firsts) - min(firsts) > 15  # spread, not all pipelines at once


def test_without_jitter_the_first_resync_is_exactly_one_period() -> None:
    timer = _resync_timer(OperatorSettings(resync_seconds=2, resync_jitter_seconds=0))
    assert timer.initial_delay() == 2
