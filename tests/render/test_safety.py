"""No secret value in any output; hostile names refused or made safe; nothing written outside -o."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from eveflow_etl.errors import ConfigError
from eveflow_etl.render import Target, render
from eveflow_etl.spec import EvePipeline, load_pipeline

from .conftest import PIPELINES, TARGETS, files_under

SENTINELS = {
    "PREFECT_API_KEY": "pnu_SENTINEL_prefect_key_8c1f",
    "PREFECT_API_AUTH_STRING": "admin:SENTINEL_auth_5d2e",
    "PGPASSWORD": "SENTINEL_pg_password_77aa",
    "PGUSER": "SENTINEL_pg_user_31bb",
    "PGHOST": "sentinel-pg-host-0d0d.example",
    "SNOWFLAKE_POSTGRES_PASSWORD": "SENTINEL_sf_password_9e9e",
    "SNOWFLAKE_POSTGRES_USER": "SENTINEL_sf_user_4c4c",
    "PREFECT_API_URL": "https://sentinel-prefect-6f6f.example/api",
    "EVEFLOW_ESI_BASE_URL": "https://sentinel-esi-1a1a.example/latest",
}
SECRET_VALUE = "SENTINEL_k8s_secret_value_2b2b"


def _pipeline_with_secrets(tmp_path: Path, example: str) -> Path:
    """The example pipeline preceded by Kubernetes Secrets holding sentinel values, as a user
    might keep them in one file: the render must read only the EvePipeline document."""
    secrets = [
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name},
         "stringData": {"api-key": SECRET_VALUE, "PGPASSWORD": SECRET_VALUE}}
        for name in ("prefect-cloud", "eveflow-postgres", "snowflake-postgres")
    ]
    path = tmp_path / f"{example}-with-secrets.yaml"
    path.write_text(yaml.safe_dump_all(secrets) + "---\n" + PIPELINES[example].read_text())
    return path


@pytest.mark.parametrize("example", list(PIPELINES))
@pytest.mark.parametrize("target", TARGETS)
def test_no_secret_value_in_any_output(tmp_path, monkeypatch, target, example):
    for name, value in SENTINELS.items():
        monkeypatch.setenv(name, value)
    out = tmp_path / "out"
    render(load_pipeline(_pipeline_with_secrets(tmp_path, example)), target, out)
    files = files_under(out)
    assert files
    for name, content in files.items():
        text = content.decode()
        for value in [*SENTINELS.values(), SECRET_VALUE]:
            assert value not in text, f"{name} contains the value of a secret or of the environment"
        assert "SENTINEL" not in text.upper(), name


def _document(name: str = "ok", **spec_overrides) -> dict:
    document = yaml.safe_load(PIPELINES["self-hosted"].read_text())
    document["metadata"]["name"] = name
    document["spec"].update(spec_overrides)
    return document


HOSTILE_NAMES = ['x"; DROP DATABASE EVEFLOW; --', "a'b", "../../etc", "a;b", "n" * 200, "Upper", "with space", "-x"]


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_hostile_pipeline_names_refused_by_load(tmp_path, name):
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(_document(name)))
    with pytest.raises(ConfigError, match=r"metadata\.name"):
        load_pipeline(path)


@pytest.mark.parametrize("name", HOSTILE_NAMES)
@pytest.mark.parametrize("target", TARGETS)
def test_hostile_names_refused_even_without_validation(tmp_path, name, target):
    """A pipeline built with model_construct (no validation) is re-checked before any write."""
    good = load_pipeline(PIPELINES["self-hosted"])
    bad = EvePipeline.model_construct(
        api_version=good.api_version, kind=good.kind,
        metadata=good.metadata.model_construct(name=name), spec=good.spec,
    )
    out = tmp_path / "out"
    with pytest.raises(ConfigError, match=r"metadata\.name"):
        render(bad, target, out)
    assert not out.exists(), "nothing is written when the pipeline is refused"


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"worker": {"image": 'x$(touch${IFS}/tmp/pwned)'}}, "spec.worker.image"),
        ({"worker": {"image": "eveflow:1;rm"}}, "spec.worker.image"),
        ({"prefect": {"mode": "selfHosted", "apiUrl": "https://evil';--.example/api"}}, "spec.prefect.apiUrl"),
        ({"destination": {"profile": "local"}}, "spec.destination.profile"),
    ],
)
def test_hostile_fields_refused(tmp_path, overrides, field):
    document = _document("ok", **overrides)
    pipeline = EvePipeline.model_validate(document)
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        render(pipeline, "spcs", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_longest_valid_name_fits_every_limit(tmp_path):
    """53 characters (the CRD's limit) stays within SPCS's 63 once suffixes are added."""
    name = "a" * 52 + "z"
    pipeline = EvePipeline.model_validate(_document(name))
    for target in TARGETS:
        render(pipeline, target, tmp_path / target)
    assert "A" * 52 + "Z_WORKER" in (tmp_path / "spcs" / "setup.sql").read_text()


def _snapshot(root: Path) -> dict[str, tuple[int, float]]:
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*") if not p.is_symlink()}


@pytest.mark.parametrize("target", TARGETS)
def test_nothing_written_outside_out_dir(tmp_path, target):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("untouched")
    out = tmp_path / "work" / "out"
    before = _snapshot(tmp_path)
    written = render(load_pipeline(PIPELINES["self-hosted"]), target, out)
    after = _snapshot(tmp_path)
    new = set(after) - set(before)
    assert all(Path(p) == out or out in Path(p).parents or Path(p) in out.parents for p in new), new
    assert all(out.resolve() in p.resolve().parents for p in written)
    assert (outside / "keep.txt").read_text() == "untouched"


@pytest.mark.parametrize("link", ["README.md", "systemd"])
def test_symlink_in_out_dir_pointing_outside_is_refused(tmp_path, link):
    outside = tmp_path / "outside"
    outside.mkdir()
    victim = outside / "victim"
    victim.write_text("untouched")
    out = tmp_path / "out"
    out.mkdir()
    (out / link).symlink_to(victim if link == "README.md" else outside)
    with pytest.raises(ConfigError, match="outside"):
        render(load_pipeline(PIPELINES["self-hosted"]), Target.VM, out)
    assert victim.read_text() == "untouched" and sorted(os.listdir(outside)) == ["victim"]


def test_out_dir_that_is_a_file_is_refused(tmp_path):
    target = tmp_path / "file"
    target.write_text("x")
    with pytest.raises(ConfigError, match="not a directory"):
        render(load_pipeline(PIPELINES["self-hosted"]), "vm", target)


def test_unknown_target_refused(tmp_path):
    with pytest.raises(ConfigError, match="spcs, vm"):
        render(load_pipeline(PIPELINES["self-hosted"]), "kubernetes", tmp_path)
