"""Running the emulator: in a background thread with its own event loop, plus kubeconfig files."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from pathlib import Path
from typing import Any, Callable

import yaml

from .server import Emulator


def kubeconfig(url: str, namespace: str = "default") -> dict:
    """A kubeconfig for the emulator: plain http, a dummy bearer token, one context."""
    return {"apiVersion": "v1", "kind": "Config", "preferences": {},
            "clusters": [{"name": "emulator", "cluster": {"server": url}}],
            "users": [{"name": "emulator", "user": {"token": "emulator-token"}}],
            "contexts": [{"name": "emulator", "context": {
                "cluster": "emulator", "user": "emulator", "namespace": namespace}}],
            "current-context": "emulator"}


def write_kubeconfig(url: str, path: str | Path, namespace: str = "default") -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(kubeconfig(url, namespace), sort_keys=False))
    path.chmod(0o600)
    return path


class EmulatorThread:
    """The emulator served from a daemon thread; `start()` returns its URL."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, **kwargs: Any):
        self.host, self.port = host, port
        self.emulator = Emulator(**kwargs)
        self.loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready: concurrent.futures.Future = concurrent.futures.Future()

    @property
    def url(self) -> str:
        return self.emulator.url

    def start(self, timeout: float = 10.0) -> str:
        self._thread = threading.Thread(target=self._run, name="kube-emulator", daemon=True)
        self._thread.start()
        return self._ready.result(timeout)

    def _run(self) -> None:
        self.loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self.loop)
        try:
            url = self.loop.run_until_complete(self.emulator.start(self.host, self.port))
        except BaseException as e:  # noqa: BLE001 -- handed to the starting thread
            self._ready.set_exception(e)
            return
        self._ready.set_result(url)
        try:
            self.loop.run_forever()
        finally:
            self.loop.run_until_complete(self.emulator.stop())
            self.loop.close()

    def call(self, fn: Callable, *args: Any, timeout: float = 10.0) -> Any:
        """Run fn(*args) on the emulator's loop (direct store access from test code)."""
        assert self.loop is not None
        fut: concurrent.futures.Future = concurrent.futures.Future()

        def run() -> None:
            try:
                fut.set_result(fn(*args))
            except BaseException as e:  # noqa: BLE001
                fut.set_exception(e)
        self.loop.call_soon_threadsafe(run)
        return fut.result(timeout)

    def stop(self, timeout: float = 10.0) -> None:
        if self.loop is None or self._thread is None:
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout)
        self._thread = None
