"""Logging: structlog and stdlib (kafka-python) lines through one pipeline."""

from __future__ import annotations

import io
import json
import logging
from datetime import datetime, timedelta, timezone
from typing import Iterator

import pytest
import structlog

from stopwise.daemon.logs import configure_logging, resolve_format


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    saved = structlog.get_config()
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    kafka_level = logging.getLogger("kafka").level
    yield
    structlog.configure(**saved)
    for h in list(root.handlers):
        if h not in handlers:
            root.removeHandler(h)
    root.setLevel(level)
    logging.getLogger("kafka").setLevel(kafka_level)
    structlog.contextvars.clear_contextvars()


def lines(buf: io.StringIO) -> list[str]:
    return [line for line in buf.getvalue().splitlines() if line.strip()]


def test_structlog_and_kafka_lines_are_the_same_json() -> None:
    buf = io.StringIO()
    configure_logging("json", "INFO", stream=buf)
    structlog.get_logger("stopwise.shell.runner").info("batch processed", records=12)
    logging.getLogger("kafka.conn").warning("<BrokerConnection node_id=%s>: reconnecting", 1)
    out = [json.loads(line) for line in lines(buf)]
    assert len(out) == 2
    ours, theirs = out
    required = {"event", "level", "timestamp", "logger"}
    assert required <= set(ours) and required <= set(theirs)
    assert (ours["event"], ours["level"], ours["logger"], ours["records"]) == (
        "batch processed", "info", "stopwise.shell.runner", 12)
    assert (theirs["event"], theirs["level"], theirs["logger"]) == (
        "<BrokerConnection node_id=1>: reconnecting", "warning", "kafka.conn")
    for rec in out:
        assert list(rec)[:4] == ["timestamp", "level", "logger", "event"]  # readable in the journal
        assert rec["timestamp"].endswith("Z")
        ts = datetime.fromisoformat(rec["timestamp"])
        assert ts.utcoffset() == timedelta(0)
        assert abs(datetime.now(timezone.utc) - ts) < timedelta(minutes=1)


def test_kafka_loggers_default_to_warning() -> None:
    buf = io.StringIO()
    configure_logging("json", "DEBUG", stream=buf)
    logging.getLogger("kafka.client").info("bootstrap succeeded")
    logging.getLogger("kafka.coordinator").debug("heartbeat")
    structlog.get_logger("stopwise.x").debug("ours at debug")
    logging.getLogger("kafka.client").error("broker gone")
    events = [json.loads(line)["event"] for line in lines(buf)]
    assert events == ["ours at debug", "broker gone"]

    buf2 = io.StringIO()
    configure_logging("json", "INFO", stream=buf2, kafka_level="INFO")
    logging.getLogger("kafka.client").info("bootstrap succeeded")
    assert [json.loads(line)["event"] for line in lines(buf2)] == ["bootstrap succeeded"]


def test_level_filtering() -> None:
    buf = io.StringIO()
    configure_logging("json", "WARNING", stream=buf)
    log = structlog.get_logger("stopwise.y")
    log.debug("no")
    log.info("no")
    log.warning("yes", n=1)
    log.error("yes too")
    logging.getLogger("kafka.conn").warning("kafka kept at the daemon level: shown")
    configure_logging("json", "ERROR", stream=buf)
    logging.getLogger("kafka.conn").warning("stricter daemon level wins: hidden")
    assert [json.loads(line)["event"] for line in lines(buf)] == [
        "yes", "yes too", "kafka kept at the daemon level: shown"]


def test_configure_twice_replaces_the_handler() -> None:
    first, second = io.StringIO(), io.StringIO()
    log = structlog.get_logger("stopwise.z")  # created before the second configure
    configure_logging("json", "INFO", stream=first)
    configure_logging("json", "INFO", stream=second)
    log.info("once")
    logging.getLogger("kafka").warning("once too")
    assert first.getvalue() == ""
    assert [json.loads(line)["event"] for line in lines(second)] == ["once", "once too"]


def test_console_renderer() -> None:
    buf = io.StringIO()
    configure_logging("console", "INFO", stream=buf)
    structlog.get_logger("stopwise.c").info("published", context="task=qa", threshold=0.9)
    logging.getLogger("kafka.conn").warning("slow broker")
    out = lines(buf)
    assert len(out) == 2
    assert "published" in out[0] and "context='task=qa'" in out[0] and "threshold=0.9" in out[0]
    assert "slow broker" in out[1] and "kafka.conn" in out[1]
    with pytest.raises(json.JSONDecodeError):
        json.loads(out[0])
    assert "\x1b[" not in buf.getvalue()  # not a TTY: no colours


def test_exceptions_and_context_in_json() -> None:
    buf = io.StringIO()
    configure_logging("json", "INFO", stream=buf)
    structlog.contextvars.bind_contextvars(instance="i-1")
    try:
        raise ValueError("bad record")
    except ValueError:
        structlog.get_logger("stopwise.e").exception("decode failed")
        logging.getLogger("kafka.x").exception("kafka failed")
    a, b = (json.loads(line) for line in lines(buf))
    assert a["instance"] == "i-1" and "ValueError: bad record" in a["exception"]
    assert "ValueError: bad record" in b["exception"] and b["level"] == "error"


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_resolve_format() -> None:
    assert resolve_format("auto", env={}, stream=io.StringIO()) == "json"
    assert resolve_format("auto", env={}, stream=_Tty()) == "console"
    assert resolve_format("auto", env={"JOURNAL_STREAM": "8:123"}, stream=_Tty()) == "json"
    assert resolve_format("auto", env={"INVOCATION_ID": "abc"}, stream=_Tty()) == "json"
    assert resolve_format("console", env={"INVOCATION_ID": "abc"}) == "console"
    with pytest.raises(ValueError, match="logging format 'xml'"):
        resolve_format("xml")
    with pytest.raises(ValueError, match="logging level 'LOUD'"):
        configure_logging("json", "LOUD", stream=io.StringIO())


def test_auto_on_a_tty_is_console() -> None:
    tty = _Tty()
    configure_logging("auto", "INFO", stream=tty)
    structlog.get_logger("stopwise.t").info("hello tty")
    out = lines(tty)
    assert len(out) == 1 and "hello tty" in out[0] and not out[0].startswith("{")
