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

from .config import Config, load_config, require_signing
from .errors import ConfigError

EXIT_BAD_CONFIG = 2


def config_or_exit(path: str | Path, *, signing: bool = False) -> Config:
    """The validated config, or ``invalid config: FILE: KEY: VALUE why`` on
    stderr and :class:`typer.Exit` with code 2. ``signing``: the command signs
    or verifies records, so a key file is required unless
    ``security.allow_unsigned`` is true (:func:`~.config.require_signing`)."""
    try:
        cfg = load_config(path, env=os.environ)
        if signing:
            require_signing(cfg, str(path))
        return cfg
    except ConfigError as exc:
        typer.echo(f"invalid config: {exc}", err=True)
        raise typer.Exit(EXIT_BAD_CONFIG) from None
