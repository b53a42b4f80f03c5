"""``eveflow worker`` as a user (or a pod) runs it: a subprocess against a real Prefect server.

The running-worker test goes through the Cloud stand-in (bearer key checked in front of the real
session server), so the same test shows the key is used and never printed; its proxy can drop
every request to show ``/health`` turning 503 when the API goes away.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest

from eveflow_etl.orchestration.server import free_port

pytestmark = pytest.mark.prefect

EVEFLOW = str(Path(sys.executable).with_name("eveflow"))
SENTINEL_KEY = "pnu_SENTINEL_never_print_me_7f3a9c"


def _worker_env(base: dict[str, str], **extra: str) -> dict[str, str]:
    env = {k: v for k, v in base.items() if not k.startswith("PREFECT_API_")}
    env.update(extra)
    return env


def _run_cli(args: list[str], env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([EVEFLOW, *args], env=env, capture_output=True, text=True, timeout=timeout)


def _metric(text: str, name: str, labels: str = "") -> float:
    match = re.search(rf"^{re.escape(name)}{re.escape(labels)} (\S+)$", text, re.M)
    assert match, f"{name}{labels} missing from /metrics:\n{text}"
    return float(match.group(1))


def _wait_for(predicate, timeout: float, what: str, proc: subprocess.Popen | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            out = proc.stdout.read() if proc.stdout else ""
            raise AssertionError(f"worker exited ({proc.returncode}) while waiting for {what}:\n{out[-3000:]}")
        result = predicate()
        if result:
            return result
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def _status(url: str) -> int | None:
    try:
        return httpx.get(url, timeout=2).status_code
    except httpx.HTTPError:
        return None


def _create_flow_run(api: httpx.Client, pool: str) -> str:
    """A deployment on ``pool`` (its code need not exist: submission is what we count) and a run."""
    flow_id = api.post("flows/", json={"name": f"worker-test-{uuid.uuid4().hex[:6]}"}).json()["id"]
    deployment = api.post("deployments/", json={
        "name": "probe", "flow_id": flow_id, "work_pool_name": pool,
        "entrypoint": "nowhere.py:nothing", "path": "/nonexistent",
    })
    deployment.raise_for_status()
    run = api.post(f"deployments/{deployment.json()['id']}/create_flow_run", json={})
    run.raise_for_status()
    return run.json()["id"]


def test_worker_health_metrics_and_503_when_the_api_goes_away(prefect_cloud, prefect_client_env):
    from tests.fixtures.prefect import prefect_api

    pool, port = f"wk-{uuid.uuid4().hex[:8]}", free_port()
    env = _worker_env(prefect_client_env, PREFECT_API_URL=prefect_cloud.api_url,
                      PREFECT_API_KEY=prefect_cloud.api_key, PREFECT_CLIENT_MAX_RETRIES="1")
    proc = subprocess.Popen(
        [EVEFLOW, "worker", "--pool", pool, "--type", "process", "--port", str(port), "--host", "127.0.0.1",
         "--poll-seconds", "1", "--limit", "2"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )
    health, metrics = f"http://127.0.0.1:{port}/health", f"http://127.0.0.1:{port}/metrics"
    try:
        _wait_for(lambda: _status(health) == 200, 90, "/health 200", proc)
        text = httpx.get(metrics, timeout=5).text
        assert _metric(text, "eveflow_worker_up") == 1.0
        assert _metric(text, "eveflow_worker_polls_total", '{result="success"}') >= 1
        assert abs(_metric(text, "eveflow_worker_last_successful_poll_timestamp_seconds") - time.time()) < 30
        assert _metric(text, "eveflow_worker_flow_runs_submitted_total") == 0
        assert f'pool="{pool}"' in text and prefect_cloud.api_key not in text

        # A flow run in the pool is picked up and counted (its code is missing: it then fails).
        with prefect_api(prefect_cloud.counter.upstream) as direct:  # the server behind the stand-in
            run_id = _create_flow_run(direct, pool)
            _wait_for(lambda: _metric(httpx.get(metrics, timeout=5).text,
                                      "eveflow_worker_flow_runs_submitted_total") >= 1, 60, "a submitted flow run", proc)
            _wait_for(lambda: direct.get(f"flow_runs/{run_id}").json()["state"]["type"]
                      in ("FAILED", "CRASHED", "COMPLETED"), 90, "the probe run to finish", proc)

        # The API goes away (every request dropped): health says so, the process keeps trying.
        prefect_cloud.counter.fail_after_writes(0)
        try:
            _wait_for(lambda: _status(health) == 503, 60, "/health 503", proc)
            text = httpx.get(metrics, timeout=5).text
            assert _metric(text, "eveflow_worker_up") == 0.0
            assert _metric(text, "eveflow_worker_polls_total", '{result="failure"}') >= 1
        finally:
            prefect_cloud.counter.heal()
        _wait_for(lambda: _status(health) == 200, 60, "/health 200 again", proc)

        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    assert proc.returncode == 0, out[-3000:]
    assert f"{prefect_cloud.api_url} (api key)" in out  # where it is connected …
    assert prefect_cloud.api_key not in out  # … never with what


def _assert_one_line(result: subprocess.CompletedProcess, *expected: str) -> str:
    output = (result.stdout + result.stderr).strip()
    assert result.returncode != 0, output
    assert "Traceback" not in output, output
    assert len(output.splitlines()) == 1, output
    for text in expected:
        assert text in output, output
    return output


def test_unreachable_api_exits_with_one_line(prefect_client_env):
    url = f"http://127.0.0.1:{free_port()}/api"
    result = _run_cli(["worker", "--pool", "nowhere", "--port", "0"], _worker_env(prefect_client_env, PREFECT_API_URL=url))
    _assert_one_line(result, f"cannot reach the Prefect API at {url}")


def test_refused_key_exits_with_one_line_without_the_key(prefect_cloud, prefect_client_env):
    env = _worker_env(prefect_client_env, PREFECT_API_URL=prefect_cloud.api_url, PREFECT_API_KEY=SENTINEL_KEY)
    result = _run_cli(["worker", "--pool", "any", "--port", "0"], env)
    output = _assert_one_line(result, "refused the credentials", "PREFECT_API_KEY", prefect_cloud.api_url)
    assert SENTINEL_KEY not in output


def test_refused_key_with_api_url_option(prefect_cloud, prefect_client_env):
    """--api-url overrides PREFECT_API_URL; the key still comes from the environment."""
    env = _worker_env(prefect_client_env, PREFECT_API_URL="http://127.0.0.1:9/api", PREFECT_API_KEY=SENTINEL_KEY)
    result = _run_cli(["worker", "--pool", "any", "--port", "0", "--api-url", prefect_cloud.api_url], env)
    assert SENTINEL_KEY not in _assert_one_line(result, "refused the credentials")


def test_not_a_prefect_api_and_bad_type_are_one_line(prefect_server, prefect_client_env):
    env = _worker_env(prefect_client_env)
    ui_url = prefect_server.api_url.removesuffix("/api")
    _assert_one_line(_run_cli(["worker", "--pool", "p", "--api-url", ui_url], env), "does not look like a Prefect API")
    _assert_one_line(_run_cli(["worker", "--pool", "p", "--type", "lambda", "--api-url", prefect_server.api_url], env),
                     "--type 'lambda'")


def test_health_verdict_follows_polls_and_heartbeats():
    """The monitor's rules without a server: connected, polling, and recently."""
    from eveflow_etl.orchestration.types import PrefectConnection
    from eveflow_etl.orchestration.worker_process import WorkerOptions
    from eveflow_etl.orchestration.worker_health import WorkerMonitor

    now = [1000.0]
    monitor = WorkerMonitor(WorkerOptions(pool="p", poll_seconds=1, stale_after_seconds=30),
                            PrefectConnection("http://x/api", api_key=SENTINEL_KEY), clock=lambda: now[0])
    assert monitor.health() == (False, "not yet connected to the Prefect API")
    monitor.heartbeat_succeeded()
    assert not monitor.health()[0]  # connected, not polled yet
    monitor.poll_succeeded(submitted=2)
    assert monitor.health() == (True, "ok")
    now[0] += 31
    assert monitor.health()[1] == "no successful poll for 31 s"
    monitor.poll_succeeded()
    monitor.poll_failed(ConnectionError("refused"))
    assert monitor.health() == (False, "poll failing: refused")
    text = monitor.metrics_text().decode()
    assert _metric(text, "eveflow_worker_flow_runs_submitted_total") == 2
    assert _metric(text, "eveflow_worker_up") == 0
    assert SENTINEL_KEY not in text
