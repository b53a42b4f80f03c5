"""On-disk HTTP cache keyed by URL: body plus the validators ESI sends (ETag, Expires,
Last-Modified, X-Pages). Writes are atomic (temp file + rename), so threads and processes
sharing a cache directory never read half an entry."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass
class CacheEntry:
    url: str
    etag: str | None
    expires: float | None  # epoch seconds
    last_modified: str | None
    pages: int | None
    body: bytes = b""

    def fresh(self, now: float) -> bool:
        """ESI asks clients not to ask again before ``Expires``."""
        return self.expires is not None and now < self.expires


class DiskCache:
    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)

    def _paths(self, url: str) -> tuple[Path, Path]:
        key = hashlib.sha256(url.encode()).hexdigest()
        folder = self.directory / key[:2]
        return folder / f"{key}.meta.json", folder / f"{key}.body"

    def load(self, url: str) -> CacheEntry | None:
        meta_path, body_path = self._paths(url)
        try:
            meta = json.loads(meta_path.read_text())
            body = body_path.read_bytes()
        except (OSError, ValueError):
            return None
        if meta.get("url") != url or meta.get("size") != len(body):
            return None  # a torn pair (other writer mid-way) counts as a miss
        meta.pop("size", None)
        return CacheEntry(body=body, **meta)

    def store(self, entry: CacheEntry) -> None:
        meta_path, body_path = self._paths(entry.url)
        meta_path.parent.mkdir(parents=True, exist_ok=True)
        meta = asdict(entry)
        del meta["body"]
        meta["size"] = len(entry.body)
        _atomic_write(body_path, entry.body)
        _atomic_write(meta_path, json.dumps(meta).encode())

    def touch(self, entry: CacheEntry) -> None:
        """Rewrite only the metadata (after a 304 brought a new Expires)."""
        meta_path, _ = self._paths(entry.url)
        meta = asdict(entry)
        del meta["body"]
        meta["size"] = len(entry.body)
        _atomic_write(meta_path, json.dumps(meta).encode())


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
