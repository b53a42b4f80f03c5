"""Client of the local ESI server's admin API (fault injection, stats, reset)."""

from __future__ import annotations

from typing import Any

import requests


class EsiAdmin:
    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        resp = requests.request(method, f"{self.url}/_admin/{path}", json=body, timeout=10)
        resp.raise_for_status()
        return resp.json()

    def fault(self, **rule: Any) -> None:
        """Add one fault, e.g. ``fault(status=503, count=2)``, ``fault(page=7, region=R,
        status=502, count=None)``, ``fault(truncate="json")``, ``fault(delay=2.0)``,
        ``fault(page=3, tick=True)`` (the book is rebuilt as page 3 is asked)."""
        self._call("POST", "faults", rule)

    def clear_faults(self) -> None:
        self._call("DELETE", "faults")

    def configure(self, **config: Any) -> dict:
        return self._call("POST", "config", config)

    def drain(self, group: str | None = None) -> None:
        """Spend every token of a route group (or all), as another client on the same IP would."""
        self._call("POST", "drain", {"group": group} if group else {})

    def tick(self, orders_per_region: int | None = None) -> int:
        """Move the market on: the next order book version (new, changed and closed orders),
        optionally with a different number of orders (X-Pages changes)."""
        body = {} if orders_per_region is None else {"orders_per_region": orders_per_region}
        return self._call("POST", "tick", body)["version"]

    def stats(self) -> dict:
        return self._call("GET", "stats")

    def reset(self) -> None:
        self._call("POST", "reset")
