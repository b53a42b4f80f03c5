"""What ``eveflow demo`` prints: rich on a terminal, plain lines otherwise (CI, pipes, logs).

The last line is always a ``result:`` line of ``key=value`` pairs, for scripts and tests.
"""

from __future__ import annotations

import contextlib
import shlex
import sys
from typing import TYPE_CHECKING, Any, Iterator

from eveflow_etl.orchestration.summary import COUNT_FIELDS, TOTAL_ROW
from eveflow_etl.plan import pipeline_plan

if TYPE_CHECKING:
    from eveflow_etl.orchestration.demo import DemoResult
    from eveflow_etl.spec import EvePipeline


def psql_command(dsn: str, pipeline: EvePipeline) -> str:
    """A ``psql`` command line on the demo's table; the connection string carries no password."""
    # psycopg and rich are imported on use: the CLI imports this module at every `eveflow` start
    # (`--help` too), where psycopg would add ~50 ms and rich ~30 ms.
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    params = {k: v for k, v in conninfo_to_dict(dsn).items() if k != "password" and v not in (None, "")}
    table = pipeline_plan(pipeline).qualified_table
    query = (f"SELECT region_id, count(*) AS rows, min(date) AS first_day, max(date) AS last_day "
             f"FROM {table} GROUP BY 1 ORDER BY 1")
    return f"psql {shlex.quote(make_conninfo(**params))} -c {shlex.quote(query)}"


class Reporter:
    """Progress and results; ``rich`` when ``tty`` (default: stdout is a terminal)."""

    def __init__(self, tty: bool | None = None):
        self.tty = sys.stdout.isatty() if tty is None else tty
        self._console = None
        if self.tty:
            from rich.console import Console

            self._console = Console()

    def step(self, text: str) -> None:
        if self._console:
            self._console.print(f"[green]✓[/green] {text}", highlight=False)
        else:
            print(f"- {text}", flush=True)

    @contextlib.contextmanager
    def waiting(self, text: str) -> Iterator[None]:
        if self._console:
            with self._console.status(text):
                yield
        else:
            print(f"- {text} …", flush=True)
            yield

    @contextlib.contextmanager
    def progress(self, regions: int) -> Iterator[Any]:
        if self._console:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn

            with Progress(SpinnerColumn(), TextColumn("flow run: {task.description}"), BarColumn(),
                          MofNCompleteColumn(), TextColumn("regions"), console=self._console) as bar:
                task = bar.add_task("Scheduled", total=regions)
                yield _RichProgress(bar, task)
        else:
            yield _PlainProgress(regions)

    def result(self, pipeline: EvePipeline, result: DemoResult, ui_url: str, psql: str, *, keep: bool,
               seconds: float) -> None:
        table = pipeline_plan(pipeline).qualified_table
        per_region = [r for r in result.rows if r.get("region") != TOTAL_ROW]
        total = next((r for r in result.rows if r.get("region") == TOTAL_ROW), None) or {k: 0 for k in COUNT_FIELDS}
        header = ["region", "status", *COUNT_FIELDS, "in db"]
        lines = [[str(r.get("region")), str(r.get("status")), *(str(r.get(k, 0)) for k in COUNT_FIELDS),
                  str(result.table_rows.get(int(r["region"]), 0))] for r in per_region]
        in_table = sum(result.table_rows.values())
        loaded = int(total.get("inserted", 0)) + int(total.get("updated", 0))
        if self._console:
            from rich import box
            from rich.table import Table

            grid = Table(title=f"flow run {result.flow_run_id}: {result.state}", box=box.SIMPLE_HEAD,
                         padding=(0, 1), collapse_padding=True, show_edge=False, pad_edge=False)
            for i, name in enumerate(header):
                grid.add_column(name, justify="left" if i < 2 else "right", no_wrap=True)
            for line in lines:
                grid.add_row(*line)
            self._console.print(grid)
        else:
            print(f"flow run {result.flow_run_id}: {result.state}")
            widths = [max(len(h), *(len(line[i]) for line in lines)) if lines else len(h) for i, h in enumerate(header)]
            for line in [header, *lines]:
                print("  " + "  ".join(cell.rjust(w) if i >= 2 else cell.ljust(w) for i, (cell, w) in enumerate(zip(line, widths))))
        print(f"rows loaded this run: {loaded} ({total.get('inserted', 0)} new, {total.get('updated', 0)} updated, "
              f"{total.get('unchanged', 0)} unchanged, {total.get('quarantined', 0)} quarantined); "
              f"{in_table} rows in {table}")
        print(f"Prefect UI: {ui_url}" + ("" if keep else " (stopped when the demo ends; --keep leaves it running)"))
        print(f"look at the data{'' if keep else ' (with --keep)'}: {psql}")
        print(f"demo took {seconds:.0f} s")
        pairs = {"run": result.flow_run_id, "state": result.state, "deployment": result.deployment_id,
                 "sync_writes": result.sync_writes, "loaded": loaded,
                 **{k: int(total.get(k, 0)) for k in COUNT_FIELDS}, "table_rows": in_table}
        print("result: " + " ".join(f"{k}={v}" for k, v in pairs.items()), flush=True)


class _RichProgress:
    def __init__(self, bar, task):
        self.bar, self.task = bar, task

    def update(self, state: str, done: int) -> None:
        self.bar.update(self.task, description=state, completed=done)


class _PlainProgress:
    def __init__(self, regions: int):
        self.regions, self.last = regions, None

    def update(self, state: str, done: int) -> None:
        if (state, done) != self.last:
            self.last = (state, done)
            print(f"- flow run {state}: {done}/{self.regions} regions done", flush=True)
