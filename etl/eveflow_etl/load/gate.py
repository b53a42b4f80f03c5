"""A commit gate: once its owner closes it, no run holding it commits again.

The Prefect flow runs regions in threads it may abandon at its time budget (Python cannot stop
a thread). Each load transaction of such a region ends inside ``gate.commit()``; the flow closes
the gate *before* it reports the region timed out. Closing waits for a commit already in
progress, so every commit happens before the report, and none after it.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from eveflow_etl.errors import EveflowError


class RunAbandoned(EveflowError):
    """The run's caller stopped waiting for it (time budget): nothing more may be committed."""


class CommitGate:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._closed = False

    def close(self) -> None:
        """No commit after this returns (one in progress finishes first)."""
        with self._lock:
            self._closed = True

    @property
    def closed(self) -> bool:
        return self._closed

    @contextmanager
    def commit(self, what: str) -> Iterator[None]:
        """Hold around a transaction: raises :class:`RunAbandoned` (so it rolls back) when closed."""
        with self._lock:
            if self._closed:
                raise RunAbandoned(f"{what}: the run was abandoned at its time budget; not committed")
            yield
