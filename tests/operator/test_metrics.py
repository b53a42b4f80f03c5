"""The operator's /metrics: rows of each pipeline's last run, gone when the pipeline is deleted."""

from __future__ import annotations

from prometheus_client import generate_latest

from eveflow_operator import metrics


def _exposition() -> str:
    return generate_latest(metrics.REGISTRY).decode()


def test_last_run_rows_follow_the_status_and_leave_with_the_pipeline() -> None:
    metrics.observe_last_run("ns-a", "jita", {"lastRun": {"state": "COMPLETED", "rowsLoaded": 1234, "rowsQuarantined": 5}})
    text = _exposition()
    assert 'eveflow_operator_last_run_rows_loaded{namespace="ns-a",pipeline="jita"} 1234.0' in text
    assert 'eveflow_operator_last_run_rows_quarantined{namespace="ns-a",pipeline="jita"} 5.0' in text

    metrics.forget_pipeline("ns-a", "jita")
    assert 'pipeline="jita"' not in _exposition()
    metrics.forget_pipeline("ns-a", "jita")  # a second delete pass must not fail


def test_no_series_before_a_first_run() -> None:
    metrics.observe_last_run("ns-b", "fresh", {"lastRun": None})
    metrics.observe_last_run("ns-b", "fresh", {})
    assert 'pipeline="fresh"' not in _exposition()


def test_reconcile_outcomes_are_counted_by_trigger_and_result() -> None:
    before = metrics.RECONCILES.labels("resync", "PrefectUnavailable")._value.get()  # noqa: SLF001
    try:
        with metrics.track("resync") as tracker:
            tracker.problem("PrefectUnavailable")
            raise RuntimeError("boom")
    except RuntimeError:
        pass
    assert metrics.RECONCILES.labels("resync", "PrefectUnavailable")._value.get() == before + 1  # noqa: SLF001
