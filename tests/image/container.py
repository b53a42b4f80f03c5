"""The eveflow image, built by tests/tools/build-image.sh and run with buildah, no Docker engine.

How a container runs here (measured on these machines, buildah 1.28 from Debian):
- OCI isolation with crun fails ("cgroups in hybrid mode not supported, drop all controllers from
  cgroupv2"); chroot isolation works, and it is what the build itself uses, so the runs use it too.
  It shares the host's network: the container reaches the Prefect server, the ESI server and the
  Kubernetes API emulator the test started on 127.0.0.1.
- ``buildah run`` applies the image's user, environment and working directory but not its
  ENTRYPOINT: :meth:`Container.run` puts the image's entrypoint in front of the arguments, as
  ``docker run IMAGE ARGS`` does.
- ``buildah run`` has no ``--read-only``: the container's root directory is bind-mounted read-only
  onto itself in a private mount namespace (``unshare -m``) that buildah then runs in, so every
  write outside /tmp and the volumes given fails, as under ``docker run --read-only --tmpfs /tmp``
  (the chart's pods get /tmp from an emptyDir).
  buildah bind-mounts /etc/hosts, /etc/resolv.conf and /etc/hostname and cannot create those
  mount points on a read-only root: they are created (empty) in the working container first,
  never in the image. It also creates /run/.containerenv and removes it when the command ends
  (on a read-only /run the removal fails and buildah 1.28 panics): /run is a tmpfs here.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
STORAGE = ["--storage-driver", os.environ.get("STORAGE_DRIVER", "vfs")]
MOUNT_POINTS = ("etc/hosts", "etc/resolv.conf", "etc/hostname")
# Bind the container's root read-only onto itself, a fresh tmpfs on /tmp and /run, then hand over
# to buildah ($0 is the root).
_READ_ONLY_ROOT = ('mount --bind "$0" "$0" && mount -o remount,bind,ro "$0"'
                   ' && mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs "$0/tmp"'
                   ' && mount -t tmpfs -o mode=755,nosuid,nodev tmpfs "$0/run" && exec "$@"')


def buildah(*args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
    result = subprocess.run(["buildah", *STORAGE, *args], capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"buildah {' '.join(args)} failed ({result.returncode}):\n{result.stderr[-3000:]}")
    return result


def why_buildah_cannot_run() -> str | None:
    """None when this machine can build and run images with buildah, else the reason."""
    if shutil.which("buildah") is None:
        return "buildah is not installed (tests/run.sh installs it with apt-get where apt is available)"
    if shutil.which("debootstrap") is None:
        return "debootstrap is not installed (tests/run.sh installs it with apt-get where apt is available)"
    if os.geteuid() != 0:
        return "building the base image (debootstrap) and vfs storage need root"
    return None


@dataclass
class Image:
    """A built image: its name, its OCI config and what building it took."""

    name: str
    build_seconds: float
    config: dict = field(repr=False)
    size: str = ""
    layers: int = 0

    @classmethod
    def build(cls) -> Image:
        start = time.monotonic()
        result = subprocess.run(["bash", str(ROOT / "tests/tools/build-image.sh")], capture_output=True,
                                text=True, timeout=1800, cwd=ROOT)
        elapsed = time.monotonic() - start
        if result.returncode != 0:
            raise AssertionError(f"the image did not build:\n{result.stderr[-6000:]}")
        name = result.stdout.strip().splitlines()[-1]
        info = json.loads(buildah("inspect", "--type", "image", name).stdout)
        images = json.loads(buildah("images", "--json", name).stdout)
        return cls(name=name, build_seconds=elapsed, config=info["OCIv1"]["config"],
                   size=images[0]["size"], layers=len(info["OCIv1"]["rootfs"]["diff_ids"]))

    @property
    def entrypoint(self) -> list[str]:
        return list(self.config.get("Entrypoint") or [])

    @property
    def user(self) -> str:
        return self.config.get("User", "")

    @property
    def env(self) -> dict[str, str]:
        return dict(item.split("=", 1) for item in self.config.get("Env", []))


class Container:
    """A working container of the image, run read-only with chroot isolation.

    ``rootfs`` is its root directory on the host (vfs storage: a plain directory), read by the
    tests that look at what the image holds.
    """

    def __init__(self, image: Image) -> None:
        self.image = image
        self.name = buildah("from", "--pull-never", image.name).stdout.strip()
        self.rootfs = Path(buildah("mount", self.name).stdout.strip())
        self._procs: list[subprocess.Popen] = []

    def prepare_read_only_run(self) -> None:
        """Create the files buildah bind-mounts over (see the module docstring); call after any
        look at the pristine root filesystem."""
        for point in MOUNT_POINTS:
            path = self.rootfs / point
            if not path.exists():
                path.touch()

    def argv(self, args: list[str], *, env: dict[str, str] | None = None,
             volumes: dict[str, str] | None = None, entrypoint: bool = True) -> list[str]:
        command = [*(self.image.entrypoint if entrypoint else []), *args]
        run = ["buildah", *STORAGE, "run", "--isolation", "chroot"]
        for key, value in (env or {}).items():
            run += ["--env", f"{key}={value}"]
        for host, inside in (volumes or {}).items():
            run += ["--volume", f"{host}:{inside}"]
        run += [self.name, "--", *command]
        return ["unshare", "--mount", "sh", "-c", _READ_ONLY_ROOT, str(self.rootfs), *run]

    def run(self, args: list[str], *, timeout: float = 120, **kwargs) -> subprocess.CompletedProcess:
        """Run to completion: the image's entrypoint with ``args`` (``entrypoint=False``: ``args``)."""
        return subprocess.run(self.argv(args, **kwargs), capture_output=True, text=True, timeout=timeout)

    def start(self, args: list[str], log: Path, **kwargs) -> subprocess.Popen:
        """Start in the background, output to ``log``; stopped by :meth:`stop` or :meth:`close`."""
        with log.open("w") as out:
            proc = subprocess.Popen(self.argv(args, **kwargs), stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        self._procs.append(proc)
        return proc

    @staticmethod
    def stop(proc: subprocess.Popen, timeout: float = 30) -> int:
        """What `docker stop` does: SIGTERM to the container's main process (the entrypoint, the
        child of buildah's chroot-exec helper), its exit code back through buildah; SIGKILL to the
        whole process group after ``timeout``. (SIGTERM to the whole group kills buildah's helpers
        too: buildah then says "subprocess exited on killed" and exits 1, whatever the role did.)"""
        if proc.poll() is None:
            main = _entrypoint_process(proc.pid)
            if main is not None:
                os.kill(main, signal.SIGTERM)
            else:
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        return proc.returncode

    def close(self) -> None:
        for proc in self._procs:
            self.stop(proc, timeout=5)
        buildah("rm", self.name, check=False)


def _entrypoint_process(group: int) -> int | None:
    """The pid, in process group ``group``, whose parent is buildah-chroot-exec."""
    parents = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")[0]
        except OSError:
            continue
        if int(stat[2]) == group:  # pgrp
            parents[int(entry.name)] = (int(stat[1]), cmdline)
    for pid, (ppid, _) in parents.items():
        if ppid in parents and parents[ppid][1].endswith(b"buildah-chroot-exec"):
            return pid
    return None
