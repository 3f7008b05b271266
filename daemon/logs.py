"""Logging: structlog configured once, stdlib logging through the same pipeline.

:func:`configure_logging` makes every log line, whether written with
``structlog.get_logger()`` or with a stdlib logger (kafka-python's ``kafka.*``
loggers), go through one :class:`structlog.stdlib.ProcessorFormatter` on one
handler of the root logger, so both come out in the same format: JSON lines
(``event``, ``level``, ``timestamp`` ISO-8601 UTC, ``logger``, plus the bound
keys) or structlog's console renderer. The kafka loggers are held at WARNING
(or the daemon's level if that is stricter) because kafka-python is chatty at
INFO. Calling it again replaces the previous setup (safe in tests).

Usage in ``main`` (see tests/test_logs.py for the JSON shape)::

    configure_logging(resolve_format(cfg.logging.format, os.environ), cfg.logging.level)

>>> resolve_format("auto", env={"INVOCATION_ID": "x"})
'json'
>>> resolve_format("console", env={"INVOCATION_ID": "x"})
'console'
"""

from __future__ import annotations

import logging
import os
import sys
from typing import IO, Any, Mapping

import structlog

FORMATS = ("auto", "json", "console")
KAFKA_LOGGERS = ("kafka",)
"""stdlib logger names held at ``kafka_level`` (children inherit)."""

_HANDLER_MARK = "_stopwise_handler"
_FIRST_KEYS = ("timestamp", "level", "logger", "event")


def order_keys(_logger: Any, _method: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """Processor: timestamp, level, logger, event first (easier to read in the journal).

    >>> list(order_keys(None, "info", {"n": 1, "event": "e", "level": "info", "timestamp": "t"}))
    ['timestamp', 'level', 'event', 'n']
    """
    head = {k: event_dict[k] for k in _FIRST_KEYS if k in event_dict}
    return head | {k: v for k, v in event_dict.items() if k not in head}


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except Exception:
        return False


def resolve_format(fmt: str = "auto", env: Mapping[str, str] | None = None, stream: Any = None) -> str:
    """Concrete renderer for ``fmt``: ``"json"`` or ``"console"``.

    ``"auto"`` is JSON under systemd (``$JOURNAL_STREAM`` or ``$INVOCATION_ID``
    set in ``env``), else console on a TTY, JSON otherwise.
    """
    if fmt not in FORMATS:
        raise ValueError(f"logging format {fmt!r}: expected one of {', '.join(FORMATS)}")
    if fmt != "auto":
        return fmt
    env = env if env is not None else {}
    if env.get("JOURNAL_STREAM") or env.get("INVOCATION_ID"):
        return "json"
    return "console" if _isatty(stream if stream is not None else sys.stderr) else "json"


def _level_no(level: str | int) -> int:
    if isinstance(level, int):
        return level
    value = logging.getLevelName(str(level).upper())
    if not isinstance(value, int):
        raise ValueError(f"logging level {level!r}: expected DEBUG, INFO, WARNING, ERROR or CRITICAL")
    return value


def configure_logging(fmt: str = "auto", level: str = "INFO", stream: IO[str] | None = None,
                      kafka_level: str = "WARNING") -> None:
    """Configure structlog and stdlib logging (see the module docstring).

    ``fmt``: ``"json"``, ``"console"`` or ``"auto"`` (console on a TTY, JSON
    otherwise; the caller passes ``"json"`` when running under systemd, or
    uses :func:`resolve_format` with ``os.environ``). ``stream`` defaults to
    ``sys.stderr``.
    """
    out = stream if stream is not None else sys.stderr
    kind = resolve_format(fmt, env={}, stream=out)
    level_no = _level_no(level)

    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.PositionalArgumentsFormatter(),
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
        structlog.processors.UnicodeDecoder(),
    ]
    final: list[Any]
    if kind == "json":
        final = [structlog.processors.format_exc_info, order_keys, structlog.processors.JSONRenderer(sort_keys=False)]
    else:
        # no locals in tracebacks: they could hold secrets (the HMAC key)
        final = [structlog.dev.ConsoleRenderer(colors=_isatty(out), exception_formatter=structlog.dev.plain_traceback)]

    structlog.configure(
        processors=[structlog.stdlib.filter_by_level, *shared,
                    structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        context_class=dict,
        # not cached: loggers created before (or between) calls follow the latest setup
        cache_logger_on_first_use=False,
    )

    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *final],
    )
    handler = logging.StreamHandler(out)
    handler.setFormatter(formatter)
    setattr(handler, _HANDLER_MARK, True)

    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, _HANDLER_MARK, False)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level_no)
    for name in KAFKA_LOGGERS:
        logging.getLogger(name).setLevel(max(_level_no(kafka_level), level_no))


def configure_from_config(cfg: Any, env: Mapping[str, str] | None = None, stream: IO[str] | None = None,
                          level: str | None = None) -> None:
    """Convenience for ``main``: ``cfg.logging.format/level``, JSON under systemd.

    ``env`` defaults to ``os.environ`` (this is meant for the edge only);
    ``level`` overrides the configured level (e.g. a CLI's ``--quiet``).
    """
    env = os.environ if env is None else env
    fmt = resolve_format(cfg.logging.format, env=env, stream=stream if stream is not None else sys.stderr)
    configure_logging(fmt, level or cfg.logging.level, stream=stream)


class _Stderr:
    """Resolves ``sys.stderr`` at write time (test runners swap it)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def cli_logging_to_stderr() -> None:
    """CLI commands print only their result on stdout: logs go to stderr
    (through the same pipeline as the daemon's)."""
    configure_logging("console", "INFO", stream=_Stderr())  # type: ignore[arg-type]
