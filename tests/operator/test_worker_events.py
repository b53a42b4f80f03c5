"""The worker Deployment's event path against the API emulator and a real Prefect server: a
Deployment change that arrives before kopf has written the pass's status is not lost."""

from __future__ import annotations

import asyncio
import json

import pytest
from eveflow_operator import status as st
from eveflow_operator.kube import KubeApi
from eveflow_operator.reconcile import Reconciler
from eveflow_operator.settings import OperatorSettings

from .e2e import CRD, example, mark_available

pytestmark = [pytest.mark.k8s, pytest.mark.prefect]


def test_worker_event_waits_for_the_pass_status_kopf_has_not_written_yet(kube, kube_namespace, prefect_server) -> None:
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

    async def scenario() -> dict:
        api = KubeApi(kube.url, {}, kube.ssl_context())
        reconciler = Reconciler(OperatorSettings(prefect_api_url=prefect_server.api_url), api)
        try:
            body = await api.get(cr_path)
            result = await reconciler.reconcile(body)  # a worker not yet available: WorkerAvailable False
            assert (st.get_condition(result.status, st.WORKER_AVAILABLE) or {}).get("status") == "False"
            # The Deployment becomes available before kopf writes that status (a blind merge patch).
            mark_available(kube, ns, f"{name}-worker")
            worker = await api.get(f"/apis/apps/v1/namespaces/{ns}/deployments/{name}-worker")

            async def kopf_writes_the_pass_status() -> None:
                await asyncio.sleep(0.3)
                code, out = await asyncio.to_thread(kube.api, "PATCH", cr_path + "/status",
                                                    {"status": st.status_patch(body.get("status"), result.status)},
                                                    "application/merge-patch+json")
                assert code == 200, out

            writer = asyncio.create_task(kopf_writes_the_pass_status())
            written, events = await reconciler.observe_worker(worker)
            await writer
            assert written is not None and [e.reason for e in events] == ["Ready"]
            return await api.get(cr_path)
        finally:
            kube.configure(mark_deployments_available=True)
            await api.close()

    cr = asyncio.run(scenario())
    assert st.get_condition(cr["status"], st.WORKER_AVAILABLE)["status"] == "True"
    assert st.get_condition(cr["status"], st.READY)["status"] == "True"
    assert cr["status"]["workPoolName"] == f"race-{ns}"  # the pass's own fields are all there too

