"""The ``--dsn`` / ``--dsn-file`` / ``EVEFLOW_DSN`` options shared by the commands that load.

A password on the command line is readable by every user of the machine (``ps``, /proc) and
lands in shell history: the DSN can come from a file (a mounted Secret) or the environment
instead, and a password given in argv gets a warning (that never repeats it).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Optional, Sequence

import typer

from eveflow_etl.errors import ConfigError

DsnOpt = typer.Option(None, "--dsn", envvar="EVEFLOW_DSN", show_envvar=True,
                      help="PostgreSQL DSN/URI (default: the local embedded server). Prefer --dsn-file or "
                           "EVEFLOW_DSN for one holding a password.")
DsnFileOpt = typer.Option(None, "--dsn-file", help="File holding the DSN (e.g. a mounted Secret).")


def pick_dsn(dsn: Optional[str], dsn_file: Optional[Path], argv: Sequence[str] | None = None) -> Optional[str]:
    """The DSN to use; warns on stderr when a password came on the command line."""
    argv = sys.argv if argv is None else argv
    if dsn_file is not None:
        if dsn and _given_in_argv(dsn, argv):
            raise ConfigError("give either --dsn or --dsn-file, not both")
        try:
            text = dsn_file.read_text().strip()
        except OSError as exc:
            raise ConfigError(f"--dsn-file {dsn_file}: cannot read it ({exc.strerror or type(exc).__name__})") from None
        if not text:
            raise ConfigError(f"--dsn-file {dsn_file} is empty: write the DSN into it")
        return text
    if dsn and _given_in_argv(dsn, argv) and has_password(dsn):
        typer.echo("warning: the --dsn on the command line holds a password, which other users of this machine "
                   "can read in the process list; use --dsn-file or EVEFLOW_DSN", err=True)
    return dsn


def has_password(dsn: str) -> bool:
    if re.match(r"^\w+://[^/?#@]*:[^/?#@]*@", dsn):
        return True
    return re.search(r"(^|\s)password\s*=", dsn) is not None


def _given_in_argv(dsn: str, argv: Sequence[str]) -> bool:
    return any(arg == dsn or arg == f"--dsn={dsn}" for arg in argv)
