"""Loading the config at a command-line edge: the file plus the process's
``STOPWISE_<SECTION>__<KEY>`` overrides, or a clear message and exit 2.

>>> import typer
>>> try:
...     config_or_exit("/nonexistent/stopwise.yaml")
... except typer.Exit as e:
...     print(e.exit_code)
2
"""

from __future__ import annotations

import os
from pathlib import Path

import typer

from .config import Config, load_config
from .errors import ConfigError

EXIT_BAD_CONFIG = 2


def config_or_exit(path: str | Path) -> Config:
    """The validated config, or ``invalid config: FILE: KEY: VALUE why`` on
    stderr and :class:`typer.Exit` with code 2."""
    try:
        return load_config(path, env=os.environ)
    except ConfigError as exc:
        typer.echo(f"invalid config: {exc}", err=True)
        raise typer.Exit(EXIT_BAD_CONFIG) from None
