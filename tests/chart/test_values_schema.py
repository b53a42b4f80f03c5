"""values.schema.json: generated from the model where it describes a pipeline, and it rejects
bad values with a message that names the field."""

from __future__ import annotations

import json
import runpy
from pathlib import Path

import jsonschema
import pytest
import yaml

from .conftest import CHART, ROOT, Helm, bad_values_files, values_files
from tests.fixtures.urls import PREFECT_URL_SAMPLES

pytestmark = pytest.mark.helm

SCHEMA = json.loads((CHART / "values.schema.json").read_text())


def _expectations(path: Path) -> list[str]:
    expected = _comments(path, "# expect:")
    assert expected, f"{path.name} has no '# expect: <text>' line"
    return expected


def _comments(path: Path, prefix: str) -> list[str]:
    return [line.removeprefix(prefix).strip() for line in path.read_text().splitlines() if line.startswith(prefix)]


def test_schema_is_in_sync_with_the_model() -> None:
    script = runpy.run_path(str(CHART / "hack" / "sync-values-schema.py"))
    assert (CHART / "values.schema.json").read_text() == script["render"](), (
        "values.schema.json is stale: run charts/eveflow/hack/sync-values-schema.py"
    )


def test_schema_is_valid_and_accepts_the_shipped_values() -> None:
    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    jsonschema.Draft202012Validator(SCHEMA).validate(defaults)


def test_example_pipeline_spec_schema_accepts_the_repository_examples() -> None:
    spec_schema = SCHEMA["properties"]["examplePipeline"]["properties"]["spec"]
    for path in sorted((ROOT / "examples").glob("*.yaml")):
        document = yaml.safe_load(path.read_text())
        jsonschema.Draft202012Validator(spec_schema).validate(document["spec"])


@pytest.mark.parametrize("path", values_files(), ids=lambda p: p.stem)
def test_realistic_values_are_accepted(helm: Helm, path: Path) -> None:
    helm.template(path)


@pytest.mark.parametrize("path", bad_values_files(), ids=lambda p: p.stem)
def test_bad_values_are_rejected_with_a_clear_message(helm: Helm, path: Path) -> None:
    result = helm.run("template", "eveflow", str(CHART), "-f", str(path), check=False)
    assert result.returncode != 0, f"{path.name} was accepted"
    for expected in _expectations(path):
        assert expected in result.stderr, f"{path.name}: {expected!r} not in helm's error:\n{result.stderr}"
    # '# not-in-error: <text>': a secret in the bad value must not reach the terminal or CI logs.
    for secret in _comments(path, "# not-in-error:"):
        assert secret not in result.stderr, f"{path.name}: helm's error echoes {secret!r}:\n{result.stderr}"
    # helm install shows the same message (it runs the same checks before talking to a cluster).
    assert "Error:" in result.stderr


@pytest.mark.parametrize("where", [("prefect", "apiUrl"), ("prefectServer", "uiApiUrl")], ids=".".join)
@pytest.mark.parametrize("url", PREFECT_URL_SAMPLES)
def test_url_values_refuse_credentials_where_the_operator_does(where: tuple[str, str], url: str) -> None:
    """prefect.apiUrl becomes EVEFLOW_OPERATOR_PREFECT_API_URL: `helm install` refuses exactly the
    URLs the operator would refuse at startup (and the CRD in spec.prefect.apiUrl)."""
    from eveflow_etl.spec import has_url_credentials

    schema = SCHEMA["properties"][where[0]]["properties"][where[1]]
    accepted = jsonschema.Draft202012Validator(schema).is_valid(url)
    assert accepted == (not has_url_credentials(url))


def test_helm_accepts_an_at_sign_after_the_host(helm: Helm) -> None:
    # helm's regex engine, not Python's: only userinfo before the host is refused.
    url = "https://prefect.example.org/api?owner=ops@example.org"
    manifests = helm.template(extra=("--set", f"prefect.apiUrl={url}"))
    env = [e for m in manifests if m.get("kind") == "Deployment"
           for c in m["spec"]["template"]["spec"]["containers"] for e in c.get("env", [])]
    assert {"name": "EVEFLOW_OPERATOR_PREFECT_API_URL", "value": url} in env
