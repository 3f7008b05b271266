"""config.yaml, env overrides, and precise refusals of bad configs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel

from stopwise.daemon.config import Config, load_config, parse_config, require_signing
from stopwise.daemon.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
CONFIG_YAML = ROOT / "config.yaml"


def _leaf_paths(model: type[BaseModel], prefix: str = "") -> set[str]:
    out: set[str] = set()
    for name, field in model.model_fields.items():
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            out |= _leaf_paths(ann, f"{prefix}{name}.")
        else:
            out.add(prefix + name)
    return out


def _yaml_paths(data: dict, prefix: str = "") -> set[str]:
    out: set[str] = set()
    for k, v in data.items():
        if isinstance(v, dict) and prefix == "":
            out |= _yaml_paths(v, f"{k}.")
        else:
            out.add(prefix + k)
    return out


def test_config_yaml_loads_and_equals_the_defaults() -> None:
    assert load_config(CONFIG_YAML, env={}) == Config()


def test_config_yaml_lists_every_option_with_a_comment() -> None:
    data = yaml.safe_load(CONFIG_YAML.read_text())
    assert _yaml_paths(data) == _leaf_paths(Config), "config.yaml and Config have different options"
    for line in CONFIG_YAML.read_text().splitlines():
        if line.startswith("  ") and ":" in line:
            assert "#" in line, f"option without a comment in config.yaml: {line.strip()}"


def test_config_is_frozen() -> None:
    cfg = Config()
    with pytest.raises(Exception):
        cfg.budget.em_drop = 0.5  # type: ignore[misc]


def test_env_overrides_apply_and_parse_as_yaml() -> None:
    env = {"STOPWISE_BUDGET__EM_DROP": "0.02", "STOPWISE_KAFKA__BOOTSTRAP": "10.0.0.5:9092,10.0.0.6:9092",
           "STOPWISE_GRID__TAUS": "[0.8, 0.9]", "STOPWISE_GUARDRAILS__KILL_SWITCH": "true",
           "STOPWISE_BUDGET__PER_CONTEXT": '{"task=qa": 0.005}'}
    cfg = load_config(CONFIG_YAML, env=env)
    assert cfg.budget.em_drop == 0.02
    assert cfg.kafka.bootstrap == "10.0.0.5:9092,10.0.0.6:9092"
    assert cfg.grid.taus == (0.8, 0.9)
    assert cfg.guardrails.kill_switch is True
    assert cfg.budget_for("task=qa") == 0.005 and cfg.budget_for("task=x") == 0.02


def test_env_vars_without_section_separator_are_ignored() -> None:
    env = {"STOPWISE_BOOTSTRAP": "1.2.3.4:1", "STOPWISE_DEBUG": "1", "OTHER__X": "y", "PATH": "/bin"}
    assert load_config(CONFIG_YAML, env=env) == Config()


def test_env_override_problems_name_the_variable() -> None:
    with pytest.raises(ConfigError, match=r"budget\.em_drop: 2 is not in \[0, 1\].*STOPWISE_BUDGET__EM_DROP"):
        load_config(CONFIG_YAML, env={"STOPWISE_BUDGET__EM_DROP": "2"})
    with pytest.raises(ConfigError, match=r"kafka\.nope: .*unknown key.*STOPWISE_KAFKA__NOPE"):
        load_config(CONFIG_YAML, env={"STOPWISE_KAFKA__NOPE": "1"})
    with pytest.raises(ConfigError, match=r"unknown section.*STOPWISE_NOSUCH__KEY"):
        load_config(CONFIG_YAML, env={"STOPWISE_NOSUCH__KEY": "1"})


def test_empty_file_gives_defaults(tmp_path: Path) -> None:
    p = tmp_path / "empty.yaml"
    p.write_text("# nothing\n")
    assert load_config(p, env={}) == Config()


# (dotted key, bad value, expected message fragment after "key: value ")
BAD = [
    ("budget.em_drop", 1.5, "is not in [0, 1]"),
    ("budget.em_drop", -0.1, "is not in [0, 1]"),
    ("budget.em_drop", "abc", "should be a valid number"),
    ("budget.em_drop", True, "should be a valid number"),
    ("budget.confidence", 0.3, "is not in (0.5, 1]"),
    ("budget.mode", "everything", "should be 'per_context' or 'global'"),
    ("budget.per_context", {"task=qa": 2}, "is not in [0, 1]"),
    ("kafka.bootstrap", "", "must be host:port"),
    ("kafka.bootstrap", "localhost", "must be host:port"),
    ("kafka.group_id", " ", "must not be empty"),
    ("kafka.max_poll_records", 0, "should be greater than or equal to 1"),
    ("kafka.request_timeout_ms", True, "should be a valid integer"),
    ("kafka.security_protocol", "TLS", "should be 'PLAINTEXT'"),
    ("kafka.bootsrap", "x:1", "unknown key (known: bootstrap,"),
    ("nosuch", {"a": 1}, "unknown section (known: budget,"),
    ("topics.input_partitions", 1.5, "should be a valid integer"),
    ("topics.feedback", "stopwise.inference", "is also the name of topics.inference"),
    ("topics.compaction_dirty_ratio", 0, "is not in (0, 1]"),
    ("grid.taus", [0.9, 0.8], "must be strictly increasing (0.8 follows 0.9)"),
    ("grid.taus", [0.5, 1.0], "must be below 1.0"),
    ("grid.taus", [], "at least one threshold"),
    ("grid.taus", "0.5", "should be a list"),
    ("context.dimensions", [], "at least one context dimension"),
    ("context.dimensions", ["task", "task"], "must not repeat"),
    ("context.dimensions", ["a|b"], "must be non-empty without | = * %"),
    ("context.max_contexts", -3, "should be greater than or equal to 1"),
    ("guardrails.min_threshold", 0.95, "must not exceed max_threshold (0.9)"),
    ("guardrails.max_step", 0, "is not in (0, 1]"),
    ("exploration.min_rate", 0.5, "must not exceed max_rate (0.25)"),
    ("exploration.initial_rate", 0.9, "must be within [min_rate, max_rate] = [0.02, 0.25]"),
    ("join.ttl_s", -1, "must be a positive number"),
    ("join.max_bytes", 100, "should be greater than or equal to 1024"),
    ("limits.dlq_max_value_bytes", 10, "should be greater than or equal to 1024"),
    ("limits.dlq_max_value_bytes", True, "should be a valid integer"),
    ("publish.interval_s", float("nan"), "must be a positive number"),
    ("estimator.model", "deep", "should be 'logistic' or 'none'"),
    ("metrics.port", 70000, "should be less than or equal to 65535"),
    ("logging.level", "LOUD", "should be 'DEBUG', 'INFO', 'WARNING' or 'ERROR'"),
    ("security.hmac_key_file", 5, "is not a valid path"),
    ("kafka", 5, "should be a mapping of keys"),
]


def write_variant(tmp_path: Path, dotted: str, value: object) -> Path:
    data = yaml.safe_load(CONFIG_YAML.read_text())
    parts = dotted.split(".")
    if len(parts) == 1:
        data[parts[0]] = value
    else:
        data.setdefault(parts[0], {})[parts[1]] = value
    if dotted == "guardrails.min_threshold":
        data["guardrails"]["max_threshold"] = 0.9
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.mark.parametrize(("dotted", "value", "why"), BAD, ids=[f"{d}={v!r}" for d, v, _ in BAD])
def test_bad_variant_is_refused_precisely(tmp_path: Path, dotted: str, value: object, why: str) -> None:
    path = write_variant(tmp_path, dotted, value)
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    msg = str(info.value)
    assert msg.startswith(f"{path}: {dotted}"), msg
    assert info.value.file == str(path)
    assert why in msg, msg
    if isinstance(value, (int, float, str)) and value == value and not isinstance(value, bool):
        assert repr(value) in msg, msg


def test_bad_yaml_is_refused_with_a_line_number(tmp_path: Path) -> None:
    p = tmp_path / "broken.yaml"
    p.write_text("kafka:\n  bootstrap: 127.0.0.1:9092\n budget: [unclosed\n")
    with pytest.raises(ConfigError, match=rf"{p}: line \d+: not valid YAML"):
        load_config(p, env={})


def test_non_mapping_and_missing_file_are_refused(tmp_path: Path) -> None:
    p = tmp_path / "list.yaml"
    p.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="must be a mapping of sections"):
        load_config(p, env={})
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "absent.yaml", env={})


def test_parse_config_merges_sections_over_defaults() -> None:
    cfg = parse_config({"budget": {"em_drop": 0.03}, "topics": {"input_partitions": 6}})
    assert cfg.budget.em_drop == 0.03 and cfg.budget.confidence == Config().budget.confidence
    assert cfg.topics.input_partitions == 6 and cfg.topics.thresholds == "stopwise.thresholds"


def test_exponent_numbers_are_floats_and_quoted_numbers_are_refused(tmp_path: Path) -> None:
    p = tmp_path / "exp.yaml"
    p.write_text("estimator:\n  half_life: 1e4\n  learning_rate: 5.0e-2\n")
    cfg = load_config(p, env={"STOPWISE_JOIN__TTL_S": "3e3"})
    assert cfg.estimator.half_life == 10000.0 and cfg.estimator.learning_rate == 0.05 and cfg.join.ttl_s == 3000.0
    p.write_text("budget:\n  em_drop: '0.02'\n")
    with pytest.raises(ConfigError, match=r"budget\.em_drop: '0\.02' should be a valid number"):
        load_config(p, env={})


def test_key_file_is_read_once_at_load_and_stripped(tmp_path: Path) -> None:
    key = tmp_path / "hmac.key"
    key.write_bytes(b"  s3cret key \n")
    cfg = parse_config({"security": {"hmac_key_file": str(key)}})
    key.unlink()  # read at load: later use does not touch the file
    assert cfg.security.hmac_key() == b"s3cret key"
    assert require_signing(cfg) == b"s3cret key"


def test_key_file_problems_name_file_key_and_why(tmp_path: Path, monkeypatch) -> None:
    blank = tmp_path / "blank.key"
    blank.write_text(" \n")
    for path, why in ((tmp_path / "absent.key", "key file does not exist"), (tmp_path, "is a directory"),
                      (blank, "key file is empty (or only whitespace): no signing key")):
        with pytest.raises(ConfigError, match=rf"c\.yaml: security\.hmac_key_file: '{path}' {re.escape(why)}"):
            parse_config({"security": {"hmac_key_file": str(path)}}, file="c.yaml")
    locked = tmp_path / "locked.key"
    locked.write_text("k\n")

    def denied(self):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "read_bytes", denied)
    with pytest.raises(ConfigError, match=r"security\.hmac_key_file: .* key file cannot be read: Permission denied"):
        parse_config({"security": {"hmac_key_file": str(locked)}}, file="c.yaml")


def test_a_key_is_required_unless_unsigned_is_allowed_explicitly() -> None:
    with pytest.raises(ConfigError, match=r"c\.yaml: security\.hmac_key_file: a signing key file is required.*"
                                          r"security\.allow_unsigned: true"):
        require_signing(load_config(CONFIG_YAML, env={}), "c.yaml")
    assert require_signing(parse_config({"security": {"allow_unsigned": True}})) is None
    with pytest.raises(ConfigError, match="should be a valid boolean"):
        parse_config({"security": {"allow_unsigned": "yes please"}})


def test_copies_of_a_config_never_carry_the_key(tmp_path: Path) -> None:
    import pickle

    from stopwise.daemon.core import statecodec

    key = tmp_path / "hmac.key"
    key.write_text("s3cret\n")
    cfg = parse_config({"security": {"hmac_key_file": str(key)}})
    assert b"s3cret" not in statecodec.encode(cfg) and b"s3cret" not in pickle.dumps(cfg)
    for copy in (statecodec.decode(statecodec.encode(cfg)), pickle.loads(pickle.dumps(cfg))):
        assert copy.budget == cfg.budget
        with pytest.raises(RuntimeError, match="carries no key"):
            copy.security.hmac_key()
