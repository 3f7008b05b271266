"""``stopwise run`` (the daemon) and ``stopwise kill-switch on|off``.

This is the edge: it reads the environment ($NOTIFY_SOCKET,
STOPWISE_* overrides), configures logging once, serves metrics and installs
the signal handlers; everything below receives the Config.
"""

from __future__ import annotations

import os
from enum import Enum
from pathlib import Path

import typer


class Switch(str, Enum):
    on = "on"
    off = "off"


def run_daemon(config_file: Path) -> int:
    """Build the daemon from a config file and run it until SIGTERM/SIGINT."""
    from ..cliconfig import config_or_exit
    from ..logs import configure_from_config
    from ..metrics import Metrics
    from ..sdnotify import Notifier
    from .runner import Daemon, tune_gc

    cfg = config_or_exit(config_file, signing=True)
    configure_from_config(cfg, env=os.environ)
    metrics = Metrics()
    if cfg.metrics.enabled:
        import structlog

        port = metrics.serve(cfg.metrics.host, cfg.metrics.port)
        structlog.get_logger("stopwise.cli").info("metrics_serving", host=cfg.metrics.host, port=port)
    daemon = Daemon(cfg, config_path=config_file, env=dict(os.environ), metrics=metrics,
                    notifier=Notifier(os.environ.get("NOTIFY_SOCKET")))
    daemon.install_signal_handlers()
    tune_gc()
    try:
        return daemon.run()
    finally:
        metrics.close()


def register(app: typer.Typer) -> None:
    @app.command("run")
    def run(config: Path = typer.Option(..., "--config", "-c", help="YAML config file")) -> None:
        """Run the daemon: join, learn, decide, publish (SIGTERM stops cleanly, SIGHUP reloads the config)."""
        raise typer.Exit(run_daemon(config))

    @app.command("kill-switch")
    def kill_switch(state: Switch = typer.Argument(..., help="on: publish 'no early stopping' everywhere; off: resume"),
                    config: Path = typer.Option(..., "--config", "-c", help="YAML config file")) -> None:
        """Turn the kill switch on or off: a signed control record the daemon applies within one tick
        ('on' also publishes threshold 1.0 for every known context right away)."""
        from ..cliconfig import config_or_exit
        from .control import apply_kill_switch

        cfg = config_or_exit(config, signing=True)
        out = apply_kill_switch(cfg, state is Switch.on)
        typer.echo(f"kill switch {state.value}: control record written; "
                   f"{len(out['contexts'])} context(s) set to no early stopping")
