"""Batches pulled before loading: the whole network pull ends before any transaction opens.

A run pulls every batch to a private temp directory (one pickle a batch; only one batch is in
memory at a time, so the RSS bound of a streaming run holds), then loads them one short
transaction each. The directory is ``mkdtemp``'s (mode 0700, unpredictable name) and is removed
when the spool closes.
"""

from __future__ import annotations

import os
import pickle
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


class Spool:
    """Append batches, then read them back in order, as often as needed, until closed."""

    def __init__(self, parent: Path | None = None) -> None:
        if parent is not None:
            parent.mkdir(parents=True, exist_ok=True)
        self.directory = Path(tempfile.mkdtemp(prefix="eveflow-spool-", dir=parent))
        self._paths: list[Path] = []
        self.rows = 0

    def add(self, batch) -> None:
        path = self.directory / f"{len(self._paths):06d}.pickle"
        # O_EXCL: never write through a file (or symlink) someone else put there.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            pickle.dump(batch, out, protocol=pickle.HIGHEST_PROTOCOL)
        self._paths.append(path)
        self.rows += len(batch.frame)

    def __len__(self) -> int:
        return len(self._paths)

    def __iter__(self) -> Iterator:
        for path in self._paths:
            with open(path, "rb") as src:
                batch = pickle.load(src)  # noqa: S301 - our own file, in our own 0700 directory
            yield batch

    def close(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> Spool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
