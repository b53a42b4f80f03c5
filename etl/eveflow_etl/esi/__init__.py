"""The HTTP client for ESI and the other market sources: disk cache, limits, retries."""

from eveflow_etl.esi.client import ClientStats, EsiClient, EsiRequestError, EsiResponse

__all__ = ["ClientStats", "EsiClient", "EsiRequestError", "EsiResponse"]
