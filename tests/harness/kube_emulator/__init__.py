"""A Kubernetes API emulator served over real HTTP, for kopf, kubectl, the kubernetes client and
helm in tests (no cluster, no kube-apiserver binary here).

    from tests.harness.kube_emulator import EmulatorThread, write_kubeconfig
    emu = EmulatorThread(); url = emu.start(); write_kubeconfig(url, "kubeconfig")

or as a process: `python -m tests.harness.kube_emulator --port 8001 --kubeconfig-out kc.yaml`.
Admin endpoints for tests: GET/DELETE /_emulator/requests, GET /_emulator/objects,
GET /_emulator/state, PUT /_emulator/config.
"""

from .runner import EmulatorThread, kubeconfig, write_kubeconfig
from .server import Emulator

__all__ = ["Emulator", "EmulatorThread", "kubeconfig", "write_kubeconfig"]
