"""The daemon's configuration: one frozen, validated object built once.

``load_config`` reads a YAML file, applies ``STOPWISE_<SECTION>__<KEY>``
environment overrides (values parsed as YAML scalars), refuses unknown keys and
raises :class:`ConfigError` naming the file, the key path, the value and why.

>>> cfg = Config()
>>> cfg.budget.em_drop, cfg.topics.thresholds
(0.01, 'stopwise.thresholds')
>>> cfg.model_copy(update={"budget": cfg.budget.model_copy(update={"em_drop": 0.02})}).budget.em_drop
0.02
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any, Literal, Mapping

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator

from .errors import ConfigError

ENV_PREFIX = "STOPWISE_"
NO_EARLY_STOP = 1.0
"""Threshold value meaning "never stop early": inferencers run to the end."""


def _in(lo: float, hi: float, lo_open: bool = False):
    def check(v: float) -> float:
        if not math.isfinite(v) or v < lo or v > hi or (lo_open and v == lo):
            left = "(" if lo_open else "["
            raise ValueError(f"is not in {left}{lo:g}, {hi:g}]")
        return v

    return AfterValidator(check)


def _positive(v: float) -> float:
    if not math.isfinite(v) or v <= 0:
        raise ValueError("must be a positive number")
    return v


Unit = Annotated[float, _in(0.0, 1.0)]
OpenUnit = Annotated[float, _in(0.0, 1.0, lo_open=True)]
Positive = Annotated[float, AfterValidator(_positive)]
PosInt = Annotated[int, Field(ge=1)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class KafkaConfig(_Section):
    bootstrap: str = "127.0.0.1:9092"
    client_id: str = "stopwise"
    group_id: str = "stopwise"
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    request_timeout_ms: PosInt = 30000
    session_timeout_ms: PosInt = 10000
    max_poll_records: PosInt = 500
    poll_timeout_ms: PosInt = 200


class TopicsConfig(_Section):
    inference: str = "stopwise.inference"
    feedback: str = "stopwise.feedback"
    examples: str = "stopwise.examples"
    thresholds: str = "stopwise.thresholds"
    decisions: str = "stopwise.decisions"
    state: str = "stopwise.state"
    dlq: str = "stopwise.dlq"
    input_partitions: PosInt = 3
    examples_partitions: PosInt = 3
    replication_factor: PosInt = 1
    retention_ms: PosInt = 7 * 24 * 3600 * 1000

    @model_validator(mode="after")
    def _distinct(self) -> "TopicsConfig":
        names = [self.inference, self.feedback, self.examples, self.thresholds,
                 self.decisions, self.state, self.dlq]
        if len(set(names)) != len(names):
            raise ValueError("topic names must all be different")
        return self


class ContextConfig(_Section):
    dimensions: tuple[str, ...] = ("task", "domain")
    max_contexts: PosInt = 256
    min_support: Annotated[int, Field(ge=0)] = 20
    default_threshold: Unit = NO_EARLY_STOP

    @model_validator(mode="after")
    def _dims(self) -> "ContextConfig":
        if not self.dimensions:
            raise ValueError("dimensions: at least one context dimension is needed")
        if len(set(self.dimensions)) != len(self.dimensions):
            raise ValueError("dimensions: must not repeat")
        for d in self.dimensions:
            if not d or any(c in d for c in "|=*%"):
                raise ValueError(f"dimensions: {d!r} must be non-empty without | = * %")
        return self


class GridConfig(_Section):
    taus: tuple[Unit, ...] = (0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.93, 0.95, 0.97, 0.98, 0.99)

    @model_validator(mode="after")
    def _sorted(self) -> "GridConfig":
        if not self.taus:
            raise ValueError("taus: the grid needs at least one threshold")
        if any(b <= a for a, b in zip(self.taus, self.taus[1:])):
            raise ValueError("taus: must be strictly increasing")
        if self.taus[-1] >= NO_EARLY_STOP:
            raise ValueError("taus: must be below 1.0 (1.0 means no early stop and is always included)")
        return self


class BudgetConfig(_Section):
    em_drop: Unit = 0.01
    confidence: Annotated[float, _in(0.5, 1.0, lo_open=True)] = 0.95
    per_context: dict[str, Unit] = Field(default_factory=dict)
    mode: Literal["per_context", "global"] = "per_context"


class EstimatorConfig(_Section):
    half_life: Positive = 5000.0
    prior_strength: Annotated[float, Field(ge=0)] = 20.0
    model: Literal["logistic", "none"] = "logistic"
    learning_rate: Positive = 0.05
    seed: int = 42


class PolicyConfig(_Section):
    name: str = "reference"
    params: dict[str, Any] = Field(default_factory=dict)
    integral_gain: Annotated[float, Field(ge=0)] = 0.5


class GuardrailsConfig(_Section):
    min_threshold: Unit = 0.5
    max_threshold: Unit = NO_EARLY_STOP
    max_step: OpenUnit = 0.1
    hysteresis: Unit = 0.005
    min_evidence: Annotated[float, Field(ge=0)] = 200.0
    breaker_margin: Unit = 0.02
    breaker_window: PosInt = 500
    breaker_cooldown_s: Annotated[float, Field(ge=0)] = 600.0
    kill_switch: bool = False

    @model_validator(mode="after")
    def _bounds(self) -> "GuardrailsConfig":
        if self.min_threshold > self.max_threshold:
            raise ValueError("min_threshold must not exceed max_threshold")
        return self


class ExplorationConfig(_Section):
    min_rate: Unit = 0.02
    max_rate: Unit = 0.25
    initial_rate: Unit = 0.2

    @model_validator(mode="after")
    def _bounds(self) -> "ExplorationConfig":
        if not self.min_rate <= self.initial_rate <= self.max_rate:
            raise ValueError("need min_rate <= initial_rate <= max_rate")
        return self


class JoinConfig(_Section):
    ttl_s: Positive = 3600.0
    max_entries: PosInt = 200_000


class PublishConfig(_Section):
    interval_s: Positive = 5.0
    record_ttl_s: Positive = 3600.0


class SnapshotConfig(_Section):
    interval_s: Positive = 30.0


class LimitsConfig(_Section):
    max_record_bytes: PosInt = 1_000_000
    max_checkpoints: PosInt = 4096


class MetricsConfig(_Section):
    enabled: bool = True
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 9464


class LoggingConfig(_Section):
    format: Literal["auto", "json", "console"] = "auto"
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"


class SecurityConfig(_Section):
    hmac_key_file: Path | None = None

    def hmac_key(self) -> bytes | None:
        """Read the key file (stripped); ``None`` when no file is configured."""
        if self.hmac_key_file is None:
            return None
        return self.hmac_key_file.read_bytes().strip()


class Config(_Section):
    kafka: KafkaConfig = KafkaConfig()
    topics: TopicsConfig = TopicsConfig()
    context: ContextConfig = ContextConfig()
    grid: GridConfig = GridConfig()
    budget: BudgetConfig = BudgetConfig()
    estimator: EstimatorConfig = EstimatorConfig()
    policy: PolicyConfig = PolicyConfig()
    guardrails: GuardrailsConfig = GuardrailsConfig()
    exploration: ExplorationConfig = ExplorationConfig()
    join: JoinConfig = JoinConfig()
    publish: PublishConfig = PublishConfig()
    snapshot: SnapshotConfig = SnapshotConfig()
    limits: LimitsConfig = LimitsConfig()
    metrics: MetricsConfig = MetricsConfig()
    logging: LoggingConfig = LoggingConfig()
    security: SecurityConfig = SecurityConfig()

    def budget_for(self, context_key: str) -> float:
        """EM-drop budget of a context (per-context override, else global)."""
        return self.budget.per_context.get(context_key, self.budget.em_drop)


def _env_overrides(env: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for name, raw in env.items():
        if not name.startswith(ENV_PREFIX) or "__" not in name:
            continue
        section, _, key = name[len(ENV_PREFIX):].partition("__")
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError:
            value = raw
        out.setdefault(section.lower(), {})[key.lower()] = value
    return out


def _error_from_pydantic(file: str, exc: ValidationError, data: Any) -> ConfigError:
    err = exc.errors()[0]
    loc = [str(p) for p in err["loc"]]
    key = ".".join(loc) or "(root)"
    why = err["msg"].removeprefix("Value error, ")
    value: object = err.get("input", ConfigError.MISSING)  # type: ignore[attr-defined]
    if err["type"] == "extra_forbidden":
        why = "unknown key"
    elif err["type"] == "missing":
        value = ConfigError.MISSING  # type: ignore[attr-defined]
    elif isinstance(value, dict) and err["type"] in ("value_error", "assertion_error"):
        # model-level check: point at the field the message names, if any
        first = why.split(":")[0].split(" ")[0]
        if first in value:
            key, value, why = f"{key}.{first}" if key != "(root)" else first, value[first], why.split(": ", 1)[-1]
        else:
            value = ConfigError.MISSING  # type: ignore[attr-defined]
    return ConfigError(file, key, value, why)


def parse_config(data: Any, *, file: str = "<config>", env: Mapping[str, str] | None = None) -> Config:
    """Validate a mapping (plus env overrides) into a frozen :class:`Config`."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(file, "(root)", ConfigError.MISSING, "must be a mapping of sections")  # type: ignore[attr-defined]
    merged = {k: (dict(v) if isinstance(v, dict) else v) for k, v in data.items()}
    for section, kv in _env_overrides(env or {}).items():
        target = merged.setdefault(section, {})
        if not isinstance(target, dict):
            raise ConfigError(file, section, target, "must be a mapping")
        target.update(kv)
    try:
        return Config.model_validate(merged)
    except ValidationError as exc:
        raise _error_from_pydantic(file, exc, merged) from None


def load_config(path: str | Path, env: Mapping[str, str] | None = None) -> Config:
    """Read, merge env overrides and validate; raise :class:`ConfigError` if bad."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(p), "(file)", ConfigError.MISSING, f"cannot read: {exc.strerror or exc}") from None  # type: ignore[attr-defined]
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else "(yaml)"
        raise ConfigError(str(p), where, ConfigError.MISSING, f"not valid YAML: {getattr(exc, 'problem', exc)}") from None  # type: ignore[attr-defined]
    return parse_config(data, file=str(p), env=env)
