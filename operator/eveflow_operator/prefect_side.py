"""The reconciler's Prefect side: what a pass asks of Prefect, as a protocol.

:class:`PrefectSync` is the real one (the sync library); tests hand the
:class:`~eveflow_operator.reconcile.Reconciler` a fake, so every branch of a pass runs without
a Prefect server. The sync library writes nothing when Prefect already matches the spec.
"""

from __future__ import annotations

from typing import Protocol

from eveflow_etl.orchestration import sync
from eveflow_etl.orchestration.types import DeleteResult, PrefectConnection, SyncResult
from eveflow_etl.spec import EvePipeline


class PipelineSync(Protocol):
    async def sync(self, pipeline: EvePipeline, conn: PrefectConnection, *, namespace: str) -> SyncResult:
        """Bring the pool, deployments and schedules in line with ``pipeline``; raises the
        ``Prefect*`` errors of :mod:`eveflow_etl.orchestration.types`."""
        ...

    async def delete(self, pipeline: EvePipeline, conn: PrefectConnection, *, namespace: str) -> DeleteResult:
        """Remove what ``pipeline`` put in Prefect (as its deletionPolicy says)."""
        ...


class PrefectSync:
    """The sync library, as the operator runs it."""

    async def sync(self, pipeline: EvePipeline, conn: PrefectConnection, *, namespace: str) -> SyncResult:
        return await sync.sync_pipeline(pipeline, conn, namespace=namespace)

    async def delete(self, pipeline: EvePipeline, conn: PrefectConnection, *, namespace: str) -> DeleteResult:
        return await sync.delete_pipeline(pipeline, conn, namespace=namespace)
