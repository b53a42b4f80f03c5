"""Issue 12, written as the attacker: the author of an EvePipeline in one namespace tries to reach
beyond it through the operator (another namespace, a foreign object, a Secret they cannot read,
a forged worker status, a hostile image). Reconcile passes are driven directly against the API
emulator; Prefect is replaced by a recorder that fails the test if anything was sent to it."""

from __future__ import annotations

import asyncio
import base64
import uuid
from typing import Any

import pytest

from eveflow_etl.errors import ConfigError
from eveflow_etl.spec import parse_pipeline
from eveflow_operator.status import (
    INVALID_SPEC,
    NOT_OWNED,
    PREFECT_REJECTED,
    READY,
    SECRET_NOT_OPTED_IN,
    WORKER_AVAILABLE,
    get_condition,
)
from eveflow_operator.kube import KubeApi
from eveflow_operator.prefect_side import PrefectSync
from eveflow_operator.reconcile import Reconciler
from eveflow_operator.settings import OperatorSettings

from .e2e import CRD
from .fakes import FakePrefect
from .test_reconcile import NAME, RBAC, _body

pytestmark = pytest.mark.k8s


@pytest.fixture
def prefect_side() -> FakePrefect:
    """The Prefect side of the passes of a test that looks at what reached Prefect: in sync, and
    recording each call's connection."""
    return FakePrefect()


@pytest.fixture
def prefect_calls(prefect_side: FakePrefect) -> list[Any]:
    """The connection of every Prefect sync (a test naming this gets the fake Prefect side)."""
    return prefect_side.conns


CHART_RELEASE, CHART_NAMESPACE = "tb", "eveflow-tb"


@pytest.fixture(scope="module")
def as_operator(kube, tmp_path_factory):
    """How the passes reach Kubernetes. On the real control plane: as the chart's operator
    ServiceAccount, under the chart's own RBAC (`helm template` of its ServiceAccount and RBAC,
    applied), so the API server's authorisation and escalation checks apply to every call. On
    the emulator (no RBAC): directly."""
    kube.kubectl("apply", "-f", str(CRD))  # ownerReferences name its kind
    kube.wait_for(lambda: kube.kubectl("get", "evp", "-A", check=False).returncode == 0, what="CRD served")
    if not hasattr(kube, "kubeconfig_for"):
        return lambda: KubeApi(kube.url, {}, False), "eveflow-worker"
    from tests.chart.conftest import CHART

    kube.api("POST", "/api/v1/namespaces", {"metadata": {"name": CHART_NAMESPACE}})
    rendered = kube.helm("template", CHART_RELEASE, str(CHART), "-n", CHART_NAMESPACE,
                         "--show-only", "templates/serviceaccount.yaml", "--show-only", "templates/rbac.yaml").stdout
    kube.kubectl("apply", "-n", CHART_NAMESPACE, "-f", "-", input=rendered)
    kubeconfig = kube.kubeconfig_for(CHART_NAMESPACE, f"{CHART_RELEASE}-eveflow")

    def api() -> KubeApi:
        return KubeApi.from_environment(str(kubeconfig))
    return api, f"{CHART_RELEASE}-eveflow-worker"


@pytest.fixture
def _drive(as_operator, request):
    make_api, worker_role = as_operator
    # The fake when the test looks at what reached Prefect, else the sync library itself.
    prefect = request.getfixturevalue("prefect_side") if "prefect_calls" in request.fixturenames else PrefectSync()

    def drive(kube, body: dict, settings: OperatorSettings | None = None, step: str = "reconcile") -> Any:
        if step == "reconcile":
            body = _as_stored(kube, body)  # a pass writes its status to the EvePipeline

        async def run():
            api = make_api()
            try:
                chosen = (settings or OperatorSettings()).model_copy(update={"worker_cluster_role": worker_role})
                return await getattr(Reconciler(chosen, api, prefect), step)(body)
            finally:
                await api.close()
        return asyncio.run(run())
    return drive


def _as_stored(kube, body: dict) -> dict:
    """``body`` as the API server stores it (created, or its spec replaced), as kopf hands it over."""
    kube.kubectl("apply", "-f", str(CRD))
    kube.wait_for(lambda: kube.kubectl("get", "evp", "-A", check=False).returncode == 0, what="CRD served")
    ns, name = body["metadata"]["namespace"], body["metadata"]["name"]
    path = f"/apis/eveflow.dev/v1alpha1/namespaces/{ns}/evepipelines"
    status, cr = kube.api("POST", path, {**body, "metadata": {"name": name}})
    if status == 409:
        status, cr = kube.api("GET", f"{path}/{name}")
        status, cr = kube.api("PUT", f"{path}/{name}", {**cr, "spec": body["spec"]})
        assert status == 200, cr
    else:
        assert status == 201, cr
    return cr


def _namespace(kube, suffix: str, labels: dict[str, str] | None = None) -> str:
    name = f"tb-{uuid.uuid4().hex[:6]}-{suffix}"
    status, out = kube.api("POST", "/api/v1/namespaces", {"metadata": {"name": name, "labels": labels or {}}})
    assert status == 201, out
    return name


def _team(kube, suffix: str = "team-a") -> str:
    """A tenant namespace with the destination Secret the example pipeline names."""
    ns = _namespace(kube, suffix)
    secret = {"metadata": {"name": "eveflow-postgres"}, "stringData": {"PGHOST": "db"}}
    assert kube.api("POST", f"/api/v1/namespaces/{ns}/secrets", secret)[0] == 201
    return ns


def _live(kube, plural: str, group: str | None, ns: str) -> list[dict]:
    """The objects a pass of pipeline NAME could have made (not the namespace's `default` SA)."""
    return [o for o in kube.objects(plural, group, ns) if o["metadata"]["name"].startswith(NAME)]


def _message(result) -> str:
    return get_condition(result.status, READY)["message"]


# --- 1. the jobs namespace ------------------------------------------------------------------------


def test_a_pipeline_cannot_get_worker_rights_in_kube_system(_drive, kube, prefect_calls) -> None:
    team = _team(kube)
    result = _drive(kube, _body(team, jobs="kube-system"))
    assert result.problem is not None and result.problem.reason == INVALID_SPEC and result.permanent
    assert "spec.workPool.kubernetes.namespace" in _message(result) and "kube-system" in _message(result)
    # Nothing created anywhere: no binding or Role in kube-system, no worker, nothing in Prefect.
    for plural in ("roles", "rolebindings"):
        assert not [o for o in _live(kube, plural, RBAC, "kube-system")
                    if (o["metadata"].get("labels") or {}).get("eveflow.dev/pipeline-namespace") == team]
    assert not _live(kube, "deployments", "apps", team) and not _live(kube, "serviceaccounts", None, team)
    assert prefect_calls == []


def test_another_jobs_namespace_only_when_its_label_names_the_pipelines_namespace(_drive, kube, prefect_calls) -> None:
    team, other = _team(kube), _team(kube, "team-b")
    jobs = _namespace(kube, "jobs", labels={f"jobs.eveflow.dev/{other}": "true"})
    # Labelled for team-b, not team-a: refused.
    refused = _drive(kube, _body(team, jobs=jobs))
    assert refused.problem is not None and refused.problem.reason == INVALID_SPEC
    assert f"jobs.eveflow.dev/{team}=true" in _message(refused)  # the message says what an admin sets
    assert not _live(kube, "rolebindings", RBAC, jobs)
    # The admin labels it for team-a too: the worker's rights are a binding of the fixed ClusterRole there.
    status, out = kube.api("PATCH", f"/api/v1/namespaces/{jobs}",
                           {"metadata": {"labels": {f"jobs.eveflow.dev/{team}": "true"}}},
                           content_type="application/merge-patch+json")
    assert status == 200, out
    allowed = _drive(kube, _body(team, jobs=jobs))
    assert allowed.problem is None, allowed.problem
    (binding,) = _live(kube, "rolebindings", RBAC, jobs)
    assert binding["roleRef"]["kind"] == "ClusterRole" and binding["roleRef"]["name"].endswith("eveflow-worker")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": f"{NAME}-worker", "namespace": team}]
    assert not _live(kube, "roles", RBAC, jobs), "no Role is created: the worker's rules are the chart's"


def test_the_operator_setting_allows_a_jobs_namespace_for_every_pipeline(_drive, kube, prefect_calls) -> None:
    team, jobs = _team(kube), _namespace(kube, "batch")
    result = _drive(kube, _body(team, jobs=jobs), OperatorSettings(allowed_jobs_namespaces=[jobs]))
    assert result.problem is None, result.problem
    assert [b["metadata"]["labels"]["eveflow.dev/pipeline-namespace"] for b in _live(kube, "rolebindings", RBAC, jobs)] \
        == [team]


# --- 2. images --------------------------------------------------------------------------------------


def test_a_worker_image_from_a_registry_outside_the_allow_list_is_refused(_drive, kube, prefect_calls) -> None:
    team = _team(kube)
    body = _body(team)
    body["spec"]["worker"] = {"image": "evil.example.com/miner:latest"}
    settings = OperatorSettings(allowed_image_registries=["registry.example.org/eveflow"])
    result = _drive(kube, body, settings)
    assert result.problem is not None and result.problem.reason == INVALID_SPEC
    assert "spec.worker.image" in _message(result) and "registry.example.org/eveflow" in _message(result)
    assert not _live(kube, "deployments", "apps", team) and prefect_calls == []
    # From the allowed registry (or with the default image) it runs.
    body["spec"]["worker"] = {"image": "registry.example.org/eveflow/eveflow:2"}
    assert _drive(kube, body, settings).problem is None


def test_job_variables_cannot_override_what_the_operator_sets() -> None:
    from tests.operator.test_reconcile import ROOT  # noqa: F401  (the examples' root)

    for pool, key, value in (("kubernetes", "namespace", "kube-system"),
                             ("kubernetes", "service_account_name", "admin"),
                             ("kubernetes", "image", "evil.example.com/x"),
                             ("kubernetes", "env_from", [{"secretRef": {"name": "other-teams-db"}}]),
                             ("kubernetes", "command", ["sh", "-c", "curl evil"]),
                             ("docker", "privileged", True),
                             ("docker", "volumes", ["/:/host"]),
                             ("docker", "network_mode", "host"),
                             ("process", "command", "sh -c 'curl evil'")):
        doc = _body("team-a")
        doc["spec"]["workPool"] = {"name": "p", "type": pool, "jobVariables": {key: value}}
        with pytest.raises(ConfigError, match=rf"spec\.workPool.*jobVariables {key}"):
            parse_pipeline({k: v for k, v in doc.items() if k != "status"})


# --- 3. credentials -----------------------------------------------------------------------------------


def _prefect_secret(kube, ns: str, labels: dict[str, str] | None = None) -> None:
    secret = {"metadata": {"name": "team-creds", "labels": labels or {}},
              "data": {"auth-string": base64.b64encode(b"admin:do-not-send").decode()}}
    assert kube.api("POST", f"/api/v1/namespaces/{ns}/secrets", secret)[0] == 201


def _with_auth(body: dict, url: str) -> dict:
    body["spec"]["prefect"] = {"apiUrl": url, "authStringSecretRef": {"name": "team-creds", "key": "auth-string"}}
    return body


def test_a_secret_not_marked_as_prefect_credentials_is_never_sent(_drive, kube, prefect_calls) -> None:
    team = _team(kube)
    _prefect_secret(kube, team)  # some Secret of the namespace (the author may not even read it)
    result = _drive(kube, _with_auth(_body(team), "https://collector.example.com/api"))
    assert result.problem is not None and result.problem.reason == SECRET_NOT_OPTED_IN
    assert "eveflow.dev/prefect-credentials=true" in _message(result) and "do-not-send" not in str(result.status)
    assert prefect_calls == [] and not _live(kube, "deployments", "apps", team)


def test_credentials_are_not_sent_over_plain_http_to_a_host_outside_the_cluster(_drive, kube, prefect_calls) -> None:
    team = _team(kube)
    _prefect_secret(kube, team, {"eveflow.dev/prefect-credentials": "true"})
    result = _drive(kube, _with_auth(_body(team), "http://collector.example.com/api"))
    assert result.problem is not None and result.problem.reason == INVALID_SPEC
    assert "spec.prefect.apiUrl" in _message(result) and "https" in _message(result)
    assert prefect_calls == []
    # An in-cluster Service name over http is fine; so is https anywhere.
    for url in ("http://prefect-server.prefect.svc:4200/api", "https://prefect.example.com/api"):
        ok = _drive(kube, _with_auth(_body(team), url))
        assert ok.problem is None, ok.problem
    assert [c.auth_string for c in prefect_calls] == ["admin:do-not-send"] * 2


# --- 4. takeover -----------------------------------------------------------------------------------------


def test_an_object_named_like_a_child_but_not_ours_is_not_taken_over(_drive, kube, prefect_calls) -> None:
    team = _team(kube)
    theirs = {"metadata": {"name": f"{NAME}-worker", "labels": {"team": "payments"}}}
    assert kube.api("POST", f"/api/v1/namespaces/{team}/serviceaccounts", theirs)[0] == 201
    result = _drive(kube, _body(team))
    assert result.problem is not None and result.problem.reason == NOT_OWNED
    assert f"ServiceAccount {team}/{NAME}-worker" in _message(result)
    (sa,) = _live(kube, "serviceaccounts", None, team)
    assert not sa["metadata"].get("ownerReferences"), "adopted: deleting the pipeline would delete it"
    assert sa["metadata"]["labels"] == {"team": "payments"}
    assert not _live(kube, "deployments", "apps", team) and prefect_calls == []


# --- 9. a forged worker status -----------------------------------------------------------------------------


def _stored_pipeline(kube, ns: str) -> dict:
    kube.kubectl("apply", "-f", str(CRD))
    kube.wait_for(lambda: kube.kubectl("get", "evp", "-A", check=False).returncode == 0, what="CRD served")
    body = {k: v for k, v in _body(ns).items() if k != "metadata"}
    body["metadata"] = {"name": NAME}
    status, cr = kube.api("POST", f"/apis/eveflow.dev/v1alpha1/namespaces/{ns}/evepipelines", body)
    assert status == 201, cr
    conditions = [
        {"type": t, "status": s, "reason": r, "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z",
         "observedGeneration": cr["metadata"]["generation"]}
        for t, s, r in (("Ready", "False", "WorkerUnavailable"), ("PrefectSynced", "True", "Synced"),
                        ("WorkerAvailable", "False", "WorkerUnavailable"))]
    status, cr = kube.api("PATCH", f"/apis/eveflow.dev/v1alpha1/namespaces/{ns}/evepipelines/{NAME}/status",
                          {"status": {"observedGeneration": cr["metadata"]["generation"], "conditions": conditions}},
                          content_type="application/merge-patch+json")
    assert status == 200, cr
    return cr


def test_a_look_alike_deployment_cannot_mark_the_worker_available(_drive, kube) -> None:
    team = _team(kube)
    cr = _stored_pipeline(kube, team)
    owner = {"apiVersion": "eveflow.dev/v1alpha1", "kind": "EvePipeline", "name": NAME, "uid": cr["metadata"]["uid"]}
    labels = {"app.kubernetes.io/managed-by": "eveflow-operator", "app.kubernetes.io/component": "worker",
              "app.kubernetes.io/name": "eveflow-worker", "app.kubernetes.io/instance": NAME,
              "app.kubernetes.io/part-of": "eveflow", "eveflow.dev/pipeline": NAME}
    available = {"replicas": 1, "availableReplicas": 1, "observedGeneration": 1}
    look_alike = {"apiVersion": "apps/v1", "kind": "Deployment",
                  "metadata": {"name": "totally-the-worker", "namespace": team, "generation": 1,
                               "labels": labels, "ownerReferences": [owner]},
                  "status": available}
    written, events = _drive(kube, look_alike, step="observe_worker")
    assert written is None and events == []
    live = kube.kubectl_json("get", "evp", NAME, "-n", team)
    assert get_condition(live["status"], WORKER_AVAILABLE)["status"] == "False"
    # The operator's own worker Deployment (its name and labels) does count.
    real = {**look_alike, "metadata": {**look_alike["metadata"], "name": f"{NAME}-worker"}}
    written, _ = _drive(kube, real, step="observe_worker")
    assert written is not None and get_condition(written["status"], WORKER_AVAILABLE)["status"] == "True"


# --- 3. what a hostile Prefect URL answers ----------------------------------------------------------------


@pytest.fixture
def hostile_prefect():
    """A server at a URL the pipeline's author chose: every answer is a 422 whose detail is 100 KB
    of terminal escapes, fake log lines and a right-to-left override."""
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    detail = "\x1b[2J\x1b[31mERROR\r\n[kopf] all pipelines deleted\u202e" + "A" * 100_000

    class Hostile(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            # The request is read first: closing a socket with its body unread resets the
            # connection, and the client sees no answer at all (PrefectUnavailable), not this one.
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            body = json.dumps({"detail": detail}).encode()
            self.send_response(422)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = do_PATCH = do_DELETE = _answer

        def log_message(self, *_: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Hostile)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/api"
    server.shutdown()


def test_a_hostile_prefect_answer_reaches_status_and_events_only_as_a_short_clean_excerpt(_drive, kube, hostile_prefect) -> None:
    team = _team(kube)
    body = _body(team)
    body["spec"]["prefect"] = {"apiUrl": hostile_prefect}
    result = _drive(kube, body)
    assert result.problem is not None and result.problem.reason == PREFECT_REJECTED
    for text in [_message(result)] + [e.message for e in result.events]:
        assert "ERROR" in text  # an excerpt of what Prefect said is kept ...
        assert len(text) < 600, len(text)  # ... a short one
        assert not any(ord(c) < 32 or c in "\x7f\u202e" for c in text), repr(text[:120])


# --- 5. what the chart lets the operator do, asked of the API server ------------------------------------


def test_the_charts_operator_cannot_run_jobs_or_grant_more_than_the_worker_role(_drive, kube) -> None:
    if not hasattr(kube, "kubeconfig_for"):
        pytest.skip("needs a real API server's RBAC (the control plane fixture)")
    team = _team(kube)
    operator = f"system:serviceaccount:{CHART_NAMESPACE}:{CHART_RELEASE}-eveflow"

    def can(*what: str) -> bool:
        proc = kube.kubectl("auth", "can-i", *what, "-n", team, "--as", operator, check=False)
        return proc.stdout.strip() == "yes"

    for denied in (("create", "jobs.batch"), ("delete", "pods"), ("get", "pods/log"), ("create", "roles"),
                   ("bind", "clusterroles/cluster-admin"), ("escalate", "clusterroles"), ("list", "secrets")):
        assert not can(*denied), f"the chart's operator may {' '.join(denied)}"
    for allowed in (("bind", f"clusterroles/{CHART_RELEASE}-eveflow-worker"), ("create", "rolebindings"),
                    ("get", "secrets")):
        assert can(*allowed), f"the chart's operator may not {' '.join(allowed)}"
