"""Create the topics of DESIGN section 2 with the right configs.

The plan (:func:`topic_specs`) is pure; :func:`create_topics` applies it to a
cluster idempotently and refuses input topics that are not co-partitioned.

>>> from stopwise.daemon.config import Config
>>> specs = {s.name: s for s in topic_specs(Config())}
>>> specs["stopwise.thresholds"].configs["cleanup.policy"], specs["stopwise.inference"].partitions
('compact', 3)
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import structlog

from ..config import Config
from ..errors import StopwiseError, TopicsError
from .kafka_io import client_kwargs

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class TopicSpec:
    """One topic to create: name, partition count, topic configs."""

    name: str
    role: str
    partitions: int
    configs: dict[str, str] = field(default_factory=dict)


@dataclass
class TopicsReport:
    """What :func:`create_topics` did."""

    created: list[str] = field(default_factory=list)
    existing: list[str] = field(default_factory=list)


def topic_specs(cfg: Config) -> list[TopicSpec]:
    """Every stopwise topic with its partitions and configs (no I/O)."""
    t = cfg.topics
    delete = {"cleanup.policy": "delete", "retention.ms": str(t.retention_ms)}
    compact = {
        "cleanup.policy": "compact",
        "min.cleanable.dirty.ratio": repr(float(t.compaction_dirty_ratio)),
        "segment.ms": str(t.compaction_segment_ms),
        "min.compaction.lag.ms": str(t.compaction_lag_ms),
        "delete.retention.ms": str(t.tombstone_retention_ms),
    }
    return [
        TopicSpec(t.inference, "inference", t.input_partitions, dict(delete)),
        TopicSpec(t.feedback, "feedback", t.input_partitions, dict(delete)),
        TopicSpec(t.examples, "examples", t.examples_partitions, dict(delete)),
        TopicSpec(t.thresholds, "thresholds", 1, dict(compact)),
        TopicSpec(t.decisions, "decisions", 1, dict(delete)),
        TopicSpec(t.state, "state", 1, {**compact, "max.message.bytes": str(t.state_max_message_bytes)}),
        TopicSpec(t.dlq, "dlq", 1, dict(delete)),
    ]


def admin_client(cfg: Config, **overrides: Any):
    """A kafka-python ``KafkaAdminClient`` for ``cfg.kafka`` (caller closes it)."""
    from kafka import KafkaAdminClient

    k = cfg.kafka
    opts: dict[str, Any] = client_kwargs(cfg) | {"client_id": f"{k.client_id}-admin",
                                                 "bootstrap_timeout_ms": k.request_timeout_ms}
    opts.update(overrides)
    return KafkaAdminClient(**opts)


@contextlib.contextmanager
def _admin(cfg: Config, admin: Any) -> Iterator[Any]:
    if admin is not None:
        yield admin
        return
    try:
        client = admin_client(cfg)
    except Exception as exc:  # NoBrokersAvailable and friends
        raise TopicsError(f"cannot reach Kafka at {cfg.kafka.bootstrap}: {exc!r}") from None
    try:
        yield client
    finally:
        client.close()


def partition_counts(cfg: Config, admin: Any = None, timeout_s: float = 30.0,
                     expect_all: bool = False) -> dict[str, int | None]:
    """Partition count of each configured topic; ``None`` if it does not exist.

    A topic created a moment ago may be listed before its metadata is
    complete; counts are read only once every partition has a leader.
    ``expect_all`` waits for every topic to appear (after creating them)."""
    names = [s.name for s in topic_specs(cfg)]
    with _admin(cfg, admin) as client:
        present = set(names) if expect_all else set(client.list_topics())
        out: dict[str, int | None] = {n: None for n in names}
        wanted = [n for n in names if n in present]
        if wanted:
            _wait_ready(client, wanted, timeout_s)
            for t in client.describe_topics(wanted):
                out[t["name"]] = len(t.get("partitions") or [])
        return out


def create_topics(cfg: Config, admin: Any = None, timeout_s: float = 30.0) -> TopicsReport:
    """Create every missing stopwise topic; idempotent.

    Raises :class:`TopicsError` when the inference and feedback topics exist
    with different partition counts (they must be co-partitioned). When only
    one of them exists, the other is created with the same count.
    """
    from kafka.errors import TopicAlreadyExistsError

    specs = topic_specs(cfg)
    report = TopicsReport()
    with _admin(cfg, admin) as client:
        counts = partition_counts(cfg, client, timeout_s)
        _check_copartitioned(cfg, counts)
        inf, fb = counts[cfg.topics.inference], counts[cfg.topics.feedback]
        pinned = inf if inf is not None else fb
        todo: dict[str, dict[str, Any]] = {}
        for spec in specs:
            if counts[spec.name] is not None:
                report.existing.append(spec.name)
                continue
            parts = spec.partitions
            if spec.role in ("inference", "feedback") and pinned is not None and pinned != parts:
                log.warning("topics.copartition", topic=spec.name, partitions=pinned, configured=parts)
                parts = pinned
            todo[spec.name] = {"num_partitions": parts, "replication_factor": cfg.topics.replication_factor,
                               "configs": spec.configs}
        for name, opts in todo.items():
            try:
                client.create_topics({name: opts}, timeout_ms=int(timeout_s * 1000))
                report.created.append(name)
            except TopicAlreadyExistsError:  # created concurrently by someone else
                report.existing.append(name)
            except StopwiseError:
                raise
            except Exception as exc:
                raise TopicsError(f"creating topic {name} failed: {exc!r}") from None
        if todo:
            # a topic created a moment ago may be missing from the broker's
            # metadata cache (then its creation failed as "already exists"):
            # check the outcome, not just the plan
            _check_copartitioned(cfg, partition_counts(cfg, client, timeout_s, expect_all=True))
    log.info("topics.created", created=report.created, existing=report.existing)
    return report


def _check_copartitioned(cfg: Config, counts: dict[str, int | None]) -> None:
    inf, fb = counts[cfg.topics.inference], counts[cfg.topics.feedback]
    if inf is not None and fb is not None and inf != fb:
        raise TopicsError(
            f"input topics are not co-partitioned: {cfg.topics.inference} has {inf} partitions, "
            f"{cfg.topics.feedback} has {fb}; both must have the same count (topics.input_partitions="
            f"{cfg.topics.input_partitions}) so one daemon instance sees both halves of a request")


def _wait_ready(client: Any, names: list[str], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            client.wait_for_topics(names, timeout_ms=int(max(1.0, deadline - time.monotonic()) * 1000))
            return
        except Exception as exc:
            if time.monotonic() >= deadline:
                raise TopicsError(f"topics {names} not ready after {timeout_s:g}s: {exc!r}") from None
            time.sleep(0.2)


def register(app) -> None:
    """Add ``stopwise topics create|list``."""
    import typer

    topics_app = typer.Typer(help="Create and inspect stopwise's Kafka topics.", no_args_is_help=True)
    config_opt = typer.Option(..., "--config", "-c", help="YAML config file (STOPWISE_<SECTION>__<KEY> overrides apply)")

    def _load(path: Path) -> Config:
        from ..cliconfig import config_or_exit
        from ..logs import cli_logging_to_stderr

        cli_logging_to_stderr()
        return config_or_exit(path)

    @topics_app.command("create")
    def create_cmd(config: Path = config_opt) -> None:
        """Create every stopwise topic (idempotent); print what was created and what already existed."""
        cfg = _load(config)
        try:
            report = create_topics(cfg)
        except TopicsError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(1) from None
        for name in report.created:
            typer.echo(f"created  {name}")
        for name in report.existing:
            typer.echo(f"existing {name}")

    @topics_app.command("list")
    def list_cmd(config: Path = config_opt) -> None:
        """List stopwise's topics with their partition counts (or `missing`)."""
        cfg = _load(config)
        try:
            counts = partition_counts(cfg)
        except TopicsError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(1) from None
        for spec in topic_specs(cfg):
            n = counts[spec.name]
            shown = "missing" if n is None else f"{n} partition(s)"
            typer.echo(f"{spec.name:40s} {spec.configs['cleanup.policy']:8s} {shown}")

    app.add_typer(topics_app, name="topics")
