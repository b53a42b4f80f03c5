"""Issue 12, item 8, as anyone in the cluster who finds the bundled Prefect server: with the
chart's defaults it must not take their flow runs. It requires basic auth (a generated auth string
in a Secret kept across upgrades unless one is given; the server does not start without it),
`auth: disabled` has to be said explicitly, and a NetworkPolicy admits only the operator, the
workers and their flow-run pods."""

from __future__ import annotations

import base64

import pytest

from .conftest import RELEASE, Helm, by_kind, one

pytestmark = pytest.mark.helm

SERVER = f"{RELEASE}-prefect-server"


def _server_env(manifests: list[dict]) -> dict[str, dict]:
    container = one(manifests, "Deployment", SERVER)["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e for e in container.get("env", [])}


def test_the_bundled_server_requires_a_generated_auth_string_by_default(helm: Helm) -> None:
    manifests = helm.template(extra=("--set", "prefectServer.enabled=true"))
    ref = _server_env(manifests)["PREFECT_SERVER_API_AUTH_STRING"]["valueFrom"]["secretKeyRef"]
    assert ref == {"name": f"{RELEASE}-prefect", "key": "auth-string"}  # not optional: no key, no start
    secret = one(manifests, "Secret", f"{RELEASE}-prefect")
    user, _, password = base64.b64decode(secret["data"]["auth-string"]).decode().partition(":")
    assert user == "admin" and len(password) == 32 and password.isalnum()
    assert secret["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert secret["metadata"]["labels"]["eveflow.dev/prefect-credentials"] == "true"
    # Pipelines in the release namespace may use it without labelling it themselves.
    operator = one(manifests, "Deployment", RELEASE)["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in operator["env"]}
    assert env["EVEFLOW_OPERATOR_PREFECT_CREDENTIALS_SECRET"].endswith(f"/{RELEASE}-prefect")


def test_a_network_policy_admits_only_the_operator_workers_and_flow_runs(helm: Helm) -> None:
    manifests = helm.template(extra=("--set", "prefectServer.enabled=true"))
    (policy,) = by_kind(manifests, "NetworkPolicy")
    server_pod = one(manifests, "Deployment", SERVER)["spec"]["template"]["metadata"]["labels"]
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    assert set(policy["spec"]["podSelector"]["matchLabels"].items()) <= set(server_pod.items())
    (rule,) = policy["spec"]["ingress"]
    peers = [p["podSelector"]["matchLabels"] for p in rule["from"]]
    operator_pod = one(manifests, "Deployment", RELEASE)["spec"]["template"]["metadata"]["labels"]
    assert set(peers[0].items()) <= set(operator_pod.items())
    assert peers[1] == {"app.kubernetes.io/managed-by": "eveflow-operator", "app.kubernetes.io/component": "worker"}
    assert peers[2] == {"eveflow.dev/flow-run": "true"}
    assert len(peers) == 3 and all("ipBlock" not in p for p in rule["from"])


def test_no_auth_only_when_said_explicitly(helm: Helm) -> None:
    manifests = helm.template(extra=("--set", "prefectServer.enabled=true", "--set", "prefectServer.auth=disabled"))
    assert "PREFECT_SERVER_API_AUTH_STRING" not in _server_env(manifests)
    assert not by_kind(manifests, "Secret")
    bad = helm.run("template", RELEASE, str(__import__("tests.chart.conftest", fromlist=["CHART"]).CHART),
                   "--set", "prefectServer.enabled=true", "--set", "prefectServer.auth=off", check=False)
    assert bad.returncode != 0 and "auth" in bad.stderr


@pytest.mark.k8s
def test_the_generated_auth_string_survives_an_upgrade(kube) -> None:
    """`helm install` then `helm upgrade` against the API emulator: helm's lookup reads it back."""
    from .conftest import CHART

    namespace = "eveflow-auth"
    args = [str(CHART), "-n", namespace, "--disable-openapi-validation",
            "--set", "prefectServer.enabled=true", "--set", "prefectServer.persistence.enabled=false"]
    kube.helm("install", "auth", *args, "--create-namespace")
    try:
        def stored() -> str:
            (secret,) = [s for s in kube.objects("secrets", None, namespace) if s["metadata"]["name"] == "auth-eveflow-prefect"]
            return secret["data"]["auth-string"]
        first = stored()
        kube.helm("upgrade", "auth", *args)
        assert stored() == first
    finally:
        kube.helm("uninstall", "auth", "-n", namespace, check=False)
