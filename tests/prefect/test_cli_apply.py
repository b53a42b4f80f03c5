"""``eveflow apply|status|delete -f`` against the real server (in-process CLI, writes counted)."""

from __future__ import annotations

import uuid

import pytest
import yaml

from eveflow_etl.cli import run
from tests.fixtures.prefect import pipeline_document, prefect_api

pytestmark = pytest.mark.prefect


@pytest.fixture
def cli(monkeypatch, capsys):
    """Run the CLI in-process with a clean Prefect environment; returns (exit code, stdout, stderr)."""
    for var in ("PREFECT_API_URL", "PREFECT_API_KEY", "PREFECT_API_AUTH_STRING"):
        monkeypatch.delenv(var, raising=False)

    def invoke(*args: str, **env: str):
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        capsys.readouterr()
        code = run(list(args))
        out, err = capsys.readouterr()
        for key in env:
            monkeypatch.delenv(key, raising=False)
        return code, out, err

    return invoke


def write(tmp_path, document) -> str:
    path = tmp_path / f"{document['metadata']['name']}.yaml"
    path.write_text(yaml.safe_dump(document))
    return str(path)


def test_apply_twice_then_status_and_delete(cli, prefect_write_counter, tmp_path):
    name, pool = f"cli-{uuid.uuid4().hex[:6]}", f"cli-pool-{uuid.uuid4().hex[:6]}"
    # The file names an address that does not work: --api-url wins over it.
    document = pipeline_document(name, pool, prefect={"mode": "selfHosted", "apiUrl": "http://127.0.0.1:9/api"})
    path = write(tmp_path, document)
    url = prefect_write_counter.api_url

    code, out, err = cli("apply", "-f", path, "--api-url", url)
    assert code == 0, err
    assert f"created work pool {pool} (process)" in out and f"created deployment eve-market-etl/{name}" in out
    assert "schedule: daily (" in out

    prefect_write_counter.reset()
    code, out, err = cli("apply", "-f", path, PREFECT_API_URL=url)  # the environment also wins over the file
    assert code == 0, err
    assert "already in sync: nothing changed" in out and "writes: 0" in out
    assert prefect_write_counter.writes == []

    code, out, err = cli("status", "-f", path, "--api-url", url)
    assert code == 0 and f"deployment: {name} (" in out and "next run:" in out
    assert prefect_write_counter.writes == []

    code, out, err = cli("delete", "-f", path, "--api-url", url)
    assert code == 0, err
    assert f"deleted deployment {name} (" in out and f"deleted work pool {pool}" in out


def test_unreachable_prefect_fails_in_one_line_and_a_rerun_finishes(cli, prefect_server, prefect_write_counter, tmp_path):
    name, pool = f"down-{uuid.uuid4().hex[:6]}", f"down-pool-{uuid.uuid4().hex[:6]}"
    path = write(tmp_path, pipeline_document(name, pool))

    code, out, err = cli("apply", "-f", path, "--api-url", "http://127.0.0.1:9/api")
    assert code == 5 and out == ""
    assert err.count("\n") == 1 and err.startswith("error: Prefect API at http://127.0.0.1:9/api is unreachable")

    # The server goes away half-way through an apply (after the pool, its second queue and the
    # first deployment)…
    prefect_write_counter.fail_after_writes(3)
    code, out, err = cli("apply", "-f", path, "--api-url", prefect_write_counter.api_url)
    assert code == 5 and err.count("\n") == 1 and "unreachable" in err, err
    # …and comes back: the re-run finishes, without duplicates.
    prefect_write_counter.heal()
    code, out, err = cli("apply", "-f", path, "--api-url", prefect_write_counter.api_url)
    assert code == 0, err
    with prefect_api(prefect_server) as client:
        tagged = client.post("deployments/filter", json={
            "deployments": {"tags": {"all_": [f"eveflow.dev/pipeline:default.{name}"]}}}).json()
        assert sorted(d["name"] for d in tagged) == sorted([name, f"{name}-maintenance"])
        etl = next(d for d in tagged if d["name"] == name)
        assert sorted(s["slug"] for s in etl["schedules"]) == ["daily", "hub-refresh"]
        queues = client.post(f"work_pools/{pool}/queues/filter", json={}).json()
        assert sorted(q["name"] for q in queues) == ["default", "high-memory"]
    prefect_write_counter.reset()
    code, out, err = cli("apply", "-f", path, "--api-url", prefect_write_counter.api_url)
    assert code == 0 and prefect_write_counter.writes == []


def test_cloud_mode_needs_a_key_and_a_wrong_key_is_one_clear_line(cli, prefect_cloud, tmp_path):
    name = f"cloud-{uuid.uuid4().hex[:6]}"
    path = write(tmp_path, pipeline_document(name, f"cloud-pool-{uuid.uuid4().hex[:6]}",
                                             prefect={"mode": "cloud", "apiUrl": prefect_cloud.api_url}))
    code, out, err = cli("apply", "-f", path)
    assert code == 2 and "set PREFECT_API_KEY" in err

    code, out, err = cli("apply", "-f", path, PREFECT_API_KEY="pnu_not-the-key")
    assert code == 5 and err.count("\n") == 1
    assert err.startswith(f"error: Prefect refused the API key for {prefect_cloud.api_url}")
    assert "pnu_not-the-key" not in err

    code, out, err = cli("apply", "-f", path, PREFECT_API_KEY=prefect_cloud.api_key)
    assert code == 0, err
    assert f"on {prefect_cloud.api_url} (api key)" in out and prefect_cloud.api_key not in out


def test_basic_auth_from_the_environment(cli, prefect_auth_server, tmp_path):
    path = write(tmp_path, pipeline_document(f"basic-{uuid.uuid4().hex[:6]}", f"basic-pool-{uuid.uuid4().hex[:6]}"))
    code, out, err = cli("apply", "-f", path, "--api-url", prefect_auth_server.api_url)
    assert code == 5 and "Prefect refused" in err and "PREFECT_API_AUTH_STRING" in err
    code, out, err = cli("apply", "-f", path, "--api-url", prefect_auth_server.api_url,
                         PREFECT_API_AUTH_STRING=prefect_auth_server.auth_string)
    assert code == 0, err
    assert "(basic auth)" in out and prefect_auth_server.auth_string not in out


def test_no_prefect_address_anywhere(cli, tmp_path):
    path = write(tmp_path, pipeline_document("nowhere", "nowhere-pool"))
    code, out, err = cli("apply", "-f", path)
    assert code == 2 and "pass --api-url, set PREFECT_API_URL, or set spec.prefect.apiUrl" in err
