"""The chart lints clean and renders valid Kubernetes manifests for every realistic values file."""

from __future__ import annotations

from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

from eveflow_etl.spec import parse_pipeline

from .conftest import CHART, NAMESPACE, RELEASE, ROOT, Helm, by_kind, one, values_files

pytestmark = pytest.mark.helm

CHART_META = yaml.safe_load((CHART / "Chart.yaml").read_text())
# The oldest version the chart declares (kubeVersion >=1.28) and the newest schemas we have.
KUBE_VERSIONS = ("1.28.0", kubernetes_validate.latest_version())
# The kind preset shipped in the chart is one of the realistic cases.
VALUES_CASES = [None, CHART / "values-kind.yaml", *values_files()]
CASE_IDS = ["defaults", "chart-values-kind", *[p.stem for p in values_files()]]
CRD_PATH = ROOT / "crds" / "evepipelines.eveflow.dev.yaml"
CHART_CRD_PATH = CHART / "crds" / "evepipelines.eveflow.dev.yaml"


def _render(helm: Helm, values: Path | None) -> list[dict]:
    return helm.template(*([values] if values else []))


def _crd_schema() -> dict:
    crd = yaml.safe_load(CHART_CRD_PATH.read_text())
    version = next(v for v in crd["spec"]["versions"] if v["served"] and v["storage"])
    return version["schema"]["openAPIV3Schema"]


def test_chart_declares_kube_version_and_app_version() -> None:
    assert CHART_META["kubeVersion"] == ">=1.28.0-0"
    assert CHART_META["appVersion"] == "0.1.0"
    assert CHART_META["apiVersion"] == "v2"


def test_lint_strict_is_clean(helm: Helm) -> None:
    for values in VALUES_CASES:
        args = ["lint", "--strict", str(CHART)] + (["-f", str(values)] if values else [])
        result = helm.run(*args)
        assert "0 chart(s) failed" in result.stdout, result.stdout
        assert "[WARNING]" not in result.stdout and "[ERROR]" not in result.stdout, result.stdout


@pytest.mark.parametrize("values", VALUES_CASES, ids=CASE_IDS)
def test_manifests_pass_kubernetes_schema_validation(helm: Helm, values: Path | None) -> None:
    manifests = _render(helm, values)
    assert manifests
    crd_schema = _crd_schema()
    for manifest in manifests:
        kind, name = manifest["kind"], manifest["metadata"]["name"]
        if kind == "EvePipeline":
            # No Kubernetes schema for our own kind: the CRD's schema and the model judge it.
            jsonschema.validate(manifest, crd_schema)
            parse_pipeline(manifest, origin=f"EvePipeline {name}")
        elif kind == "ServiceMonitor":
            _check_service_monitor(manifest, manifests)
        elif kind == "PodMonitor":
            _check_pod_monitor(manifest)
        else:
            for version in KUBE_VERSIONS:
                try:
                    kubernetes_validate.validate(manifest, version, strict=True)
                except kubernetes_validate.ValidationError as exc:
                    pytest.fail(f"{kind}/{name} is invalid for Kubernetes {version}: {exc.message} at {list(exc.path)}")


def _check_service_monitor(monitor: dict, manifests: list[dict]) -> None:
    """No ServiceMonitor schema offline: check that it really selects the metrics Service and port."""
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    selector = monitor["spec"]["selector"]["matchLabels"]
    services = [
        s for s in by_kind(manifests, "Service")
        if selector.items() <= s["metadata"]["labels"].items()
    ]
    assert [s["metadata"]["name"] for s in services] == [f"{RELEASE}-metrics"]
    port_names = {p["name"] for p in services[0]["spec"]["ports"]}
    assert {e["port"] for e in monitor["spec"]["endpoints"]} <= port_names
    assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"


def _check_pod_monitor(monitor: dict) -> None:
    """The PodMonitor selects the worker pods the operator builds, on their metrics port."""
    from eveflow_etl.spec import parse_pipeline as parse
    from eveflow_operator.settings import OperatorSettings
    from eveflow_operator.worker_deployment import build_worker_deployment

    pipeline = parse(yaml.safe_load((ROOT / "examples" / "pipeline.yaml").read_text()))
    worker = build_worker_deployment(pipeline, OperatorSettings(), "eve-data")
    pod_labels = worker["spec"]["template"]["metadata"]["labels"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    ports = {p["name"] for c in worker["spec"]["template"]["spec"]["containers"] for p in c["ports"]}
    assert {e["port"] for e in monitor["spec"]["podMetricsEndpoints"]} <= ports
    relabel = monitor["spec"]["podMetricsEndpoints"][0]["relabelings"][0]
    assert relabel["sourceLabels"] == ["__meta_kubernetes_pod_label_eveflow_dev_pipeline"]
    assert "eveflow.dev/pipeline" in pod_labels


@pytest.mark.parametrize("values", VALUES_CASES, ids=CASE_IDS)
def test_every_object_is_labelled(helm: Helm, values: Path | None) -> None:
    for manifest in _render(helm, values):
        if manifest["kind"] == "CustomResourceDefinition":
            continue  # crds/ is plain YAML, not templated
        labels = manifest["metadata"].get("labels", {})
        for key in ("app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/version",
                    "app.kubernetes.io/managed-by", "app.kubernetes.io/component", "helm.sh/chart"):
            assert key in labels, f"{manifest['kind']}/{manifest['metadata']['name']} lacks label {key}"
        assert labels["app.kubernetes.io/instance"] == RELEASE


@pytest.mark.parametrize("values", VALUES_CASES, ids=CASE_IDS)
def test_pods_meet_the_restricted_pod_security_standard(helm: Helm, values: Path | None) -> None:
    for deployment in by_kind(_render(helm, values), "Deployment"):
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
        for container in pod["containers"]:
            sc = container["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False
            assert sc["readOnlyRootFilesystem"] is True
            assert sc["capabilities"]["drop"] == ["ALL"]
            assert "add" not in sc["capabilities"]
            assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]
            assert container["livenessProbe"]["httpGet"] and container["readinessProbe"]["httpGet"]
            # A read-only root needs a writable /tmp.
            assert "/tmp" in {m["mountPath"] for m in container["volumeMounts"]}


def test_operator_deployment_defaults(helm: Helm) -> None:
    manifests = _render(helm, None)
    deployment = one(manifests, "Deployment", RELEASE)
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == f"eveflow:{CHART_META['appVersion']}", "the tag defaults to appVersion"
    assert deployment["spec"]["strategy"]["type"] == "Recreate"
    assert deployment["spec"]["replicas"] == 1
    assert pod["serviceAccountName"] == RELEASE
    assert container["ports"] == [{"name": "metrics", "containerPort": 9090, "protocol": "TCP"},
                                  {"name": "health", "containerPort": 8081, "protocol": "TCP"}]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    # Nothing optional by default.
    kinds = {m["kind"] for m in manifests}
    assert kinds == {"CustomResourceDefinition", "ServiceAccount", "ClusterRole", "ClusterRoleBinding",
                     "Service", "Deployment"}
    assert not any("Secret" == m["kind"] for m in manifests)


def test_image_digest_wins_over_tag(helm: Helm) -> None:
    manifests = _render(helm, ROOT / "tests/chart/values/gke.yaml")
    (container,) = one(manifests, "Deployment", RELEASE)["spec"]["template"]["spec"]["containers"]
    assert container["image"].startswith("registry.example/my-project/eveflow/eveflow@sha256:")
    sa = one(manifests, "ServiceAccount")
    assert "iam.gke.io/gcp-service-account" in sa["metadata"]["annotations"]


def _env(container: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container["env"]}


def test_prefect_credentials_only_come_from_secrets(helm: Helm) -> None:
    for values in VALUES_CASES:
        manifests = _render(helm, values)
        for deployment in by_kind(manifests, "Deployment"):
            for container in deployment["spec"]["template"]["spec"]["containers"]:
                for name, entry in _env(container).items():
                    if any(word in name for word in ("KEY", "AUTH", "PASSWORD", "TOKEN")):
                        assert "value" not in entry and "secretKeyRef" in entry["valueFrom"], name
    # existingSecret: referenced, never created.
    manifests = helm.template(ROOT / "tests/chart/values/existing-secret.yaml",
                              extra=("--set", "prefectServer.enabled=true"))
    assert not by_kind(manifests, "Secret")
    server = one(manifests, "Deployment", f"{RELEASE}-prefect-server")
    ref = _env(server["spec"]["template"]["spec"]["containers"][0])["PREFECT_SERVER_API_AUTH_STRING"]
    assert ref["valueFrom"]["secretKeyRef"] == {"name": "prefect-cloud", "key": "auth-string"}  # required
    # Inline values: the chart creates the Secret, and both the operator and the server read it.
    manifests = _render(helm, ROOT / "tests/chart/values/bundled-prefect.yaml")
    secret = one(manifests, "Secret")
    assert secret["metadata"]["name"] == f"{RELEASE}-prefect" and set(secret["data"]) == {"auth-string"}
    server = one(manifests, "Deployment", f"{RELEASE}-prefect-server")
    server_env = _env(server["spec"]["template"]["spec"]["containers"][0])
    assert server_env["PREFECT_SERVER_API_AUTH_STRING"]["valueFrom"]["secretKeyRef"]["name"] == f"{RELEASE}-prefect"


def test_bundled_prefect_server(helm: Helm) -> None:
    manifests = _render(helm, ROOT / "tests/chart/values/bundled-prefect.yaml")
    name = f"{RELEASE}-prefect-server"
    pvc = one(manifests, "PersistentVolumeClaim", name)
    assert pvc["spec"]["resources"]["requests"]["storage"] == "2Gi"
    service = one(manifests, "Service", name)
    assert service["spec"]["type"] == "NodePort" and service["spec"]["ports"][0]["nodePort"] == 30420
    server = one(manifests, "Deployment", name)
    pod = server["spec"]["template"]["spec"]
    assert pod["volumes"][0]["persistentVolumeClaim"]["claimName"] == name
    assert pod["containers"][0]["image"] == "eveflow:0.1.0"  # the same image ships prefect
    # The operator defaults to the bundled server.
    env = _env(one(manifests, "Deployment", RELEASE)["spec"]["template"]["spec"]["containers"][0])
    api_url = next(e["value"] for n, e in env.items() if n.endswith("PREFECT_API_URL"))
    assert api_url == f"http://{name}.{NAMESPACE}.svc:4200/api"
    # kind-config.yaml maps exactly this node port.
    kind_config = yaml.safe_load((ROOT / "kind-config.yaml").read_text())
    mapped = {m["containerPort"] for node in kind_config["nodes"] for m in node.get("extraPortMappings", [])}
    assert 30420 in mapped


def test_watch_namespaces_get_namespaced_roles(helm: Helm) -> None:
    manifests = _render(helm, ROOT / "tests/chart/values/watch-namespaces.yaml")
    roles = by_kind(manifests, "Role")
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["etl-dev", "etl-prod"]
    assert sorted(b["metadata"]["namespace"] for b in by_kind(manifests, "RoleBinding")) == ["etl-dev", "etl-prod"]
    cluster_role = one(manifests, "ClusterRole", RELEASE)
    cluster_resources = {r for rule in cluster_role["rules"] for r in rule["resources"]}
    # kopf's CRD discovery, and a jobs namespace's labels (a cluster admin's consent, issue 12).
    assert cluster_resources == {"customresourcedefinitions", "namespaces"}
    assert {v for rule in cluster_role["rules"] if "namespaces" in rule["resources"] for v in rule["verbs"]} == {"get"}
    for role in roles:
        assert any("evepipelines" in rule["resources"] for rule in role["rules"])


def test_monitoring(helm: Helm) -> None:
    manifests = _render(helm, ROOT / "tests/chart/values/monitoring.yaml")
    monitor = one(manifests, "ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    dashboard = one(manifests, "ConfigMap", f"{RELEASE}-dashboard")
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert dashboard["metadata"]["annotations"] == {"grafana_folder": "eveflow"}


def test_example_pipeline(helm: Helm) -> None:
    manifests = _render(helm, ROOT / "tests/chart/values/example-pipeline.yaml")
    pipeline = one(manifests, "EvePipeline", "order-books")
    assert pipeline["metadata"]["namespace"] == "eve-data"
    assert parse_pipeline(pipeline).spec.work_pool.type == "kubernetes"


def test_chart_crd_is_identical_to_the_repository_crd() -> None:
    assert CRD_PATH.exists() and CHART_CRD_PATH.exists()
    assert CHART_CRD_PATH.read_bytes() == CRD_PATH.read_bytes(), (
        "charts/eveflow/crds/ differs from crds/: regenerate both with `eveflow crd`"
    )


def test_kind_quick_path_is_under_ten_commands() -> None:
    doc = (ROOT / "docs" / "kubernetes.md").read_text()
    block = doc.split("<!-- quick-path:begin", 1)[1].split("<!-- quick-path:end -->", 1)[0]
    assert len(block.strip().splitlines()) <= 11, "the README block should stay about ten lines"
    script = block.split("```sh", 1)[1].split("```", 1)[0]
    commands = [c.strip() for line in script.strip().splitlines() for c in line.split("#")[0].split("&&")]
    commands = [c for c in commands if c]
    assert len(commands) < 10, commands
    for needed in ("kind create cluster --config kind-config.yaml", "docker build", "kind load docker-image",
                   "helm install", "kubectl create secret", "kubectl apply -f examples/pipeline.yaml",
                   "kubectl get evp -w"):
        assert any(c.startswith(needed) for c in commands), needed
    for path in ("kind-config.yaml", "charts/eveflow/values-kind.yaml", "examples/pipeline.yaml",
                 "charts/eveflow/argocd/health.lua", "charts/eveflow/argocd/application.yaml"):
        assert (ROOT / path).exists(), path
    # The image the walkthrough builds is the chart's default image.
    assert f"eveflow:{CHART_META['appVersion']}" in script
    kind_config = yaml.safe_load((ROOT / "kind-config.yaml").read_text())
    assert kind_config["kind"] == "Cluster" and kind_config["apiVersion"] == "kind.x-k8s.io/v1alpha4"
    assert f"--name {kind_config['name']}" in script
