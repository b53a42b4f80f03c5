"""Bounds on what a server sends: body bytes, decompressed bytes, and a total time per request.

A server's headers and bodies are input like any other: a 10 GB body, a bz2 bomb or a server
trickling one byte a second must end the request with a clear error, not fill the disk, the
memory or the run's whole time budget.
"""

from __future__ import annotations

import time
from typing import BinaryIO

from eveflow_etl.errors import SourceError

_BLOCK = 1 << 16


class TooLarge(SourceError):
    """A body (or what it decompresses to) passed its byte limit."""


class TooSlow(Exception):
    """A request passed its total time (connect + every read), though each read was in time."""


def declared_length(headers) -> int | None:
    value = headers.get("Content-Length")
    text = None if value is None else str(value).strip()
    # isascii: str.isdigit also takes "²", which int() refuses (a hostile header must not crash the pull).
    return int(text) if text and text.isascii() and text.isdigit() else None


def read_body(resp, *, max_bytes: int, deadline: float, what: str, setting: str) -> bytes:
    """The whole body of a streamed ``requests`` response, decoded, within ``max_bytes`` bytes
    and by ``deadline`` (``time.monotonic()``). Raises :class:`TooLarge` or :class:`TooSlow`."""
    declared = declared_length(resp.headers)
    if declared is not None and declared > max_bytes and "Content-Encoding" not in resp.headers:
        raise TooLarge(f"{what} announces {declared} bytes, more than {setting} ({max_bytes})")
    parts: list[bytes] = []
    size = 0
    for block in resp.iter_content(_BLOCK):
        size += len(block)
        if size > max_bytes:
            raise TooLarge(f"{what} sent more than {setting} ({max_bytes} bytes)")
        parts.append(block)
        if time.monotonic() > deadline:
            raise TooSlow(f"still sending after the total timeout ({size} bytes so far)")
    return b"".join(parts)


class CappedReader:
    """A read-only file over ``raw`` that raises :class:`TooLarge` past ``max_bytes`` read
    (wrap a decompressor with it: the limit is on what comes out, not what goes in)."""

    def __init__(self, raw: BinaryIO, max_bytes: int, what: str, setting: str) -> None:
        self._raw, self.max_bytes, self.what, self.setting = raw, max_bytes, what, setting
        self.read_bytes = 0

    def read(self, size: int = -1) -> bytes:
        want = self.max_bytes + 1 - self.read_bytes if size is None or size < 0 else size
        data = self._raw.read(max(0, min(want, self.max_bytes + 1 - self.read_bytes)) or 1)
        self.read_bytes += len(data)
        if self.read_bytes > self.max_bytes:
            raise TooLarge(f"{self.what} decompresses to more than {self.setting} ({self.max_bytes} bytes)")
        return data

    def readable(self) -> bool:
        return True

    def __iter__(self):
        return iter(self.readline, b"")

    def readline(self, size: int = -1) -> bytes:  # pandas' C parser reads blocks; kept for the python engine
        line = self._raw.readline(size)
        self.read_bytes += len(line)
        if self.read_bytes > self.max_bytes:
            raise TooLarge(f"{self.what} decompresses to more than {self.setting} ({self.max_bytes} bytes)")
        return line
