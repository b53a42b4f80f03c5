"""The HTTP client for ESI and the other market sources: disk cache, limits, retries."""

from eveflow_etl.esi.client import EsiClient, EsiRequestError
from eveflow_etl.esi.response import ClientStats, EsiResponse

__all__ = ["ClientStats", "EsiClient", "EsiRequestError", "EsiResponse"]
