"""``eveflow etl backfill``: every day of EVE Ref's archive, resumable, verified and pipelined.

- :mod:`.days` parses and checks the date range;
- :mod:`.state` is the per-day ledger (``<schema>.everef_days``) that makes a backfill resumable;
- :mod:`.prepare` turns one day's file into rows ready to COPY (download, bz2, CSV, validation,
  binary encoding) in a worker of a bounded pool;
- :mod:`.loader` commits one day per transaction;
- :mod:`.runner` plans the days and drives the pool and the loader.
"""

from eveflow_etl.backfill.runner import BackfillOptions, BackfillReport, DayResult, run_backfill

__all__ = ["BackfillOptions", "BackfillReport", "DayResult", "run_backfill"]
