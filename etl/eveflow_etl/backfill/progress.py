"""Progress of a whole-region ESI history pull (``--types all``): types done and the ETA the
ESI budget implies.

ESI allows about 300 history requests a minute per IP and the client paces itself at
``esi_rate_per_second`` (5 by default, that budget), so a region's ~13k types take ~45 min
whatever the machine: the ETA is the requests left divided by that pace, not an extrapolation
of the speed so far (cache hits and 404s make the early speed meaningless).

The source reports through :func:`report`; a command that wants the figures wraps the pull in
:func:`listening` (the ETL's run loop itself is not involved).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TypesProgress:
    region_id: int
    done: int
    total: int
    rate_per_second: float  # the client's pace (settings.esi_rate_per_second)

    @property
    def eta_seconds(self) -> float:
        return max(self.total - self.done, 0) / self.rate_per_second

    def detail(self) -> str:
        minutes, seconds = divmod(round(self.eta_seconds), 60)
        return (f"types {self.done:,}/{self.total:,}, ETA {minutes}:{seconds:02d} "
                f"at {self.rate_per_second:g} req/s (the ESI budget)")

    def line(self) -> str:
        return f"region {self.region_id}: {self.detail()}"


Listener = Callable[[TypesProgress], None]
_listeners: list[Listener] = []


@contextlib.contextmanager
def listening(listener: Listener) -> Iterator[None]:
    _listeners.append(listener)
    try:
        yield
    finally:
        _listeners.remove(listener)


def report(progress: TypesProgress) -> None:
    for listener in list(_listeners):
        listener(progress)


def log_lines(every: float = 0.1) -> Listener:
    """A listener writing a log line at the start, every ``every`` of the types, and at the end."""
    last: dict[int, int] = {}

    def listener(p: TypesProgress) -> None:
        step = max(int(p.total * every), 1)
        if p.done in (0, p.total) or p.done - last.get(p.region_id, 0) >= step:
            last[p.region_id] = p.done
            log.info("ESI history %s", p.line())

    return listener
