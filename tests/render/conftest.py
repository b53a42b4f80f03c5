"""Render fixtures: both targets × both example pipelines, rendered once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from eveflow_etl.render import render
from eveflow_etl.spec import load_pipeline

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
GOLDEN = HERE / "golden"
SCHEMAS = HERE / "schemas"
PIPELINES = {
    "self-hosted": REPO / "examples" / "pipeline.yaml",
    "cloud": HERE / "pipelines" / "cloud.yaml",
}
TARGETS = ("spcs", "vm")
CASES = [(target, example) for target in TARGETS for example in PIPELINES]


def files_under(root: Path) -> dict[str, bytes]:
    """Relative path → bytes of every file under ``root`` (hidden files included)."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="session")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], Path]:
    out = {}
    for target, example in CASES:
        directory = tmp_path_factory.mktemp(f"{target}-{example}")
        render(load_pipeline(PIPELINES[example]), target, directory)
        out[(target, example)] = directory
    return out


def rendered_files(rendered: dict[tuple[str, str], Path], target: str, pattern: str) -> list[Path]:
    return [p for example in PIPELINES for p in sorted(rendered[(target, example)].glob(pattern))]
