"""`python -m tests.harness.kube_emulator --port P [--kubeconfig-out FILE]`."""

from __future__ import annotations

import argparse
import asyncio
import signal

from .runner import write_kubeconfig
from .server import Emulator


async def _serve(args: argparse.Namespace) -> None:
    emulator = Emulator()
    url = await emulator.start(args.host, args.port)
    if args.kubeconfig_out:
        write_kubeconfig(url, args.kubeconfig_out, args.namespace)
    print(url, flush=True)
    done = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, done.set)
    await done.wait()
    await emulator.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.harness.kube_emulator",
                                     description="Serve a Kubernetes API emulator over HTTP.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--kubeconfig-out", help="write a kubeconfig for the emulator here")
    parser.add_argument("--namespace", default="default", help="the kubeconfig's namespace")
    asyncio.run(_serve(parser.parse_args(argv)))


if __name__ == "__main__":
    main()
