"""On-disk cache of EVE Ref daily files, revalidated with ``If-None-Match`` / ``If-Modified-Since``.

Layout under the directory: ``<stem>.json`` (URL, ETag, Last-Modified, body name, size) and the
compressed body ``<stem>.<version>.csv.bz2``, where ``stem`` names the day's file and ``version``
hashes its validators. A download goes to a ``.part`` file and only becomes the cached body once
it has been read to the end (:meth:`EverefCache.commit`); the body is renamed into place before
the metadata that names it is replaced, so readers in other processes see either the old pair or
the new one, never a half-written file. A reader keeps the body open from :meth:`lookup` on, so a
concurrent replacement or eviction (which unlinks) cannot take it away mid-read.

The cache is bounded by ``max_bytes``: after each commit the least recently used days go first.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO
from urllib.parse import urlsplit

from eveflow_etl.esi.cache import _STALE_TEMP_SECONDS, atomic_write, evict, remove_file

log = logging.getLogger(__name__)

@dataclass
class CachedFile:
    url: str
    etag: str | None
    last_modified: str | None
    body: Path
    size: int
    handle: BinaryIO  # open on ``body``: the caller reads (and closes) it

    def conditional_headers(self) -> dict[str, str]:
        headers = {}
        if self.etag:
            headers["If-None-Match"] = self.etag
        if self.last_modified:
            headers["If-Modified-Since"] = self.last_modified
        return headers


class EverefCache:
    def __init__(self, directory: Path, max_bytes: int) -> None:
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        self.directory.mkdir(parents=True, exist_ok=True)

    @property
    def enabled(self) -> bool:
        return self.max_bytes > 0

    def _stem(self, url: str) -> str:
        # The file name keeps the cache readable; the hash keeps two base URLs apart.
        name = urlsplit(url).path.rsplit("/", 1)[-1].removesuffix(".csv.bz2") or "file"
        return f"{name}-{hashlib.sha256(url.encode()).hexdigest()[:12]}"

    def lookup(self, url: str) -> CachedFile | None:
        """The cached copy of ``url``, opened, or None (not cached, or a torn/missing pair)."""
        if not self.enabled:
            return None
        meta_path = self.directory / f"{self._stem(url)}.json"
        try:
            meta = json.loads(meta_path.read_text())
            body = self.directory / meta["body"]
            handle = open(body, "rb")  # noqa: SIM115 - handed to the caller
        except (OSError, ValueError, KeyError, TypeError):
            return None
        if meta.get("url") != url or os.fstat(handle.fileno()).st_size != meta.get("size"):
            handle.close()
            return None
        return CachedFile(url, meta.get("etag"), meta.get("last_modified"), body, meta["size"], handle)

    def touch(self, entry: CachedFile) -> None:
        """Mark ``entry`` as just used (eviction order; the age-based cache trim)."""
        now = time.time()
        for path in (entry.body, self.directory / f"{self._stem(entry.url)}.json"):
            try:
                os.utime(path, (now, now))
            except OSError:
                pass

    def forget(self, url: str) -> None:
        """Drop the cached copy of ``url`` (it turned out unreadable)."""
        stem = self._stem(url)
        remove_file(self.directory / f"{stem}.json")
        for body in self.directory.glob(f"{stem}.*.csv.bz2"):
            remove_file(body)

    def new_part(self, url: str) -> tuple[Path, BinaryIO]:
        prefix = f".{self._stem(url)}."
        try:
            fd, name = tempfile.mkstemp(dir=self.directory, prefix=prefix, suffix=".part")
        except FileNotFoundError:  # the maintenance trim removed the (empty) folder since __init__
            self.directory.mkdir(parents=True, exist_ok=True)
            fd, name = tempfile.mkstemp(dir=self.directory, prefix=prefix, suffix=".part")
        return Path(name), os.fdopen(fd, "wb")

    def commit(self, url: str, part: Path, etag: str | None, last_modified: str | None) -> None:
        """Make the fully read download ``part`` the cached copy of ``url`` (or drop it when the
        cache is off or the server gave no validator to revalidate with)."""
        if not self.enabled or not (etag or last_modified):
            remove_file(part)
            return
        stem = self._stem(url)
        version = hashlib.sha256(f"{etag}|{last_modified}".encode()).hexdigest()[:16]
        body = self.directory / f"{stem}.{version}.csv.bz2"
        os.replace(part, body)
        meta = {"url": url, "etag": etag, "last_modified": last_modified, "body": body.name,
                "size": body.stat().st_size}
        atomic_write(self.directory / f"{stem}.json", json.dumps(meta).encode())
        for old in self.directory.glob(f"{stem}.*.csv.bz2"):
            if old != body:
                remove_file(old)
        self.enforce_budget()

    def enforce_budget(self) -> None:
        """Evict least recently used days until the cache fits in ``max_bytes`` (the ESI cache's
        eviction: a day's ``<stem>.json`` and its body share the name up to the first dot, so they
        go together, and abandoned dot-named ``.part`` files go after an hour); first drop bodies
        no metadata names (a crash between the two renames of :meth:`commit`) once they are an
        hour old: a younger one may be another process's commit between its two renames."""
        named = set()
        for meta_path in self.directory.glob("*.json"):
            try:
                named.add(json.loads(meta_path.read_text())["body"])
            except (OSError, ValueError, KeyError, TypeError):
                remove_file(meta_path)
        cutoff = time.time() - _STALE_TEMP_SECONDS
        for body in self.directory.glob("*.csv.bz2"):
            if body.name not in named and _mtime(body) < cutoff:
                remove_file(body)
        result = evict(self.directory, max_bytes=self.max_bytes)
        if result.files_removed:
            log.info("EVE Ref cache %s: evicted %d files (%d bytes) to stay within %d bytes",
                     self.directory, result.files_removed, result.bytes_removed, self.max_bytes)


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return float("inf")  # gone meanwhile: nothing to discard
