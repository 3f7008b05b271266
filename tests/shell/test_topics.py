"""Topic creation on the real broker: configs, idempotence, co-partition refusal."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from stopwise.daemon.cli import app
from stopwise.daemon.config import Config
from stopwise.daemon.errors import TopicsError
from stopwise.daemon.shell.topics import admin_client, create_topics, partition_counts, topic_specs

from daemon_helpers import write_config


def test_specs_cover_every_design_topic_with_its_cleanup_policy() -> None:
    cfg = Config()
    specs = {s.role: s for s in topic_specs(cfg)}
    assert set(specs) == {"inference", "feedback", "examples", "thresholds", "decisions", "state", "dlq"}
    compacted = {r for r, s in specs.items() if s.configs["cleanup.policy"] == "compact"}
    assert compacted == {"thresholds", "state"}
    assert specs["inference"].partitions == specs["feedback"].partitions == cfg.topics.input_partitions
    assert specs["examples"].partitions == cfg.topics.examples_partitions
    assert specs["decisions"].configs["retention.ms"] == str(cfg.topics.retention_ms)
    assert specs["thresholds"].configs["segment.ms"] == str(cfg.topics.compaction_segment_ms)


def _topic_configs(cfg: Config, name: str) -> dict[str, str]:
    from kafka.admin import ConfigResource, ConfigResourceType

    admin = admin_client(cfg)
    try:
        res = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, name)])
    finally:
        admin.close()
    # kafka-python 3: {"topic": {name: {config_name: {"value": ..., ...}}}} (modified configs only)
    configs = res["topic"][name]
    return {k: v["value"] for k, v in configs.items()}


def test_create_is_idempotent_and_uses_configured_partitions(make_config) -> None:
    cfg = make_config(create=False, topics={"input_partitions": 3, "examples_partitions": 2})
    first = create_topics(cfg)
    assert sorted(first.created) == sorted(s.name for s in topic_specs(cfg)) and first.existing == []
    second = create_topics(cfg)
    assert second.created == [] and sorted(second.existing) == sorted(first.created)
    counts = partition_counts(cfg)
    assert counts[cfg.topics.inference] == counts[cfg.topics.feedback] == 3
    assert counts[cfg.topics.examples] == 2 and counts[cfg.topics.thresholds] == 1
    thr = _topic_configs(cfg, cfg.topics.thresholds)
    assert thr["cleanup.policy"] == "compact" and thr["segment.ms"] == "500"
    inf = _topic_configs(cfg, cfg.topics.inference)
    assert inf["cleanup.policy"] == "delete" and inf["retention.ms"] == str(cfg.topics.retention_ms)


def test_refuses_input_topics_that_are_not_copartitioned(make_config) -> None:
    cfg = make_config(create=False)
    admin = admin_client(cfg)
    try:
        admin.create_topics({cfg.topics.inference: {"num_partitions": 2, "replication_factor": 1},
                             cfg.topics.feedback: {"num_partitions": 4, "replication_factor": 1}})
    finally:
        admin.close()
    with pytest.raises(TopicsError, match="not co-partitioned.*2 partitions.*has 4"):
        create_topics(cfg)


def test_missing_input_topic_follows_the_existing_one(make_config) -> None:
    cfg = make_config(create=False, topics={"input_partitions": 2})
    admin = admin_client(cfg)
    try:
        admin.create_topics({cfg.topics.feedback: {"num_partitions": 5, "replication_factor": 1}},
                            wait_for_metadata=True)
    finally:
        admin.close()
    report = create_topics(cfg)
    assert cfg.topics.feedback in report.existing and cfg.topics.inference in report.created
    assert partition_counts(cfg)[cfg.topics.inference] == 5


def test_cli_create_prints_created_then_existing(make_config, tmp_path) -> None:
    cfg = make_config(create=False)
    path = write_config(cfg, tmp_path / "cfg.yaml")
    runner = CliRunner()
    r1 = runner.invoke(app, ["topics", "create", "--config", str(path)])
    assert r1.exit_code == 0, r1.output
    assert r1.stdout.count("created  ") == 7 and "existing" not in r1.stdout
    r2 = runner.invoke(app, ["topics", "create", "--config", str(path)])
    assert r2.exit_code == 0 and r2.stdout.count("existing ") == 7
    r3 = runner.invoke(app, ["topics", "list", "--config", str(path)])
    assert r3.exit_code == 0 and cfg.topics.thresholds in r3.output and "compact" in r3.output


def test_cli_refusal_exits_1_with_message(make_config, tmp_path) -> None:
    cfg = make_config(create=False)
    admin = admin_client(cfg)
    try:
        admin.create_topics({cfg.topics.inference: {"num_partitions": 1, "replication_factor": 1},
                             cfg.topics.feedback: {"num_partitions": 3, "replication_factor": 1}})
    finally:
        admin.close()
    r = CliRunner().invoke(app, ["topics", "create", "--config", str(write_config(cfg, tmp_path / "cfg.yaml"))])
    assert r.exit_code == 1
    assert "not co-partitioned" in r.output


def test_unreachable_cluster_is_a_clear_error() -> None:
    from stopwise.daemon.kafka_broker import free_port

    cfg = Config().model_copy(update={"kafka": Config().kafka.model_copy(
        update={"bootstrap": f"127.0.0.1:{free_port()}", "request_timeout_ms": 1500})})
    with pytest.raises(TopicsError, match="cannot reach Kafka"):
        create_topics(cfg)


def test_make_config_isolates_tests_and_merges_sections(make_config) -> None:
    a = make_config(budget={"em_drop": 0.02}, topics={"input_partitions": 3})
    b = make_config(create=False)
    assert a.budget.em_drop == 0.02 and a.budget.confidence == Config().budget.confidence
    assert a.topics.inference != b.topics.inference and a.kafka.group_id != b.kafka.group_id
    assert a.metrics.port == 0 and a.publish.interval_s < Config().publish.interval_s
    counts = partition_counts(a)
    assert all(n is not None for n in counts.values()) and counts[a.topics.inference] == 3
    assert all(n is None for n in partition_counts(b).values())
