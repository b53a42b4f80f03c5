"""Golden files: the render of each example is byte-for-byte what is checked in.

Regenerate after an intended change with ``EVEFLOW_UPDATE_GOLDEN=1 pytest tests/render`` and
review the diff like code.
"""

from __future__ import annotations

import os
import shutil
import stat

import pytest

from eveflow_etl.render import render
from eveflow_etl.spec import load_pipeline

from .conftest import CASES, GOLDEN, PIPELINES, files_under

UPDATE = os.environ.get("EVEFLOW_UPDATE_GOLDEN") == "1"


@pytest.mark.parametrize(("target", "example"), CASES)
def test_matches_golden(rendered, target, example):
    actual = files_under(rendered[(target, example)])
    golden_dir = GOLDEN / target / example
    if UPDATE:
        shutil.rmtree(golden_dir, ignore_errors=True)
        shutil.copytree(rendered[(target, example)], golden_dir)
    expected = files_under(golden_dir)
    assert sorted(actual) == sorted(expected), "the set of rendered files changed"
    for name, content in expected.items():
        assert actual[name].decode() == content.decode(), f"{target}/{example}/{name} differs from golden"


@pytest.mark.parametrize(("target", "example"), CASES)
def test_deterministic(tmp_path, rendered, target, example):
    """A second render (fresh process state, different directory) is byte-identical."""
    render(load_pipeline(PIPELINES[example]), target, tmp_path)
    assert files_under(tmp_path) == files_under(rendered[(target, example)])


def test_rerender_into_same_directory_is_stable(tmp_path):
    pipeline = load_pipeline(PIPELINES["self-hosted"])
    first = render(pipeline, "vm", tmp_path)
    snapshot = files_under(tmp_path)
    second = render(pipeline, "vm", tmp_path)
    assert first == second and files_under(tmp_path) == snapshot


def test_file_modes(rendered):
    for (target, _), root in rendered.items():
        for path in root.rglob("*"):
            if path.is_file():
                executable = bool(path.stat().st_mode & stat.S_IXUSR)
                assert executable == (path.name == "deploy.sh"), path
