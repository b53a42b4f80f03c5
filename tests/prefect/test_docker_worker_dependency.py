"""prefect-docker is a runtime dependency: the image (``uv pip install .``, no extras, see
tests/chart/test_dockerfile.py) can run ``eveflow worker --type docker``, and every applier
writes prefect-docker's own job template, never Prefect's bundled copy of it."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement

from eveflow_etl.orchestration.pools import default_base_job_template

ROOT = Path(__file__).resolve().parents[2]


def _requirements(lines: list[str]) -> dict[str, Requirement]:
    return {(r := Requirement(line)).name: r for line in lines}


def test_prefect_docker_is_installed_without_extras_next_to_prefect_kubernetes() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    runtime = _requirements(project["dependencies"])
    assert "prefect-docker" in runtime, "an image built without it cannot run `eveflow worker --type docker`"
    assert "prefect-kubernetes" in runtime
    for extra, lines in project["optional-dependencies"].items():
        assert "prefect-docker" not in _requirements(lines), f"a second pin in [{extra}] would drift"
    # docs/versions.md explains the pin with the same bounds, as a runtime (not test) dependency.
    (row,) = [line for line in (ROOT / "docs" / "versions.md").read_text().splitlines()
              if line.startswith("| `prefect-docker")]
    documented = Requirement(re.match(r"\| `([^`]+)`", row).group(1))
    assert documented.specifier == runtime["prefect-docker"].specifier
    assert "(tests)" not in row.split("|")[1]


def test_the_docker_pool_template_is_the_installed_workers() -> None:
    from prefect_docker.worker import DockerWorker

    assert default_base_job_template("docker") == DockerWorker.get_default_base_job_template()
