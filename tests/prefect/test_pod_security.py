"""Issue 12, item 7: the worker pod and every flow-run Job pod meet the "restricted" Pod Security
Standard (non-root, read-only root filesystem, RuntimeDefault seccomp, no privilege escalation,
all capabilities dropped) and carry requests and limits. A pipeline author's flow run must not get
a writable root filesystem or root to attack the node with. The Job is rendered by Prefect's own
templating from the pool template eveflow creates, no server needed."""

from __future__ import annotations

from typing import Any

from prefect.utilities.templating import apply_values

from eveflow_etl.orchestration.deployments import flow_run_job_variables
from eveflow_etl.orchestration.pools import new_pool_template
from eveflow_etl.spec import load_pipeline, parse_pipeline
from eveflow_operator.settings import OperatorSettings
from eveflow_operator.worker_deployment import build_worker_deployment
from tests.spec.test_spec import ROOT

KUBERNETES = ROOT / "examples" / "pipeline-kubernetes.yaml"


def restricted_violations(pod: dict[str, Any]) -> list[str]:
    """What in ``pod`` (a PodSpec) the restricted Pod Security Standard forbids or misses."""
    problems = []
    pod_sc = pod.get("securityContext") or {}
    for container in pod["containers"]:
        sc = container.get("securityContext") or {}
        name = container["name"]
        if not (sc.get("runAsNonRoot") or pod_sc.get("runAsNonRoot")):
            problems.append(f"{name}: runAsNonRoot")
        if ((sc.get("seccompProfile") or pod_sc.get("seccompProfile") or {}).get("type")) != "RuntimeDefault":
            problems.append(f"{name}: seccompProfile")
        if sc.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{name}: allowPrivilegeEscalation")
        if (sc.get("capabilities") or {}).get("drop") != ["ALL"]:
            problems.append(f"{name}: capabilities")
        if sc.get("readOnlyRootFilesystem") is not True:
            problems.append(f"{name}: readOnlyRootFilesystem")
        if sc.get("privileged"):
            problems.append(f"{name}: privileged")
        resources = container.get("resources") or {}
        if not (resources.get("requests") or {}).get("memory") or not (resources.get("limits") or {}).get("memory"):
            problems.append(f"{name}: resources")
    if any("hostPath" in v for v in pod.get("volumes") or []):
        problems.append("hostPath volume")
    return problems


def _job_pod_template(pipeline, job_variables: dict | None = None) -> dict:
    template = new_pool_template(pipeline)
    defaults = {k: v.get("default") for k, v in template["variables"]["properties"].items()}
    values = {**defaults, **flow_run_job_variables(pipeline, "team-a"), **(job_variables or {})}
    return apply_values(template["job_configuration"], values)["job_manifest"]["spec"]["template"]


def _job_pod(pipeline, job_variables: dict | None = None) -> dict:
    return _job_pod_template(pipeline, job_variables)["spec"]


def test_a_flow_run_job_pod_is_restricted_and_has_no_api_token() -> None:
    pod = _job_pod(load_pipeline(KUBERNETES))
    assert restricted_violations(pod) == []
    assert pod["automountServiceAccountToken"] is False
    mounts = {m["mountPath"] for m in pod["containers"][0]["volumeMounts"]}
    assert {"/tmp", "/home/eveflow/.eveflow"} <= mounts  # where Prefect and eveflow write
    # The label the bundled Prefect server's NetworkPolicy admits (charts/eveflow prefect-server.yaml).
    assert _job_pod_template(load_pipeline(KUBERNETES))["metadata"]["labels"]["eveflow.dev/flow-run"] == "true"


def test_flow_run_resources_come_from_job_variables_with_defaults() -> None:
    pipeline = load_pipeline(KUBERNETES)  # jobVariables: cpu_request 500m, memory_request 1Gi
    resources = _job_pod(pipeline)["containers"][0]["resources"]
    assert resources["requests"] == {"cpu": "500m", "memory": "1Gi"} and resources["limits"]["memory"] == "2Gi"
    document = {**pipeline.model_dump(by_alias=True, mode="json")}
    document["spec"]["workPool"]["jobVariables"] = {"memory_limit": "8Gi"}
    resources = _job_pod(parse_pipeline(document))["containers"][0]["resources"]
    assert resources["limits"]["memory"] == "8Gi" and resources["requests"] == {"cpu": "250m", "memory": "512Mi"}


def test_the_worker_pod_is_restricted() -> None:
    for example in ("pipeline.yaml", "pipeline-kubernetes.yaml"):
        deployment = build_worker_deployment(load_pipeline(ROOT / "examples" / example), OperatorSettings(), "team-a")
        pod = deployment["spec"]["template"]["spec"]
        assert restricted_violations(pod) == [], example
        mounts = {m["mountPath"] for m in pod["containers"][0]["volumeMounts"]}
        assert {"/tmp", "/home/eveflow/.eveflow"} <= mounts
