"""`eveflow render` as a user runs it (subprocess of the installed console script)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from .conftest import PIPELINES, REPO, files_under
from .test_safety import SENTINELS

EVEFLOW = str(Path(sys.executable).with_name("eveflow"))


def _run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([EVEFLOW, *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})})


@pytest.fixture(scope="module")
def help_text() -> str:
    result = _run("render", "--help")
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_help_lists_targets(help_text):
    assert "spcs|vm" in help_text.replace(" ", "") or ("spcs" in help_text and "vm" in help_text)
    for option in ("--target", "--file", "--out"):
        assert option in help_text


def test_render_both_targets_with_sentinel_env(tmp_path, rendered):
    outs = {target: tmp_path / target for target in ("spcs", "vm")}
    # Both at once: each process spends most of its time importing Prefect.
    processes = {
        target: subprocess.Popen(
            [EVEFLOW, "render", "--target", target, "-f", str(PIPELINES["cloud"]), "-o", str(out)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, **SENTINELS},
        )
        for target, out in outs.items()
    }
    for target, process in processes.items():
        stdout, stderr = process.communicate(timeout=120)
        assert process.returncode == 0, stderr
        assert "Next steps:" in stdout and "eveflow apply -f" in stdout
        files = files_under(outs[target])
        assert files == files_under(rendered[(target, "cloud")]), "CLI output equals the library's"
        blob = b"".join(files.values()).decode() + stdout + stderr
        assert not [v for v in SENTINELS.values() if v in blob]


def test_hostile_name_is_one_line_error_and_writes_nothing(tmp_path):
    document = yaml.safe_load(PIPELINES["self-hosted"].read_text())
    document["metadata"]["name"] = "x'; DROP DATABASE EVEFLOW; --/../../etc"
    path = tmp_path / "hostile.yaml"
    path.write_text(yaml.safe_dump(document))
    out = tmp_path / "out"
    result = _run("render", "--target", "spcs", "-f", str(path), "-o", str(out))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "metadata.name" in lines[0]
    assert not out.exists()


def test_bad_target_is_refused(tmp_path):
    result = _run("render", "--target", "kubernetes", "-f", str(PIPELINES["self-hosted"]), "-o", str(tmp_path / "o"))
    assert result.returncode != 0
    assert "spcs" in result.stderr and "vm" in result.stderr
    assert not (tmp_path / "o").exists()


DOCKERFILE = REPO / "Dockerfile"


def _image_entrypoint_and_cmd() -> tuple[list[str], list[str]]:
    """ENTRYPOINT and CMD (exec form) of the eveflow image: the Dockerfile's last stage."""
    runtime = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text()).split("\nFROM ")[-1]
    (entrypoint,) = re.findall(r"^ENTRYPOINT (\[.*\])\s*$", runtime, flags=re.M)
    (cmd,) = re.findall(r"^CMD (\[.*\])\s*$", runtime, flags=re.M)
    return json.loads(entrypoint), json.loads(cmd)


def _container_argv(service: dict, image_entrypoint: list[str], image_cmd: list[str]) -> list[str]:
    """What a compose service of the image executes. As Docker does it: a service `entrypoint`
    replaces the image's and drops its CMD; `command` replaces CMD."""
    if "entrypoint" in service:
        return [*service["entrypoint"], *service.get("command", [])]
    return [*image_entrypoint, *service.get("command", image_cmd)]


def _eveflow_command_lines(rendered) -> list[tuple[str, list[str]]]:
    """Every command line the renders run with eveflow: the SPCS container, each compose service
    of the eveflow image, the systemd unit (a venv's eveflow, not the image)."""
    import shlex

    image_entrypoint, image_cmd = _image_entrypoint_and_cmd()
    found = []
    for (target, example), root in rendered.items():
        if target == "spcs":
            (container,) = yaml.safe_load((root / "service-spec.yaml").read_text())["spec"]["containers"]
            found.append((f"{example} spcs", container["command"] + container["args"]))
        else:
            services = yaml.safe_load((root / "docker-compose.yml").read_text())["services"]
            for name, service in services.items():
                if "${EVEFLOW_IMAGE" in service["image"]:
                    found.append((f"{example} compose {name}", _container_argv(service, image_entrypoint, image_cmd)))
            for unit in (root / "systemd").glob("*.service"):
                (exec_start,) = [line for line in unit.read_text().splitlines() if line.startswith("ExecStart=")]
                argv = shlex.split(exec_start.removeprefix("ExecStart="))
                assert argv[0].endswith("/.venv/bin/eveflow"), unit
                found.append((f"{example} {unit.name}", ["eveflow", *argv[1:]]))
    return found


def test_rendered_worker_commands_parse_with_the_real_cli(rendered):
    """The worker entrypoint's own option parser accepts every rendered command line."""
    import typer

    from eveflow_etl.cli import app

    worker = typer.main.get_command(app).commands["worker"]
    lines = _eveflow_command_lines(rendered)
    assert len(lines) == 2 + 2 * 3
    for where, argv in lines:
        assert argv[:2] == ["eveflow", "worker"], f"{where} runs {argv}"
        params = worker.make_context("worker", list(argv[2:])).params
        assert params["pool"] and params["port"] == 8080, where


def test_every_rendered_eveflow_command_line_is_a_command_of_the_installed_cli(rendered):
    """Each command line, as the container or unit executes it, with --help added: the installed
    console script knows the command (`eveflow eveflow worker` is "No such command")."""
    lines = _eveflow_command_lines(rendered)
    assert all(argv[0] == "eveflow" for _, argv in lines), lines
    distinct = {tuple(argv[1:]): where for where, argv in lines}
    # Two at a time (two cores): each process spends most of its time importing Prefect.
    pending = list(distinct.items())
    while pending:
        batch, pending = pending[:2], pending[2:]
        running = [(where, args, subprocess.Popen([EVEFLOW, *args, "--help"], stdout=subprocess.PIPE,
                                                  stderr=subprocess.PIPE, text=True))
                   for args, where in batch]
        for where, args, process in running:
            stdout, stderr = process.communicate(timeout=120)
            assert process.returncode == 0, f"{where}: eveflow {' '.join(args)} --help: {stderr.strip()[-300:]}"
            assert "Usage:" in stdout, where
