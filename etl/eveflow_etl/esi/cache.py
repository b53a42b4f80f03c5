"""On-disk HTTP cache keyed by URL: body plus the validators ESI sends (ETag, Expires,
Last-Modified, X-Pages). Writes are atomic (temp file + rename), so threads and processes
sharing a cache directory never read half an entry.

The cache holds at most ``max_bytes``: a write that takes it over evicts the least recently used
entries (an entry's metadata file's mtime is its last use: set on every store, 304 refresh and
hit) down to 90 % of the budget, so eviction scans are rare. Entries used inside
:meth:`DiskCache.pinned` are kept meanwhile: an order book pull revalidates its own pages when
ESI rebuilt the book mid-pull, and evicting them would turn those 304s into full downloads. The
pinned pages may take the cache over budget until the pull ends. :func:`evict` is also the
maintenance flow's age-based trim.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

_LOW_WATER = 0.9
# A temp file this old belongs to a writer that died mid-write.
_STALE_TEMP_SECONDS = 3600


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


@dataclass
class Eviction:
    files_removed: int = 0
    bytes_removed: int = 0
    bytes_kept: int = 0  # what is left on disk, temp files of live writers included


@dataclass
class _Budget:
    """One per cache directory in this process, shared by every client using it."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    used: int | None = None  # bytes on disk at the last scan plus what was written since
    pins: list[float] = field(default_factory=list)  # start times of open pinned() scopes
    stuck: bool = False  # pinned entries alone exceed the budget: no rescans until a pin ends


_BUDGETS: dict[Path, _Budget] = {}
_BUDGETS_LOCK = threading.Lock()


def _budget_of(directory: Path) -> _Budget:
    with _BUDGETS_LOCK:
        return _BUDGETS.setdefault(directory.resolve(), _Budget())


class DiskCache:
    def __init__(self, directory: Path, max_bytes: int | None = None) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.max_bytes = max_bytes
        self._budget = _budget_of(self.directory)

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
            return None  # a torn pair (other writer mid-way, or evicted meanwhile) counts as a miss
        meta.pop("size", None)
        _mark_used(meta_path)
        return CacheEntry(body=body, **meta)

    def store(self, entry: CacheEntry) -> None:
        meta_path, body_path = self._paths(entry.url)
        before = _size(meta_path) + _size(body_path)
        meta = _meta_bytes(entry)
        atomic_write(body_path, entry.body)
        atomic_write(meta_path, meta)
        _mark_used(meta_path)
        self._grew(len(entry.body) + len(meta) - before)

    def touch(self, entry: CacheEntry) -> None:
        """Rewrite the metadata (after a 304 brought a new Expires). When the body was evicted
        since :meth:`load` (the 304 was for the copy in memory), the whole entry is written
        back, so the next run can revalidate again instead of downloading."""
        meta_path, body_path = self._paths(entry.url)
        if _size(body_path) != len(entry.body) or not body_path.exists():
            self.store(entry)
            return
        before = _size(meta_path)
        meta = _meta_bytes(entry)
        atomic_write(meta_path, meta)
        _mark_used(meta_path)
        self._grew(len(meta) - before)

    @contextmanager
    def pinned(self) -> Iterator[None]:
        """Entries this process uses while the block runs are not evicted until it ends."""
        budget = self._budget
        since = time.time()
        with budget.lock:
            budget.pins.append(since)
        try:
            yield
        finally:
            with budget.lock:
                budget.pins.remove(since)
                budget.stuck = False
            self._grew(0)  # give back what the pin let the cache overshoot

    def _grew(self, delta: int) -> None:
        if self.max_bytes is None:
            return
        budget = self._budget
        with budget.lock:
            if budget.used is None:
                budget.used = evict(self.directory).bytes_kept  # the first write counts what is there
            else:
                budget.used += delta
            if budget.used <= self.max_bytes or budget.stuck:
                return
            target = int(self.max_bytes * _LOW_WATER)
            result = evict(self.directory, max_bytes=target, keep_since=min(budget.pins, default=None))
            budget.used = result.bytes_kept
            budget.stuck = result.bytes_kept > self.max_bytes
        if result.files_removed:
            log.info("ESI cache %s: evicted %d files (%d bytes) to stay within %d bytes",
                     self.directory, result.files_removed, result.bytes_removed, self.max_bytes)


def evict(directory: Path, *, max_bytes: int | None = None, older_than: float | None = None,
          keep_since: float | None = None, remove_empty_dirs: bool = False) -> Eviction:
    """Remove whole entries under ``directory`` (the files of one folder that share a name up to
    its first dot, e.g. ``<key>.meta.json`` and ``<key>.body``; last used = their newest mtime):
    those last used before ``older_than`` (epoch seconds), then the least recently used until
    what is left fits in ``max_bytes``. Entries used at or after ``keep_since`` stay whatever
    the budget. Temp files older than an hour (a writer that died) go; younger ones belong to a
    live writer and stay. Files another process removes meanwhile are skipped."""
    directory = Path(directory)
    result = Eviction()
    if not directory.is_dir():
        return result
    now = time.time()
    entries: dict[tuple[str, str], list] = {}  # key → [last used, bytes, paths]
    for folder, _, names in os.walk(directory):
        for name in names:
            path = Path(folder, name)
            try:
                st = path.stat()
            except OSError:
                continue
            if name.startswith("."):
                if st.st_mtime < now - _STALE_TEMP_SECONDS and remove_file(path):
                    result.files_removed += 1
                    result.bytes_removed += st.st_size
                else:
                    result.bytes_kept += st.st_size
                continue
            entry = entries.setdefault((folder, name.split(".", 1)[0]), [0.0, 0, []])
            entry[0] = max(entry[0], st.st_mtime)
            entry[1] += st.st_size
            entry[2].append(path)
    kept = []
    for last_used, size, paths in sorted(entries.values(), key=lambda e: e[0]):
        if older_than is not None and last_used < older_than:
            _remove(paths, size, result)
        else:
            kept.append((last_used, size, paths))
    total = sum(size for _, size, _ in kept)
    if max_bytes is not None:
        for last_used, size, paths in kept:
            if total <= max_bytes or (keep_since is not None and last_used >= keep_since):
                break  # least recently used first: everything after is newer still
            _remove(paths, size, result)
            total -= size
    result.bytes_kept += total
    if remove_empty_dirs:
        for folder, dirs, names in os.walk(directory, topdown=False):
            if Path(folder) != directory and not dirs and not names:
                try:
                    os.rmdir(folder)
                except OSError:
                    pass  # a writer put a file in it meanwhile
    return result


def _remove(paths: list[Path], size: int, result: Eviction) -> None:
    for path in paths:
        if remove_file(path):
            result.files_removed += 1
    result.bytes_removed += size


def remove_file(path: Path) -> bool:
    """Unlink ``path``; False when another process removed it first."""
    try:
        path.unlink()
        return True
    except FileNotFoundError:
        return False


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _meta_bytes(entry: CacheEntry) -> bytes:
    meta = asdict(entry)
    del meta["body"]
    meta["size"] = len(entry.body)
    return json.dumps(meta).encode()


def _mark_used(meta_path: Path) -> None:
    # Explicit time.time(), the clock pinned() compares with (the kernel's may lag a tick).
    now = time.time()
    try:
        os.utime(meta_path, (now, now))
    except OSError:
        pass  # evicted meanwhile by another process: a later load misses


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a dot-named temp file and a rename: readers see the old file or the new one."""
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    except FileNotFoundError:  # first write to this folder, or the maintenance trim removed it
        path.parent.mkdir(parents=True, exist_ok=True)
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
