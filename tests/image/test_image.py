"""The image built from the real Dockerfile (buildah, on the debootstrap stand-in for the official
Python base) and run as Kubernetes and the VM targets run it: its own entrypoint, user and
environment, root filesystem read-only."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from .container import ROOT

# The first test builds the image when its content changed (minutes on a loaded 2-core machine).
pytestmark = [pytest.mark.image, pytest.mark.timeout(2400)]

RUNTIME_UID = 10001


def test_help_runs_from_the_entrypoint_as_the_non_root_user(image, container) -> None:
    container.prepare_read_only_run()
    result = container.run(["--help"])
    assert result.returncode == 0, result.stderr[-3000:]
    for command in ("operator", "worker", "crd"):
        assert re.search(rf"│\s+{command}\b", result.stdout), result.stdout
    ids = container.run(["python", "-c", "import os; print(os.getuid(), os.getgid(), os.getcwd())"],
                        entrypoint=False)
    assert ids.stdout.split() == [str(RUNTIME_UID), str(RUNTIME_UID), "/home/eveflow"], ids.stderr
    assert image.entrypoint == ["eveflow"] and image.user == f"{RUNTIME_UID}:{RUNTIME_UID}"


def test_crd_printed_by_the_image_is_the_repositorys(container) -> None:
    container.prepare_read_only_run()
    result = container.run(["crd"])
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout == (ROOT / "crds" / "evepipelines.eveflow.dev.yaml").read_text()


def test_root_filesystem_is_read_only_but_tmp_and_data_are_writable(container, tmp_path) -> None:
    """What `readOnlyRootFilesystem: true` gives the pods: every write outside /tmp (PREFECT_HOME,
    XDG_CACHE_HOME) and the /data volume fails."""
    container.prepare_read_only_run()
    data = tmp_path / "data"
    data.mkdir()
    os.chown(data, RUNTIME_UID, RUNTIME_UID)
    probe = ("import os\n"
             "for d in ('/home/eveflow', '/opt/eveflow', '/tmp', '/data'):\n"
             "    try:\n"
             "        open(os.path.join(d, 'probe'), 'w').close(); print(d, 'writable')\n"
             "    except OSError as exc:\n"
             "        print(d, exc.strerror)\n")
    result = container.run(["python", "-c", probe], entrypoint=False, volumes={str(data): "/data"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.splitlines() == [
        "/home/eveflow Read-only file system", "/opt/eveflow Read-only file system",
        "/tmp writable", "/data writable"]
    assert (data / "probe").stat().st_uid == RUNTIME_UID


def test_runtime_stage_has_no_compiler_no_uv_and_no_pip_cache(container) -> None:
    root = container.rootfs
    assert (root / "opt/eveflow/bin/eveflow").is_file()  # the venv is there …
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        rel = "/" + os.path.relpath(dirpath, root)
        for name in filenames:
            if name in ("uv", "uvx", "gcc", "cc", "cc1", "g++", "clang", "ld", "as") or re.fullmatch(r"gcc-\d+", name):
                found.append(f"{rel}/{name}")
        for name in dirnames:
            if name == "uv" and rel.endswith("site-packages") or name in ("pip", "uv") and rel.endswith(".cache"):
                found.append(f"{rel}/{name}/")
    assert found == [], found  # … the build stage's tools and caches are not
    assert not (root / "src").exists()  # nor its sources


def test_only_data_and_the_home_belong_to_the_runtime_user(container) -> None:
    """Everything the image ships (the venv included) stays root's: the user can change none of it
    even where the root filesystem is writable (docker run without --read-only, a VM)."""
    root = container.rootfs
    owned = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath, name)
            if path.lstat().st_uid == RUNTIME_UID or path.lstat().st_gid == RUNTIME_UID:
                owned.append("/" + str(path.relative_to(root)))
    outside = [p for p in owned if not (p == "/data" or p.startswith(("/data/", "/home/eveflow")))]
    assert outside == [], outside
    assert "/data" in owned and "/home/eveflow" in owned


def test_image_is_the_base_plus_the_runtime_stage(image, capsys) -> None:
    """Size and layers, printed; the build stage (uv, sources, its install layer) is not in it."""
    with capsys.disabled():
        print(f"\nimage {image.name}: {image.size}, {image.layers} layers")
    # One layer for the base (debootstrap), one for the runtime stage's changes (the user, /data
    # and the venv: buildah without --layers commits a stage as one layer); ENV/USER/… are metadata.
    assert image.layers == 2, image.layers
