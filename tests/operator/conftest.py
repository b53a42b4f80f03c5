"""Fixtures of the operator's end-to-end tests: one `eveflow operator` per test module."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from .e2e import CRD, RESYNC, ROOT, RunningOperator, chart_rbac, free_port, wait_healthy

OPERATOR_NAMESPACE = "eveflow-e2e"


@pytest.fixture(scope="module")
def operator(kube, _prefect_counting_proxy, tmp_path_factory):
    """`eveflow operator` on the real control plane, as the chart's ServiceAccount (its RBAC from
    `helm template charts/eveflow`); Prefect through the counting proxy."""
    kube.kubectl("apply", "-f", str(CRD))
    kube.kubectl("wait", "--for=condition=Established", "crd/evepipelines.eveflow.dev", "--timeout=60s")
    kube.forget_discovery()
    user, _ = chart_rbac(kube, "eveflow", OPERATOR_NAMESPACE)
    identity = kube.kubeconfig_for(OPERATOR_NAMESPACE, user.rsplit(":", 1)[1])
    # A fresh CRD's storage answers 429 for a moment; kopf would back off for seconds.
    kube.wait_for(lambda: kube.kubectl("get", "evp", "-A", kubeconfig=identity, check=False).returncode == 0,
                  what="EvePipelines listable by the operator's identity")
    log = Path(os.environ.get("EVEFLOW_OPERATOR_TEST_LOG") or tmp_path_factory.mktemp("operator") / "operator.log")
    health_port = free_port()
    env = {**kube.env, "KUBECONFIG": str(identity),
           "EVEFLOW_OPERATOR_PREFECT_API_URL": _prefect_counting_proxy.api_url,
           "EVEFLOW_OPERATOR_RESYNC_SECONDS": str(RESYNC),
           "EVEFLOW_OPERATOR_RESYNC_JITTER_SECONDS": "0.5",
           "EVEFLOW_OPERATOR_RESYNC_IDLE_SECONDS": "1",
           "EVEFLOW_OPERATOR_RETRY_BACKOFF_SECONDS": "0.5",
           "EVEFLOW_OPERATOR_FINALIZER_MAX_RETRIES": "2",
           "EVEFLOW_OPERATOR_METRICS_PORT": "0",
           "EVEFLOW_OPERATOR_HEALTH_PORT": str(health_port),
           "EVEFLOW_OPERATOR_WORKER_IMAGE": "example.org/eveflow:test", "PYTHONUNBUFFERED": "1"}
    env.pop("EVEFLOW_OPERATOR_NAMESPACES", None)
    with log.open("w") as out:
        proc = subprocess.Popen([str(Path(sys.executable).parent / "eveflow"), "operator", "--verbose"],
                                env=env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
    try:
        wait_healthy(proc, health_port, log)
        yield RunningOperator(proc, log, user)
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
        if os.environ.get("EVEFLOW_SHOW_OPERATOR_LOG"):
            print(log.read_text()[-20000:])


@pytest.fixture
def ns(kube, kube_namespace, operator):
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "eveflow-postgres"},
              "stringData": {"PGHOST": "db", "PGPASSWORD": "not-logged"}}
    kube.kubectl("apply", "-n", kube_namespace, "-f", "-", input=json.dumps(secret))
    return kube_namespace


@pytest.fixture
def prefect(prefect_server):
    with httpx.Client(base_url=prefect_server.api_url, timeout=30) as client:
        yield client
