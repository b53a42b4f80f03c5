"""Watch plumbing: the event log entries and one subscription's filtering."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Callable


@dataclass
class Event:
    rv: int
    key: tuple[str, str]
    type: str
    obj: dict
    old: dict | None = None


class Watch:
    """One watch subscription: a queue of raw events plus its namespace and selectors."""

    def __init__(self, key, namespace: str, labels: Callable, fields: Callable):
        self.key, self.namespace = key, namespace
        self.labels, self.fields = labels, fields
        self.queue: asyncio.Queue = asyncio.Queue()

    def matches(self, obj: dict | None) -> bool:
        if obj is None:
            return False
        md = obj.get("metadata") or {}
        if self.namespace and md.get("namespace") != self.namespace:
            return False
        return self.labels(md.get("labels") or {}) and self.fields(obj)

    def translate(self, ev: Event) -> tuple[str, dict] | None:
        """The event this watcher sees: objects moving in/out of its selector become ADDED/DELETED."""
        new_ok = self.matches(ev.obj)
        if ev.type != "MODIFIED":
            return (ev.type, ev.obj) if new_ok else None
        old_ok = self.matches(ev.old)
        if new_ok:
            return ("MODIFIED" if old_ok else "ADDED", ev.obj)
        return ("DELETED", ev.obj) if old_ok else None
