"""``eveflow demo`` as a user runs it: a subprocess, not a terminal, in a fresh data dir, twice.

The demo starts its own Prefect server, PostgreSQL and ESI server; nothing here shares the
session fixtures, which is the point (a fresh machine). The second run in the same data dir must
be idempotent: the sync writes nothing, the deployment keeps its id, no row is inserted again.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

pytestmark = pytest.mark.prefect

EVEFLOW = str(Path(sys.executable).with_name("eveflow"))


def _user_env(tmp_path: Path) -> dict[str, str]:
    """A user's shell: no Prefect profile, PG* or EVEFLOW_* settings leaking in from the suite."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "PG", "EVEFLOW_"))}
    env["HOME"] = str(tmp_path / "home")  # nothing from ~/.prefect or ~/.eveflow
    return env


def _run_demo(data_dir: Path, env: dict[str, str]) -> tuple[dict[str, str], str]:
    proc = subprocess.run([EVEFLOW, "demo", "--data-dir", str(data_dir), "--port", "0"], env=env,
                          capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-4000:]
    assert "Traceback" not in output, output[-4000:]
    match = re.search(r"^result: (.*)$", proc.stdout, re.M)
    assert match, output[-4000:]
    return dict(pair.split("=", 1) for pair in match.group(1).split()), output


def _processes_using(path: Path) -> list[str]:
    found = []
    for process in psutil.process_iter(["pid", "cmdline"]):
        cmdline = " ".join(process.info["cmdline"] or [])
        if str(path) in cmdline:
            found.append(f"{process.info['pid']}: {cmdline}")
    return found


def test_demo_runs_end_to_end_and_again_idempotently(tmp_path):
    data_dir, env = tmp_path / "eveflow-data", _user_env(tmp_path)

    first, output = _run_demo(data_dir, env)
    assert first["state"] == "COMPLETED"
    assert int(first["loaded"]) > 0 and int(first["inserted"]) > 0 and int(first["table_rows"]) > 0
    assert "Prefect UI: http://127.0.0.1:" in output
    assert re.search(r"psql '[^']*host=[^']*' -c 'SELECT region_id", output), output
    assert "password" not in output.lower()
    for region in ("10000002", "10000043", "10000032"):  # the example's regions, one row each
        assert re.search(rf"^\s+{region}\s+COMPLETED\s+\d+", output, re.M), output
    assert not _processes_using(data_dir), "left running after the demo"

    second, output = _run_demo(data_dir, env)
    assert second["state"] == "COMPLETED"
    assert second["deployment"] == first["deployment"]
    assert second["sync_writes"] == "0"
    assert second["inserted"] == "0" and second["updated"] == "0"
    assert int(second["unchanged"]) == int(first["inserted"])
    assert second["table_rows"] == first["table_rows"]
    assert "already in sync (0 writes)" in output
    assert not _processes_using(data_dir), "left running after the demo"


@pytest.mark.parametrize("bad", ["jita", "1000000\u00b2"])  # '²' passes str.isdigit, not int()
def test_bad_regions_is_one_line_before_anything_starts(tmp_path, bad):
    proc = subprocess.run([EVEFLOW, "demo", "--data-dir", str(tmp_path / "d"), "--regions", f"10000002,{bad}"],
                          env=_user_env(tmp_path), capture_output=True, text=True, timeout=60)
    output = (proc.stdout + proc.stderr).strip()
    assert proc.returncode != 0 and len(output.splitlines()) == 1, output
    assert f"'{bad}' is not an EVE region id" in output
    assert not (tmp_path / "d").exists()
