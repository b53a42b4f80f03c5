"""What the client hands back (:class:`EsiResponse`), what it counts (:class:`ClientStats`), and
the header readers both share."""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any


@dataclass
class EsiResponse:
    url: str
    status: int
    body: bytes
    headers: Mapping[str, str]
    from_cache: bool = False
    pages: int | None = None
    # The build the body belongs to (ESI: all pages of one order book build share it), whether
    # it came from the network, a 304 or the disk cache.
    last_modified: str | None = None
    _data: Any = field(default=None, repr=False)

    def json(self) -> Any:
        if self._data is None:
            self._data = json.loads(self.body)
        return self._data

    def error_text(self) -> str:
        try:
            return str(self.json().get("error") or self.body[:200].decode(errors="replace"))
        except (ValueError, AttributeError):
            return self.body[:200].decode(errors="replace")


@dataclass
class ClientStats:
    requests: int = 0  # sent over the network
    cache_hits: int = 0  # answered from disk before Expires, nothing sent
    not_modified: int = 0  # 304s
    body_bytes: int = 0  # response body bytes downloaded
    error_limited: int = 0  # 420s
    rate_limited: int = 0  # 429s
    retries: int = 0
    server_errors: int = 0  # 5xx
    client_errors: int = 0  # other 4xx, handed to the caller
    transport_errors: int = 0  # timeouts, refused, truncated
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, **counts: int) -> None:
        with self._lock:
            for name, value in counts.items():
                setattr(self, name, getattr(self, name) + value)

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return {k: v for k, v in vars(self).items() if not k.startswith("_")}


def expires_of(headers: Mapping[str, str]) -> float | None:
    try:
        return parsedate_to_datetime(headers["Expires"]).timestamp()
    except (KeyError, TypeError, ValueError, IndexError):
        return None


def pages_of(headers: Mapping[str, str]) -> int | None:
    try:
        return int(headers["X-Pages"])
    except (KeyError, ValueError):
        return None
