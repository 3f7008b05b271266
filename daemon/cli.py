"""The ``stopwise`` command line. Each area registers its commands from its
own module (``register(app)``), so this file only wires them together."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

from . import __version__

app = typer.Typer(
    name="stopwise",
    help="stopwise: tunes early-stopping thresholds for inference fleets from traffic and feedback.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.command("version")
def version() -> None:
    """Print the stopwise version."""
    typer.echo(__version__)


@app.command("check-config")
def check_config(file: Path = typer.Argument(..., help="YAML config file to validate")) -> None:
    """Validate a config file (with STOPWISE_<SECTION>__<KEY> overrides), its HMAC key file included
    (required unless security.allow_unsigned: true); exit 1 with file, key, value and why."""
    import os

    from .config import load_config, require_signing
    from .errors import ConfigError

    try:
        key = require_signing(load_config(file, env=os.environ), str(file))
    except ConfigError as exc:
        typer.echo(f"invalid: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"ok: {file}" + ("" if key else " (UNSIGNED: security.allow_unsigned is true)"))


@app.command("schemas")
def schemas(out: Path = typer.Option(None, "--out", help="write the JSON Schema files here instead of printing them")) -> None:
    """Print (or write) the JSON Schemas of the record contracts."""
    from .contracts import render_all

    rendered = render_all()
    if out is None:
        typer.echo(json.dumps({k: json.loads(v) for k, v in rendered.items()}, indent=2))
        return
    out.mkdir(parents=True, exist_ok=True)
    for name, text in rendered.items():
        (out / f"{name}.schema.json").write_text(text)
        typer.echo(f"wrote {out / f'{name}.schema.json'}")


def _register_all() -> None:
    from .kafka_broker import register as reg_broker
    from .shell.cli import register as reg_shell
    from .shell.topics import register as reg_topics
    from stopwise.clients.cli import register as reg_clients
    from stopwise.sim.cli import register as reg_sim

    for reg in (reg_broker, reg_topics, reg_shell, reg_clients, reg_sim):
        reg(app)


_register_all()


def main() -> None:
    """Console-script entry point: logs go to stderr (commands that know their
    config, like ``run``, reconfigure from it); results go to stdout."""
    from .logs import configure_logging

    configure_logging("auto", "WARNING", stream=sys.stderr)
    app(prog_name="stopwise")


if __name__ == "__main__":  # pragma: no cover
    main()
    sys.exit(0)
