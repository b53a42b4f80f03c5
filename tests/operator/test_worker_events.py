"""The worker Deployment's event path against the API server and a real Prefect server: a pass
writes its own status before it returns (kopf writes none), and the Deployment's later change
brings WorkerAvailable and Ready on top of it, with the pass's own fields kept."""

from __future__ import annotations

import asyncio
import json

import pytest
from eveflow_operator.kube import KubeApi
from eveflow_operator.prefect_side import PrefectSync
from eveflow_operator.reconcile import Reconciler
from eveflow_operator.settings import OperatorSettings
from eveflow_operator.status import READY, WORKER_AVAILABLE, get_condition

from .e2e import CRD, example, mark_available

pytestmark = [pytest.mark.k8s, pytest.mark.prefect]


def test_a_worker_event_after_the_pass_makes_the_pipeline_ready(kube, kube_namespace, prefect_server) -> None:
    ns = kube_namespace
    kube.kubectl("apply", "-f", str(CRD))
    kube.wait_for(lambda: kube.kubectl("get", "evp", "-A", check=False).returncode == 0, what="CRD served")
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "eveflow-postgres"},
              "stringData": {"PGHOST": "db"}}
    kube.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(secret))
    name = f"race-{ns}"
    doc = example(cr=name, pool=f"race-{ns}")
    kube.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(doc))
    cr_path = f"/apis/eveflow.dev/v1alpha1/namespaces/{ns}/evepipelines/{name}"
    kube.configure(mark_deployments_available=False)

    async def scenario() -> tuple[dict, dict]:
        api = KubeApi(kube.url, {}, kube.ssl_context())
        reconciler = Reconciler(OperatorSettings(prefect_api_url=prefect_server.api_url), api, PrefectSync())
        try:
            result = await reconciler.reconcile(await api.get(cr_path))  # a worker not yet available
            assert (get_condition(result.status, WORKER_AVAILABLE) or {}).get("status") == "False"
            after_pass = await api.get(cr_path)
            mark_available(kube, ns, f"{name}-worker")
            worker = await api.get(f"/apis/apps/v1/namespaces/{ns}/deployments/{name}-worker")
            written, events = await reconciler.observe_worker(worker)
            assert written is not None and [e.reason for e in events] == ["Ready"]
            return after_pass, await api.get(cr_path)
        finally:
            kube.configure(mark_deployments_available=True)
            await api.close()

    after_pass, cr = asyncio.run(scenario())
    # The pass's status is on the object when the pass returns: no writer left behind it.
    assert get_condition(after_pass["status"], WORKER_AVAILABLE)["status"] == "False"
    assert after_pass["status"]["workPoolName"] == f"race-{ns}"
    assert get_condition(cr["status"], WORKER_AVAILABLE)["status"] == "True"
    assert get_condition(cr["status"], READY)["status"] == "True"
    assert cr["status"]["workPoolName"] == f"race-{ns}"  # the pass's own fields are all there too
