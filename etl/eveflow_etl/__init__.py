"""eveflow ETL engine: EVE market data sources, pandera validation, Postgres upserts."""

__version__ = "0.1.0"
