"""A real local Prefect server as a subprocess: what ``eveflow demo`` and the test suite run.

``prefect server start`` with its own ``PREFECT_HOME`` (so SQLite lives there), analytics off,
on a free port of 127.0.0.1, optionally with basic auth (``PREFECT_SERVER_API_AUTH_STRING``).
It answers ``GET /api/health`` after ~14 s on a fresh database (5–7 s on an existing one).
The server runs in its own process group so :meth:`PrefectServer.stop` ends it and its children.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from eveflow_etl.errors import PrefectError
from eveflow_etl.orchestration.client import basic_auth_header

# Variables of the caller's own Prefect profile that must not leak into the server or its clients.
_CLIENT_VARS = ("PREFECT_API_URL", "PREFECT_API_KEY", "PREFECT_API_AUTH_STRING", "PREFECT_PROFILE")


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


@dataclass
class PrefectServer:
    """A running server. ``env`` is what a client process (CLI, worker) needs to reach it."""

    api_url: str
    home: Path
    port: int
    auth_string: str | None = field(default=None, repr=False)
    log_path: Path | None = None
    start_seconds: float = 0.0
    process: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def ui_url(self) -> str:
        return self.api_url.removesuffix("/api")

    @property
    def env(self) -> dict[str, str]:
        """Environment variables for a Prefect client/worker subprocess talking to this server."""
        env = {"PREFECT_API_URL": self.api_url, "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
        if self.auth_string:
            env["PREFECT_API_AUTH_STRING"] = self.auth_string
        return env

    def client_env(self, base: dict[str, str] | None = None) -> dict[str, str]:
        """``base`` (default ``os.environ``) without the caller's Prefect credentials, plus :attr:`env`."""
        env = {k: v for k, v in (os.environ if base is None else base).items() if k not in _CLIENT_VARS}
        env.update(self.env)
        return env

    def is_running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout: float = 20.0) -> None:
        """Stop the server and its children (SIGTERM to its process group, SIGKILL after ``timeout``)."""
        proc, self.process = self.process, None
        if proc is None or proc.poll() is not None:
            return
        _signal_group(proc, signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _signal_group(proc, signal.SIGKILL)
            proc.wait(timeout=10)

    def __enter__(self) -> PrefectServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        try:
            proc.send_signal(sig)
        except ProcessLookupError:
            pass


def start_prefect_server(
    home: Path,
    *,
    port: int | None = None,
    host: str = "127.0.0.1",
    auth_string: str | None = None,
    ui: bool = True,
    extra_env: dict[str, str] | None = None,
    timeout: float = 120.0,
) -> PrefectServer:
    """Start ``prefect server start`` with ``PREFECT_HOME=home`` and wait until it is healthy.

    ``extra_env`` adds server settings (e.g. a faster scheduler loop for tests). Raises
    :class:`PrefectError` naming the log file when the server exits or is not healthy in time.
    """
    home = Path(home)
    home.mkdir(parents=True, exist_ok=True)
    port = port or free_port(host)
    api_url = f"http://{host}:{port}/api"
    log_path = home / "server.log"
    started = time.monotonic()
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            _server_command(host, port), env=_server_env(home, api_url, ui, auth_string, extra_env),
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
        )
    server = PrefectServer(api_url=api_url, home=home, port=port, auth_string=auth_string,
                           log_path=log_path, process=proc)
    _wait_until_healthy(server, deadline=started + timeout, timeout=timeout)
    server.start_seconds = time.monotonic() - started
    return server


def _server_env(home: Path, api_url: str, ui: bool, auth_string: str | None,
                extra_env: dict[str, str] | None) -> dict[str, str]:
    """The server's environment: ours without the caller's Prefect profile, plus its own settings."""
    env = {k: v for k, v in os.environ.items() if k not in _CLIENT_VARS}
    env.update(
        {
            "PREFECT_HOME": str(home),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_SERVER_UI_ENABLED": "true" if ui else "false",
            "PREFECT_API_URL": api_url,
            # The server's own services (scheduler…) call the API in-process; keep them quiet.
            "PREFECT_LOGGING_SERVER_LEVEL": "WARNING",
        }
    )
    if auth_string:
        env["PREFECT_SERVER_API_AUTH_STRING"] = auth_string
        env["PREFECT_API_AUTH_STRING"] = auth_string
    env.update(extra_env or {})
    return env


def _server_command(host: str, port: int) -> list[str]:
    """``prefect server start`` in the foreground, preferably from our own interpreter's venv."""
    prefect_bin = Path(sys.executable).with_name("prefect")
    return [str(prefect_bin) if prefect_bin.exists() else "prefect", "server", "start",
            "--host", host, "--port", str(port), "--analytics-off", "--no-background"]


def _wait_until_healthy(server: PrefectServer, *, deadline: float, timeout: float) -> None:
    """Poll ``GET /api/health`` until it answers 200; raise :class:`PrefectError` naming the log
    when the server exits first, or (after stopping it) when ``deadline`` passes."""
    proc, api_url, log_path = server.process, server.api_url, server.log_path
    headers = {"Authorization": basic_auth_header(server.auth_string)} if server.auth_string else {}
    while True:
        if proc.poll() is not None:
            raise PrefectError(
                f"prefect server exited with code {proc.returncode} while starting; see {log_path}: "
                + _tail(log_path)
            )
        try:
            response = httpx.get(f"{api_url}/health", headers=headers, timeout=2.0)
            if response.status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            server.stop()
            raise PrefectError(f"prefect server on {api_url} not healthy after {timeout:.0f} s; see {log_path}")
        time.sleep(0.25)


def _tail(path: Path, lines: int = 5) -> str:
    try:
        return " | ".join(path.read_text(errors="replace").strip().splitlines()[-lines:])
    except OSError:
        return ""
