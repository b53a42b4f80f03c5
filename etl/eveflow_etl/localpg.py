"""A real local PostgreSQL without a preinstalled, running server: one function, two mechanisms.

1. ``pgserver`` (embedded PostgreSQL 16 binaries from a wheel): no system package needed.
   As root it runs the server as its own ``pgserver`` user; it listens on a Unix socket only.
2. Fallback: the distribution's ``initdb``/``pg_ctl`` (Debian's ``postgresql`` package), run as
   ``postgres`` via ``runuser`` when we are root, listening on 127.0.0.1 on a free port.

``start_local_postgres`` hides which one ran; callers get a DSN. pgserver is a small project with
no release since 2024, which is why it sits behind this one function.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import pwd
import shutil
import socket
import stat
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Literal

import psutil
import psycopg

from eveflow_etl.errors import DestinationError

log = logging.getLogger(__name__)

Method = Literal["auto", "pgserver", "initdb"]

# Settings for throwaway servers (tests, benchmarks' scratch data): durability is not needed.
FAST_UNSAFE_SETTINGS = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}


@dataclass
class LocalServer:
    """A running local server. ``stop()`` is idempotent."""

    dsn: str
    method: str
    data_dir: Path
    start_seconds: float
    _stop: Callable[[], None] | None = field(default=None, repr=False)

    def stop(self) -> None:
        if self._stop is not None:
            stop, self._stop = self._stop, None
            stop()


def start_local_postgres(
    data_dir: Path | None = None,
    *,
    method: Method = "auto",
    stop_at_exit: bool = True,
    delete_on_stop: bool = False,
    fast_unsafe: bool = False,
) -> LocalServer:
    """Start (or reuse) a local PostgreSQL whose cluster lives in ``data_dir`` and return it.

    ``data_dir=None`` makes a temporary cluster (deleted on stop). ``method="auto"`` tries the
    embedded server first and falls back to the system ``initdb``; the error names both causes.
    ``fast_unsafe`` turns fsync off (tests, benchmarks).
    """
    if data_dir is None:
        data_dir = Path(tempfile.mkdtemp(prefix="eveflow-pg-"))
        delete_on_stop = True
    data_dir = Path(data_dir).expanduser().resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    order = ["pgserver", "initdb"] if method == "auto" else [method]
    causes = []
    for name in order:
        started = time.monotonic()
        try:
            starter = _start_pgserver if name == "pgserver" else _start_initdb
            dsn, stop = starter(data_dir / name, stop_at_exit=stop_at_exit, delete_on_stop=delete_on_stop)
        except Exception as exc:  # noqa: BLE001 - any failure moves on to the next mechanism
            log.warning("local PostgreSQL via %s failed: %s", name, exc)
            causes.append(f"{name}: {_one_line(exc)}")
            continue
        server = LocalServer(dsn, name, data_dir / name, time.monotonic() - started, stop)
        if fast_unsafe:
            _apply_settings(dsn, FAST_UNSAFE_SETTINGS)
        if delete_on_stop and data_dir.name.startswith("eveflow-pg-"):
            inner = server._stop
            server._stop = lambda: (inner and inner(), shutil.rmtree(data_dir, ignore_errors=True))
        return server
    raise DestinationError("could not start a local PostgreSQL (" + "; ".join(causes) + ")")


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[-1] if text else type(exc).__name__)[:200]


def _apply_settings(dsn: str, settings: dict[str, str]) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        for key, value in settings.items():
            conn.execute(f"ALTER SYSTEM SET {key} = '{value}'")  # keys/values are our constants
        conn.execute("SELECT pg_reload_conf()")


# --- pgserver ---------------------------------------------------------------------------------


def _start_pgserver(pgdata: Path, *, stop_at_exit: bool, delete_on_stop: bool):
    if not os.environ.get("XDG_RUNTIME_DIR"):  # pgserver keeps its lock file there
        runtime = Path(tempfile.gettempdir()) / f"eveflow-runtime-{os.geteuid()}"
        runtime.mkdir(mode=0o700, exist_ok=True)
        os.environ["XDG_RUNTIME_DIR"] = str(runtime)
    import pgserver  # after XDG_RUNTIME_DIR is set: pgserver reads it when imported (its lock path)

    forget_dead_handles(pgdata)
    mode = ("delete" if delete_on_stop else "stop") if stop_at_exit or delete_on_stop else None
    srv = pgserver.get_server(pgdata, cleanup_mode=mode)
    return srv.get_uri(), (srv.cleanup if mode else None)


def forget_dead_handles(pgdata: Path) -> None:
    """pgserver stops its server when the last process holding it exits, counting processes in
    ``.handle_pids.json``; one that died without its atexit (SIGKILL, OOM) pins the server forever.
    Drop dead pids so a crashed earlier run cannot leave PostgreSQL running after this one."""
    path = pgdata / ".handle_pids.json"
    try:
        pids = json.loads(path.read_text())
    except (OSError, ValueError):
        return
    alive = [pid for pid in pids if isinstance(pid, int) and psutil.pid_exists(pid)]
    if alive != pids:
        path.write_text(json.dumps(alive))


# --- system initdb / pg_ctl -------------------------------------------------------------------


def _pg_bin(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    for candidate in sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"), reverse=True):
        return str(candidate)
    raise FileNotFoundError(f"{name} not found (install the postgresql package)")


def _as_postgres(argv: list[str]) -> list[str]:
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *argv]
    return argv


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _grant_traverse(path: Path) -> None:
    """Let the ``postgres`` user reach ``path`` (o+x on each parent; what pgserver does too)."""
    for parent in path.parents:
        mode = parent.stat().st_mode
        if not mode & stat.S_IXOTH:
            parent.chmod(mode | stat.S_IXOTH)


def _running_port(pgdata: Path) -> int | None:
    pidfile = pgdata / "postmaster.pid"
    if not pidfile.exists():
        return None
    lines = pidfile.read_text().splitlines()
    try:
        pid, port = int(lines[0]), int(lines[3])
        os.kill(pid, 0)
    except (IndexError, ValueError, ProcessLookupError, PermissionError):
        return None
    return port


def _start_initdb(pgdata: Path, *, stop_at_exit: bool, delete_on_stop: bool):
    initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
    root = os.geteuid() == 0
    if not pgdata.exists():
        pgdata.mkdir(mode=0o700)
    if root:
        pw = pwd.getpwnam("postgres")
        _grant_traverse(pgdata)
        os.chown(pgdata, pw.pw_uid, pw.pw_gid)
    if not (pgdata / "PG_VERSION").exists():
        subprocess.run(
            _as_postgres([initdb, "-D", str(pgdata), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"]),
            check=True, capture_output=True, text=True, timeout=120,
        )
    port = _running_port(pgdata)
    if port is None:
        last_error = ""
        for _attempt in range(3):  # a free port can be taken between probe and bind
            port = _free_port()
            opts = f"-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories=''"
            proc = subprocess.run(
                _as_postgres([pg_ctl, "-D", str(pgdata), "-w", "-t", "60", "-l", str(pgdata / "server.log"),
                              "-o", opts, "start"]),
                capture_output=True, text=True, timeout=90,
            )
            if proc.returncode == 0:
                break
            last_error = (proc.stderr or proc.stdout).strip()
        else:
            raise RuntimeError(f"pg_ctl start failed: {last_error}")

    def stop() -> None:
        subprocess.run(_as_postgres([pg_ctl, "-D", str(pgdata), "-m", "fast", "-w", "stop"]),
                       capture_output=True, timeout=60)
        if delete_on_stop:
            shutil.rmtree(pgdata, ignore_errors=True)

    if stop_at_exit:
        atexit.register(stop)
    return f"postgresql://postgres@127.0.0.1:{port}/postgres", stop


_LOCAL_SERVERS: dict[Path, LocalServer] = {}
_LOCAL_SERVERS_LOCK = threading.Lock()


def local_dsn(data_dir: Path) -> str:
    """DSN of the persistent local server for ``eveflow etl run`` without a destination.

    The cluster lives in ``data_dir`` (``settings.data_dir / "pg"``) and is stopped when the
    process exits (the embedded server counts its users, so parallel runs share it). Concurrent
    callers in one process (region tasks of a flow run) share one start: pgserver itself is not
    safe to start twice at once from the same process.
    """
    key = Path(data_dir).expanduser().resolve()
    with _LOCAL_SERVERS_LOCK:
        if key not in _LOCAL_SERVERS:
            _LOCAL_SERVERS[key] = start_local_postgres(key, stop_at_exit=True)
        return _LOCAL_SERVERS[key].dsn
