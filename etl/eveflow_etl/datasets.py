"""The sources eveflow can pull and the dataset each one produces."""

from __future__ import annotations

from enum import StrEnum


class Dataset(StrEnum):
    HISTORY = "history"
    ORDERS = "orders"
    AGGREGATES = "aggregates"


class SourceKind(StrEnum):
    ESI_HISTORY = "esi-history"
    ESI_ORDERS = "esi-orders"
    MOKAAM = "mokaam"
    EVEREF = "everef"

    @property
    def dataset(self) -> Dataset:
        return _DATASET_OF_SOURCE[self]

    @property
    def default_table(self) -> str:
        return {
            Dataset.HISTORY: "market_history",
            Dataset.ORDERS: "market_orders",
            Dataset.AGGREGATES: "market_aggregates",
        }[self.dataset]


_DATASET_OF_SOURCE = {
    SourceKind.ESI_HISTORY: Dataset.HISTORY,
    SourceKind.EVEREF: Dataset.HISTORY,
    SourceKind.ESI_ORDERS: Dataset.ORDERS,
    SourceKind.MOKAAM: Dataset.AGGREGATES,
}

# Regions with a real market hub, used by the demo and as defaults in examples.
THE_FORGE = 10000002
DOMAIN = 10000043
SINQ_LAISON = 10000032
HEIMATAR = 10000030
METROPOLIS = 10000042
