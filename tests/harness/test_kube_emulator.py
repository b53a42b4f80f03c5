"""The Kubernetes API emulator, driven by the real clients the project uses: kubectl, the
kubernetes Python client, a `kopf run` subprocess and helm."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import threading
import time
import urllib.request
from pathlib import Path

import pytest
import yaml
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes import watch as k8s_watch
from kubernetes.client.rest import ApiException

from tests.harness.kube_emulator import EmulatorThread, cel, patching, selectors

pytestmark = pytest.mark.k8s

CRD = """
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: widgets.test.eveflow.dev}
spec:
  group: test.eveflow.dev
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget, shortNames: [wdg], categories: [tests]}
  versions:
  - name: v1
    served: true
    storage: true
    subresources: {status: {}}
    additionalPrinterColumns:
    - {name: Ready, type: string, jsonPath: '.status.conditions[?(@.type=="Ready")].status'}
    - {name: Size, type: integer, jsonPath: .spec.size}
    - {name: Age, type: date, jsonPath: .metadata.creationTimestamp}
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            required: [size]
            x-kubernetes-validations:
            - {rule: "self.size != 7", message: "7 is not a size"}
            - {rule: "self.color == oldSelf.color", message: "color is immutable"}
            properties:
              size: {type: integer, minimum: 1, maximum: 10}
              color: {type: string, enum: [red, blue], default: red}
          status:
            type: object
            x-kubernetes-preserve-unknown-fields: true
"""

DEPLOYMENT = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, labels: {app: web}}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: app
        image: nginx:IMAGE
        ports: [{containerPort: 80}]
        env: [{name: A, value: "1"}]
"""


@pytest.fixture(scope="module")
def kube(kube_emulator):
    """These tests are the emulator's own: they run on it, not on the real control plane."""
    return kube_emulator


@pytest.fixture(scope="module")
def widgets(kube):
    """The test CRD, installed once for this module."""
    kube.kubectl("apply", "-f", "-", input=CRD)
    kube.kubectl("wait", "--for=condition=Established", "crd/widgets.test.eveflow.dev")
    return "widgets.test.eveflow.dev"


@pytest.fixture(scope="module")
def api_client(kube):
    return k8s_config.new_client_from_config(config_file=str(kube.kubeconfig))


def test_kubectl_deployment_apply_update_delete(kube, kube_namespace):
    ns = kube_namespace
    kube.kubectl("-n", ns, "apply", "-f", "-", input=DEPLOYMENT.replace("IMAGE", "1"))
    kube.kubectl("-n", ns, "rollout", "status", "deployment/web", "--timeout=10s")
    dep = kube.kubectl_json("-n", ns, "get", "deployment", "web")
    assert dep["status"]["availableReplicas"] == 2
    assert dep["status"]["observedGeneration"] == dep["metadata"]["generation"] == 1

    # A second apply sends a strategic merge patch: the container list merges by name.
    kube.kubectl("-n", ns, "apply", "-f", "-", input=DEPLOYMENT.replace("IMAGE", "2"))
    dep = kube.kubectl_json("-n", ns, "get", "deployment", "web")
    [container] = dep["spec"]["template"]["spec"]["containers"]
    assert container["image"] == "nginx:2" and container["env"] == [{"name": "A", "value": "1"}]
    assert dep["metadata"]["generation"] == 2
    kube.wait_for(lambda: kube.kubectl_json("-n", ns, "get", "deployment", "web")["status"]
                  .get("observedGeneration") == 2, what="observedGeneration 2")

    kube.kubectl("-n", ns, "scale", "deployment/web", "--replicas=3")
    assert "3/3" in kube.wait_for(
        lambda: (out := kube.kubectl("-n", ns, "get", "deploy", "web").stdout) and
        "3/3" in out and out, what="3/3 ready")
    kube.kubectl("-n", ns, "delete", "deployment", "web", "--timeout=10s")
    assert kube.objects("deployments", namespace=ns) == []


def test_kubectl_protobuf_bodies(kube, kube_namespace):
    """kubectl create sends protobuf for these kinds and does not fall back to JSON."""
    ns = kube_namespace
    kube.kubectl("-n", ns, "create", "secret", "generic", "creds", "--from-literal=token=s3cr3t")
    kube.kubectl("-n", ns, "create", "configmap", "cfg", "--from-literal=a=b")
    kube.kubectl("-n", ns, "create", "serviceaccount", "robot")
    secret = kube.kubectl_json("-n", ns, "get", "secret", "creds")
    assert secret["data"] == {"token": "czNjcjN0"} and secret["type"] == "Opaque"
    assert kube.kubectl_json("-n", ns, "get", "cm", "cfg")["data"] == {"a": "b"}
    assert kube.kubectl_json("-n", ns, "get", "sa", "robot")["metadata"]["uid"]
    kube.kubectl("delete", "secret", "creds", "-n", ns)  # protobuf DeleteOptions
    assert kube.objects("secrets", namespace=ns) == []


def test_crd_served_with_printer_columns_and_schema(kube, kube_namespace, widgets):
    ns = kube_namespace
    kube.kubectl("-n", ns, "apply", "-f", "-", input=textwrap.dedent("""
        apiVersion: test.eveflow.dev/v1
        kind: Widget
        metadata: {name: w1}
        spec: {size: 3}
        status: {ignored: true}
        """))
    w = kube.kubectl_json("-n", ns, "get", "wdg", "w1")
    assert w["spec"] == {"size": 3, "color": "red"}  # schema default applied
    assert "status" not in w  # status subresource: main writes cannot set status
    kube.kubectl("-n", ns, "patch", "widget", "w1", "--subresource=status", "--type=merge",
                 "-p", '{"status": {"conditions": [{"type": "Ready", "status": "True"}]}}')
    table = kube.kubectl("-n", ns, "get", "wdg").stdout.splitlines()
    assert table[0].split() == ["NAME", "READY", "SIZE", "AGE"]
    assert table[1].split()[:3] == ["w1", "True", "3"]
    assert "widget.test.eveflow.dev/w1" in kube.kubectl("-n", ns, "get", "tests", "-o",
                                                        "name").stdout

    bad = kube.kubectl("-n", ns, "apply", "-f", "-", check=False, input=textwrap.dedent("""
        apiVersion: test.eveflow.dev/v1
        kind: Widget
        metadata: {name: w2}
        spec: {size: 30, color: green}
        """))
    assert bad.returncode != 0
    assert "spec.size: Invalid value: 30: spec.size in body should be less than or equal to " \
           "10" in bad.stderr
    assert 'spec.color: Unsupported value: "green"' in bad.stderr
    unknown = kube.kubectl("-n", ns, "apply", "-f", "-", check=False, input=textwrap.dedent("""
        apiVersion: test.eveflow.dev/v1
        kind: Widget
        metadata: {name: w3}
        spec: {size: 1, colour: red}
        """))
    assert 'unknown field "spec.colour"' in unknown.stderr  # kubectl asks fieldValidation=Strict

    if cel.celpy is None:
        return
    seven = kube.kubectl("-n", ns, "patch", "wdg", "w1", "--type=merge",
                         "-p", '{"spec": {"size": 7}}', check=False)
    assert 'spec: Invalid value: "object": 7 is not a size' in seven.stderr
    recolor = kube.kubectl("-n", ns, "patch", "wdg", "w1", "--type=merge",
                           "-p", '{"spec": {"color": "blue"}}', check=False)
    assert "color is immutable" in recolor.stderr


def test_python_client_status_codes(kube, kube_namespace, widgets, api_client):
    ns = kube_namespace
    custom = k8s.CustomObjectsApi(api_client)
    created = custom.create_namespaced_custom_object(
        "test.eveflow.dev", "v1", ns, "widgets",
        {"apiVersion": "test.eveflow.dev/v1", "kind": "Widget",
         "metadata": {"generateName": "w-"}, "spec": {"size": 2}})
    assert created["metadata"]["name"].startswith("w-")  # the client needs 201 to decode this
    name, rv = created["metadata"]["name"], created["metadata"]["resourceVersion"]
    with pytest.raises(ApiException) as e:
        custom.create_namespaced_custom_object("test.eveflow.dev", "v1", ns, "widgets", created)
    assert e.value.status == 409 and json.loads(e.value.body)["reason"] == "AlreadyExists"

    # kopf's finalizer patches start with a `test` of the resourceVersion: 422 when stale.
    same = custom.patch_namespaced_custom_object(
        "test.eveflow.dev", "v1", ns, "widgets", name,
        [{"op": "test", "path": "/metadata/resourceVersion", "value": rv},
         {"op": "add", "path": "/metadata/finalizers", "value": ["x/y"]}],
        _content_type="application/json-patch+json")  # v37 defaults to merge patch
    assert same["metadata"]["finalizers"] == ["x/y"] and same["metadata"]["generation"] == 1
    with pytest.raises(ApiException) as e:
        custom.patch_namespaced_custom_object(
            "test.eveflow.dev", "v1", ns, "widgets", name,
            [{"op": "test", "path": "/metadata/resourceVersion", "value": rv},
             {"op": "remove", "path": "/metadata/finalizers"}],
            _content_type="application/json-patch+json")
    assert e.value.status == 422
    created["spec"]["size"] = 4
    with pytest.raises(ApiException) as e:  # PUT with a stale resourceVersion
        custom.replace_namespaced_custom_object("test.eveflow.dev", "v1", ns, "widgets", name,
                                                created)
    assert e.value.status == 409 and json.loads(e.value.body)["reason"] == "Conflict"
    merged = custom.patch_namespaced_custom_object("test.eveflow.dev", "v1", ns, "widgets", name,
                                                   {"spec": {"size": 4}})
    assert merged["metadata"]["generation"] == 2
    noop = custom.patch_namespaced_custom_object("test.eveflow.dev", "v1", ns, "widgets", name,
                                                 {"spec": {"size": 4}})
    assert noop["metadata"]["resourceVersion"] == merged["metadata"]["resourceVersion"]
    status = custom.patch_namespaced_custom_object_status(
        "test.eveflow.dev", "v1", ns, "widgets", name, {"status": {"phase": "Done"}})
    assert status["metadata"]["generation"] == 2 and status["status"] == {"phase": "Done"}


def test_watch_replay_initial_events_and_selectors(kube, kube_namespace, api_client):
    ns = kube_namespace
    core = k8s.CoreV1Api(api_client)
    cm = core.create_namespaced_config_map(ns, {"metadata": {"name": "a", "labels": {"k": "v"}},
                                                "data": {"n": "0"}})
    rv = cm.metadata.resource_version
    core.create_namespaced_config_map(ns, {"metadata": {"name": "other"}})
    core.patch_namespaced_config_map("a", ns, {"data": {"n": "1"}})
    core.patch_namespaced_config_map("a", ns, {"metadata": {"labels": {"k": "w"}}})
    core.delete_namespaced_config_map("other", ns)

    stream = k8s_watch.Watch().stream(core.list_namespaced_config_map, ns, resource_version=rv,
                                      timeout_seconds=1)
    seen = [(e["type"], e["object"].metadata.name) for e in stream]
    assert seen == [("ADDED", "other"), ("MODIFIED", "a"), ("MODIFIED", "a"), ("DELETED", "other")]

    # With a label selector, an object whose labels stop matching leaves as DELETED.
    stream = k8s_watch.Watch().stream(core.list_namespaced_config_map, ns, resource_version=rv,
                                      label_selector="k=v", timeout_seconds=1)
    assert [(e["type"], e["object"].metadata.name) for e in stream] == \
        [("MODIFIED", "a"), ("DELETED", "a")]

    url = (f"{kube.url}/api/v1/namespaces/{ns}/configmaps?watch=true&sendInitialEvents=true"
           "&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true&timeoutSeconds=1")
    started = time.monotonic()
    with urllib.request.urlopen(url) as resp:
        assert resp.headers["Content-Type"] == "application/json"
        events = [json.loads(line) for line in resp]
    assert time.monotonic() - started < 3  # timeoutSeconds honoured
    assert [e["type"] for e in events] == ["ADDED", "BOOKMARK"]
    assert events[-1]["object"]["metadata"]["annotations"] == {"k8s.io/initial-events-end": "true"}

    listed = kube.api("GET", f"/api/v1/namespaces/{ns}/configmaps?labelSelector=k%20in%20(w,x)")[1]
    assert listed["kind"] == "ConfigMapList" and int(listed["metadata"]["resourceVersion"]) > 0
    assert [i["metadata"]["name"] for i in listed["items"]] == ["a"]
    by_field = kube.api("GET", f"/api/v1/namespaces/{ns}/configmaps?fieldSelector="
                        "metadata.name%3Da")[1]
    assert [i["metadata"]["name"] for i in by_field["items"]] == ["a"]


def test_finalizers_hold_deletion_until_removed(kube, kube_namespace):
    ns = kube_namespace
    path = f"/api/v1/namespaces/{ns}/configmaps"
    kube.api("POST", path, {"metadata": {"name": "held", "finalizers": ["test/hold"]}})
    status, body = kube.api("DELETE", f"{path}/held")
    assert status == 200 and body["metadata"]["deletionTimestamp"]
    status, body = kube.api("GET", f"{path}/held")
    assert status == 200 and body["metadata"]["finalizers"] == ["test/hold"]
    status, body = kube.api("PATCH", f"{path}/held", {"metadata": {"finalizers": ["new/one"]}},
                            "application/merge-patch+json")
    assert status == 422  # no new finalizers once deleting
    kube.api("PATCH", f"{path}/held", [{"op": "remove", "path": "/metadata/finalizers"}],
             "application/json-patch+json")
    assert kube.api("GET", f"{path}/held")[0] == 404


def test_owner_garbage_collection(kube, kube_namespace):
    ns = kube_namespace
    path = f"/api/v1/namespaces/{ns}/configmaps"
    owner = kube.api("POST", path, {"metadata": {"name": "owner"}})[1]
    ref = {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner",
           "uid": owner["metadata"]["uid"], "controller": True, "blockOwnerDeletion": True}
    kube.api("POST", path, {"metadata": {"name": "child", "ownerReferences": [ref]}})
    kube.api("POST", f"/api/v1/namespaces/{ns}/secrets",
             {"metadata": {"name": "child-secret", "ownerReferences": [ref]}})
    kube.kubectl("-n", ns, "delete", "configmap", "owner")
    kube.wait_for(lambda: not kube.objects("configmaps", namespace=ns)
                  and not kube.objects("secrets", namespace=ns), timeout=3, what="GC")

    owner = kube.api("POST", path, {"metadata": {"name": "owner2"}})[1]
    ref["uid"], ref["name"] = owner["metadata"]["uid"], "owner2"
    kube.api("POST", path, {"metadata": {"name": "orphan", "ownerReferences": [ref]}})
    kube.kubectl("-n", ns, "delete", "configmap", "owner2", "--cascade=orphan")
    time.sleep(0.1)
    [left] = kube.objects("configmaps", namespace=ns)
    assert left["metadata"]["name"] == "orphan" and "ownerReferences" not in left["metadata"]


OPERATOR = '''
import kopf

@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_):
    settings.watching.server_timeout = 10

@kopf.on.create("test.eveflow.dev", "v1", "widgets")
@kopf.on.update("test.eveflow.dev", "v1", "widgets")
@kopf.on.resume("test.eveflow.dev", "v1", "widgets")
def reconcile(spec, patch, body, **_):
    patch.status["conditions"] = [{"type": "Ready", "status": "True"}]
    patch.status["seenSize"] = spec["size"]
    kopf.info(body, reason="Reconciled", message=f"size {spec['size']}")

@kopf.on.delete("test.eveflow.dev", "v1", "widgets")
def cleanup(**_):
    pass
'''


def test_kopf_operator_reconciles(kube, kube_namespace, widgets, tmp_path):
    ns = kube_namespace
    (tmp_path / "operator.py").write_text(OPERATOR)
    kube.clear_requests()
    since = time.time()
    proc = subprocess.Popen([str(Path(sys.executable).parent / "kopf"), "run", "--standalone",
                             "-n", ns, str(tmp_path / "operator.py")], env=kube.env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        kube.kubectl("-n", ns, "apply", "-f", "-", input=textwrap.dedent("""
            apiVersion: test.eveflow.dev/v1
            kind: Widget
            metadata: {name: op}
            spec: {size: 2}
            """))

        def seen(size):  # polled over plain HTTP: kubectl processes would slow kopf's start
            path = f"/apis/test.eveflow.dev/v1/namespaces/{ns}/widgets/op"
            return lambda: (kube.api("GET", path)[1].get("status") or {}).get("seenSize") == size
        # Generous: kopf's own start (imports) takes seconds on a loaded 2-core machine.
        kube.wait_for(seen(2), timeout=60, interval=0.1, what="kopf to reconcile")
        assert "True" in kube.kubectl("-n", ns, "get", "wdg", "op").stdout
        kube.kubectl("-n", ns, "patch", "wdg", "op", "--type=merge", "-p", '{"spec":{"size":5}}')
        kube.wait_for(seen(5), timeout=10, interval=0.1, what="kopf to see the update")
        kube.kubectl("-n", ns, "delete", "wdg", "op", "--timeout=10s")  # waits for the finalizer
        assert kube.objects("widgets", namespace=ns) == []
        events = kube.objects("events", group="", namespace=ns)
        assert {e["message"] for e in events} >= {"size 2", "size 5"}

        used = kube.used_permissions(since=since, user_agent="kopf")
        assert {("test.eveflow.dev", "widgets", "list"), ("test.eveflow.dev", "widgets", "watch"),
                ("test.eveflow.dev", "widgets", "patch"),
                ("test.eveflow.dev", "widgets/status", "patch"), ("", "events", "create")} <= used
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            out, _ = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
    assert "Traceback" not in out, out


def test_helm_install_wait_and_uninstall(kube, kube_namespace, tmp_path):
    ns = kube_namespace
    chart = tmp_path / "tiny"
    (chart / "templates").mkdir(parents=True)
    (chart / "Chart.yaml").write_text("apiVersion: v2\nname: tiny\nversion: 0.1.0\n"
                                      "appVersion: '1.0'\n")
    (chart / "templates" / "all.yaml").write_text(textwrap.dedent("""
        apiVersion: v1
        kind: ServiceAccount
        metadata: {name: {{ .Release.Name }}}
        ---
        apiVersion: v1
        kind: Service
        metadata: {name: {{ .Release.Name }}}
        spec:
          selector: {app: tiny}
          ports: [{port: 80, targetPort: 8080}]
        ---
        apiVersion: apps/v1
        kind: Deployment
        metadata: {name: {{ .Release.Name }}}
        spec:
          replicas: 2
          selector: {matchLabels: {app: tiny}}
          template:
            metadata: {labels: {app: tiny}}
            spec:
              serviceAccountName: {{ .Release.Name }}
              containers: [{name: app, image: "nginx:{{ .Chart.AppVersion }}"}]
        """))
    kube.helm("install", "tiny", str(chart), "-n", ns, "--wait", "--timeout", "20s")
    assert "deployed" in kube.helm("status", "tiny", "-n", ns).stdout
    [dep] = kube.objects("deployments", namespace=ns)
    assert dep["status"]["availableReplicas"] == 2
    assert any(s["type"] == "helm.sh/release.v1" for s in kube.objects("secrets", namespace=ns))
    kube.helm("upgrade", "tiny", str(chart), "-n", ns, "--wait", "--set", "x=1")
    kube.helm("uninstall", "tiny", "-n", ns, "--wait")
    assert kube.objects(namespace=ns) == []


def test_standalone_process_and_prompt_shutdown(tmp_path):
    kubeconfig = tmp_path / "kc.yaml"
    proc = subprocess.Popen([sys.executable, "-m", "tests.harness.kube_emulator", "--port", "0",
                             "--kubeconfig-out", str(kubeconfig)],
                            cwd=Path(__file__).resolve().parents[2], stdout=subprocess.PIPE,
                            text=True)
    try:
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        assert yaml.safe_load(kubeconfig.read_text())["clusters"][0]["cluster"]["server"] == url
        with urllib.request.urlopen(url + "/version") as resp:
            assert json.load(resp)["minor"] == "35"
    finally:
        proc.terminate()
        assert proc.wait(5) == 0

    # In-process: an open watch must not hold up shutdown.
    emu = EmulatorThread()
    url = emu.start()
    opened = threading.Event()

    def watch():
        with urllib.request.urlopen(url + "/api/v1/namespaces?watch=true") as resp:
            opened.set()
            for _ in resp:
                pass
    t = threading.Thread(target=watch, daemon=True)
    t.start()
    assert opened.wait(5)
    started = time.monotonic()
    emu.stop()
    t.join(5)
    assert not t.is_alive() and time.monotonic() - started < 3


def test_patch_selector_and_jsonpath_units():
    old = {"spec": {"containers": [{"name": "a", "image": "1", "env": [{"name": "X"}]},
                                   {"name": "b", "image": "1"}], "finalizers": ["f1"]}}
    patch = {"spec": {"$setElementOrder/containers": [{"name": "b"}, {"name": "a"}],
                      "containers": [{"name": "a", "image": "2"}, {"name": "b", "$patch": "delete"}],
                      "finalizers": ["f2"]}}
    assert patching.strategic_merge(old, patch)["spec"] == {
        "containers": [{"name": "a", "image": "2", "env": [{"name": "X"}]}],
        "finalizers": ["f1", "f2"]}
    assert patching.merge_patch({"a": {"b": 1, "c": 2}}, {"a": {"b": None}}) == {"a": {"c": 2}}
    applied = patching.apply_patch({"metadata": {"labels": {"x": "1", "y": "2"}}},
                                   {"metadata": {"labels": {"x": "1"}}},
                                   previous={"metadata": {"labels": {"x": "1", "y": "2"}}})
    assert applied == {"metadata": {"labels": {"x": "1"}}}
    match = selectors.parse_labels("app=web,tier in (a, b),!canary")
    assert match({"app": "web", "tier": "b"}) and not match({"app": "web", "tier": "b",
                                                            "canary": "1"})
    obj = {"status": {"conditions": [{"type": "Synced", "status": "False"},
                                     {"type": "Ready", "status": "True"}]}}
    assert selectors.jsonpath(obj, '.status.conditions[?(@.type=="Ready")].status') == ["True"]
    assert selectors.jsonpath(obj, ".status.conditions[*].type") == ["Synced", "Ready"]


def test_request_record_names_rbac_verbs(kube, kube_namespace):
    ns = kube_namespace
    kube.clear_requests()
    kube.kubectl("-n", ns, "get", "configmaps")
    kube.kubectl("-n", ns, "create", "configmap", "r", "--from-literal=a=b")
    kube.kubectl("-n", ns, "delete", "configmaps", "--all")
    recs = kube.requests(user_agent="kubectl", resource="configmaps")
    assert [r["verb"] for r in recs][:2] == ["list", "create"]
    assert recs[0]["namespace"] == ns and recs[0]["group"] == "" and recs[0]["status"] == 200
    assert {r["verb"] for r in recs} >= {"list", "create", "delete"}
