"""Bounded concurrent map for the sources: at most ``workers`` calls in flight and a small
window of queued work, so a list of 13k types never turns into 13k pending futures."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


def bounded_map(fn: Callable[[T], R], items: Iterable[T], workers: int) -> Iterator[R]:
    """Results in completion order. The first exception is raised at once; queued work is
    cancelled and the pool waits only for the calls already running."""
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="eveflow-fetch")
    it = iter(items)
    pending: set[Future] = set()
    try:
        for item in it:
            pending.add(pool.submit(fn, item))
            if len(pending) >= workers * 2:
                break
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                result = future.result()
                nxt = next(it, _END)
                if nxt is not _END:
                    pending.add(pool.submit(fn, nxt))
                yield result
    finally:
        for future in pending:
            future.cancel()
        pool.shutdown(wait=True, cancel_futures=True)


_END = object()
