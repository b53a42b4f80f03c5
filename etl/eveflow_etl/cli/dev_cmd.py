"""``eveflow dev …``: local stand-ins for development, tests and the demo."""

from __future__ import annotations

from typing import Optional

import typer

from eveflow_etl.cli.app import app, dev_app  # noqa: F401
from eveflow_etl.devservers.esi_limits import parse_rate_limit
from eveflow_etl.errors import ConfigError


@dev_app.command("esi-server")
def esi_server(
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on."),
    port: int = typer.Option(8088, "--port", help="Port to listen on (0: any free port)."),
    orders_per_region: int = typer.Option(5000, "--orders-per-region", min=0,
                                          help="Orders in each region's book (1000 a page; 300000 = 300 pages)."),
    types_per_region: int = typer.Option(40, "--types-per-region", min=1, help="Market types per region."),
    rate_limit: str = typer.Option("12000/15m", "--rate-limit",
                                   help="Token bucket per route group, tokens/window (s, m or h)."),
    error_limit: int = typer.Option(100, "--error-limit", min=1, help="Errors per window before 420."),
    error_window: float = typer.Option(60.0, "--error-window", help="Error-limit window in seconds."),
    orders_expires: float = typer.Option(300.0, "--orders-expires", help="Seconds an orders page stays fresh."),
    history_expires: Optional[float] = typer.Option(
        None, "--history-expires", help="Seconds history stays fresh (default: until 11:05 UTC)."),
    seed: int = typer.Option(20031, "--seed", help="Seed of the generated market."),
) -> None:
    """Serve ESI (/markets/… and /latest/markets/…), Mokaam (/API/market/…) and EVE Ref (/market-history/…) locally.

    Point eveflow at it with EVEFLOW_ESI_BASE_URL=http://HOST:PORT (or …/latest) and
    EVEFLOW_MOKAAM_BASE_URL / EVEFLOW_EVEREF_BASE_URL=http://HOST:PORT. Faults are injected with
    POST /_admin/faults, counters read with GET /_admin/stats.
    """
    # Imported here: the server (aiohttp, numpy) adds ~0.9 s to every `eveflow` start (`--help`).
    from eveflow_etl.devservers.esi_server import EsiServerConfig, serve_forever

    try:
        tokens, window = parse_rate_limit(rate_limit)
    except ValueError as exc:
        raise ConfigError(f"--rate-limit: {exc}") from None
    config = EsiServerConfig(seed=seed, types_per_region=types_per_region, orders_per_region=orders_per_region,
                             orders_expires_seconds=orders_expires, history_expires_seconds=history_expires,
                             error_limit=error_limit, error_window_seconds=error_window,
                             rate_limit_tokens=tokens, rate_window_seconds=window)
    typer.echo(f"local ESI, Mokaam and EVE Ref on http://{host}:{port} (ESI also under /latest); Ctrl-C stops")
    serve_forever(config, host, port)
