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
import re
from pathlib import Path
from typing import Annotated, Any, Literal, Mapping

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, model_validator

from .errors import ConfigError
from .stoprule import NO_EARLY_STOP

ENV_PREFIX = "STOPWISE_"


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


# strict: a YAML ``true`` or a quoted "0.5" is refused instead of coerced
# (env overrides are parsed as YAML first, so they still give real numbers)
Unit = Annotated[float, Field(strict=True), _in(0.0, 1.0)]
OpenUnit = Annotated[float, Field(strict=True), _in(0.0, 1.0, lo_open=True)]
Positive = Annotated[float, Field(strict=True), AfterValidator(_positive)]
NonNeg = Annotated[float, Field(strict=True, ge=0)]
PosInt = Annotated[int, Field(strict=True, ge=1)]
NonNegInt = Annotated[int, Field(strict=True, ge=0)]
Flag = Annotated[bool, Field(strict=True)]


def _bootstrap(v: str) -> str:
    hosts = [h.strip() for h in v.split(",")]
    for h in hosts:
        host, sep, port = h.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError("must be host:port[,host:port...]")
    return ",".join(hosts)


def _name(v: str) -> str:
    if not v.strip():
        raise ValueError("must not be empty")
    return v


Name = Annotated[str, AfterValidator(_name)]


class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads ``1e4`` as a float (YAML 1.2), since numbers
    are strict: PyYAML alone would make it the string ``'1e4'``."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def _yaml(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class KafkaConfig(_Section):
    bootstrap: Annotated[str, AfterValidator(_bootstrap)] = "127.0.0.1:9092"
    client_id: Name = "stopwise"
    group_id: Name = "stopwise"
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    request_timeout_ms: PosInt = 30000
    session_timeout_ms: PosInt = 10000
    max_poll_records: PosInt = 500
    poll_timeout_ms: PosInt = 200


class TopicsConfig(_Section):
    inference: Name = "stopwise.inference"
    feedback: Name = "stopwise.feedback"
    examples: Name = "stopwise.examples"
    thresholds: Name = "stopwise.thresholds"
    decisions: Name = "stopwise.decisions"
    state: Name = "stopwise.state"
    dlq: Name = "stopwise.dlq"
    input_partitions: PosInt = 3
    examples_partitions: PosInt = 3
    replication_factor: PosInt = 1
    retention_ms: PosInt = 7 * 24 * 3600 * 1000
    # compacted topics (thresholds, state): how soon the log cleaner keeps
    # only the latest value per key. Production defaults; tests shrink them.
    compaction_dirty_ratio: OpenUnit = 0.5
    compaction_segment_ms: PosInt = 24 * 3600 * 1000
    compaction_lag_ms: NonNegInt = 0
    tombstone_retention_ms: NonNegInt = 24 * 3600 * 1000
    state_max_message_bytes: PosInt = 16 * 1024 * 1024

    @model_validator(mode="after")
    def _distinct(self) -> "TopicsConfig":
        seen: dict[str, str] = {}
        for field in ("inference", "feedback", "examples", "thresholds", "decisions", "state", "dlq"):
            name = getattr(self, field)
            if name in seen:
                raise ValueError(f"{field}: is also the name of topics.{seen[name]}; topic names must all be different")
            seen[name] = field
        return self


class ContextConfig(_Section):
    dimensions: tuple[str, ...] = ("task", "domain")
    max_contexts: PosInt = 256
    min_support: NonNegInt = 20
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
        for a, b in zip(self.taus, self.taus[1:]):
            if b <= a:
                raise ValueError(f"taus: must be strictly increasing ({b:g} follows {a:g})")
        if self.taus[-1] >= NO_EARLY_STOP:
            raise ValueError("taus: must be below 1.0 (1.0 means no early stop and is always included)")
        return self


class BudgetConfig(_Section):
    em_drop: Unit = 0.01
    confidence: Annotated[float, _in(0.5, 1.0, lo_open=True)] = 0.95
    per_context: dict[str, Unit] = Field(default_factory=dict)
    mode: Literal["per_context", "global"] = "per_context"


class EstimatorConfig(_Section):
    half_life: Positive = 20000.0
    prior_strength: NonNeg = 3.0
    model: Literal["logistic", "none"] = "logistic"
    learning_rate: Positive = 0.05
    seed: int = 42


class PolicyConfig(_Section):
    name: str = "reference"
    params: dict[str, Any] = Field(default_factory=dict)
    integral_gain: NonNeg = 0.5


class GuardrailsConfig(_Section):
    min_threshold: Unit = 0.5
    max_threshold: Unit = NO_EARLY_STOP
    max_step: OpenUnit = 0.1
    hysteresis: Unit = 0.005
    min_evidence: NonNeg = 200.0
    breaker_margin: Unit = 0.02
    breaker_window: PosInt = 500
    breaker_cooldown_s: NonNeg = 600.0
    kill_switch: Flag = False

    @model_validator(mode="after")
    def _bounds(self) -> "GuardrailsConfig":
        if self.min_threshold > self.max_threshold:
            raise ValueError(f"min_threshold: must not exceed max_threshold ({self.max_threshold:g})")
        return self


class ExplorationConfig(_Section):
    min_rate: Unit = 0.02
    max_rate: Unit = 0.25
    initial_rate: Unit = 0.2

    @model_validator(mode="after")
    def _bounds(self) -> "ExplorationConfig":
        if self.min_rate > self.max_rate:
            raise ValueError(f"min_rate: must not exceed max_rate ({self.max_rate:g})")
        if not self.min_rate <= self.initial_rate <= self.max_rate:
            raise ValueError(f"initial_rate: must be within [min_rate, max_rate] = [{self.min_rate:g}, {self.max_rate:g}]")
        return self


class JoinConfig(_Section):
    ttl_s: Positive = 3600.0
    max_entries: PosInt = 200_000
    # bytes of pending records (at their wire size) per join shard; None: 3x
    # topics.state_max_message_bytes (a snapshot compresses them ~6x)
    max_bytes: Annotated[int, Field(strict=True, ge=1024)] | None = None


class PublishConfig(_Section):
    interval_s: Positive = 5.0
    record_ttl_s: Positive = 3600.0


class SnapshotConfig(_Section):
    interval_s: Positive = 30.0


class LimitsConfig(_Section):
    max_record_bytes: PosInt = 1_000_000
    max_checkpoints: PosInt = 4096
    # a DLQ copy keeps this much of the original value (and DLQ_MAX_KEY_BYTES
    # of the key), so record + headers fit the broker's default 1 MB limit
    dlq_max_value_bytes: Annotated[int, Field(strict=True, ge=1024)] = 900_000


class MetricsConfig(_Section):
    enabled: Flag = True
    host: Name = "127.0.0.1"
    port: Annotated[int, Field(strict=True, ge=0, le=65535)] = 9464


class LoggingConfig(_Section):
    format: Literal["auto", "json", "console"] = "auto"
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"


class SecurityConfig(_Section):
    """The HMAC key signing thresholds, control records and snapshots.

    The key is the key file's bytes with surrounding whitespace (the trailing
    newline included) removed, read once when the config is validated; a
    configured file that is missing, a directory, unreadable, empty or only
    whitespace is refused. Without a file, signing is off, which
    :func:`require_signing` refuses unless ``allow_unsigned`` is true.

    >>> SecurityConfig().hmac_key() is None
    True
    """

    hmac_key_file: Path | None = None
    allow_unsigned: Flag = False
    _key: bytes | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _read_key(self) -> "SecurityConfig":
        path = self.hmac_key_file
        if path is None:
            return self
        try:
            key = path.read_bytes().strip()
        except IsADirectoryError:
            raise ValueError("hmac_key_file: is a directory, not a key file") from None
        except FileNotFoundError:
            raise ValueError("hmac_key_file: key file does not exist") from None
        except OSError as exc:
            raise ValueError(f"hmac_key_file: key file cannot be read: {exc.strerror or exc}") from None
        if not key:
            raise ValueError("hmac_key_file: key file is empty (or only whitespace): no signing key")
        self._key = key
        return self

    def hmac_key(self) -> bytes | None:
        """The signing key read from the key file at validation; ``None`` when
        no file is configured (unsigned)."""
        if self._key == b"":
            raise RuntimeError("this security config is a copy restored from a snapshot or pickle and "
                               "carries no key; use the config loaded from the file")
        return self._key

    def __getstate__(self) -> dict:
        """Never carry key material into a snapshot (or pickle) of the config:
        a copy restored from one refuses ``hmac_key()`` instead of signing nothing."""
        state = super().__getstate__()
        return {**state, "__pydantic_private__": {"_key": b"" if self._key else None}}


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

    def join_max_bytes(self) -> int:
        """``join.max_bytes``, or its default: 3x ``topics.state_max_message_bytes``."""
        j = self.join.max_bytes
        return j if j is not None else 3 * self.topics.state_max_message_bytes

    def budget_for(self, context_key: str) -> float:
        """EM-drop budget of a context (per-context override, else global)."""
        return self.budget.per_context.get(context_key, self.budget.em_drop)


def _env_overrides(env: Mapping[str, str]) -> dict[str, dict[str, tuple[Any, str]]]:
    """``STOPWISE_<SECTION>__<KEY>`` variables as {section: {key: (value, var)}}.
    Other ``STOPWISE_*`` variables (e.g. ``STOPWISE_BOOTSTRAP``) are ignored."""
    out: dict[str, dict[str, tuple[Any, str]]] = {}
    for name, raw in sorted(env.items()):
        if not name.startswith(ENV_PREFIX) or "__" not in name:
            continue
        section, _, key = name[len(ENV_PREFIX):].partition("__")
        try:
            value = _yaml(raw) if raw != "" else ""
        except yaml.YAMLError:
            value = raw
        out.setdefault(section.lower(), {})[key.lower()] = (value, name)
    return out


_FRIENDLY = (
    ("Input should be a valid dictionary or instance of", "should be a mapping, not a value; see"),
    ("Input should be a valid dictionary", "should be a mapping"),
    ("Input should be a valid tuple", "should be a list"),
    ("Input should be a valid list", "should be a list"),
    ("Input should be", "should be"),
    ("Input is not", "is not"),
)


def _known_keys(loc: list[str]) -> list[str] | None:
    """Field names of the model at ``loc`` (the parent of an unknown key)."""
    model: Any = Config
    for part in loc:
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            return None
        model = field.annotation
    fields = getattr(model, "model_fields", None)
    return sorted(fields) if fields else None


def _error_from_pydantic(file: str, exc: ValidationError,
                         origins: Mapping[tuple[str, str], str] | None = None) -> ConfigError:
    errors = exc.errors(include_url=False)
    err = errors[0]
    loc = [str(p) for p in err["loc"]]
    key = ".".join(loc) or "(root)"
    why = err["msg"].removeprefix("Value error, ").removeprefix("Assertion failed, ")
    for old, new in _FRIENDLY:
        if why.startswith(old):
            why = new + why[len(old):]
            if new.endswith("see"):
                why = "should be a mapping of keys"
            break
    why = re.sub(r" for <class '[\w.]+'>", "", why)
    value: object = err.get("input", ConfigError.MISSING)  # type: ignore[attr-defined]
    if err["type"] == "extra_forbidden":
        known = _known_keys(loc[:-1])
        kind = "section" if len(loc) == 1 else "key"
        why = f"unknown {kind}" + (f" (known: {', '.join(known)})" if known else "")
    elif err["type"] == "missing":
        value = ConfigError.MISSING  # type: ignore[attr-defined]
    elif isinstance(value, dict) and err["type"] in ("value_error", "assertion_error"):
        # model-level check: the message starts with the field it is about
        first = why.split(":")[0].split(" ")[0]
        if first in value:
            key, value, why = f"{key}.{first}" if key != "(root)" else first, value[first], why.split(": ", 1)[-1]
        else:
            value = ConfigError.MISSING  # type: ignore[attr-defined]
    parts = key.split(".")
    if origins and len(parts) >= 2 and (parts[0], parts[1]) in origins:
        why += f" (set by environment variable {origins[(parts[0], parts[1])]})"
    elif origins and len(parts) == 1 and any(sec == parts[0] for sec, _ in origins):
        var = next(v for (sec, _), v in origins.items() if sec == parts[0])
        why += f" (set by environment variable {var})"
    if len(errors) > 1:
        why += f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})"
    return ConfigError(file, key, value, why)


def parse_config(data: Any, *, file: str = "<config>", env: Mapping[str, str] | None = None) -> Config:
    """Validate a mapping (plus env overrides) into a frozen :class:`Config`.

    >>> parse_config({"budget": {"em_drop": 0.02}}, env={"STOPWISE_KAFKA__GROUP_ID": "g2"}).kafka.group_id
    'g2'
    >>> parse_config({"budget": {"em_drop": 1.5}}, file="c.yaml")
    Traceback (most recent call last):
    ...
    stopwise.daemon.errors.ConfigError: c.yaml: budget.em_drop: 1.5 is not in [0, 1]
    """
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(file, "(root)", ConfigError.MISSING, "must be a mapping of sections")  # type: ignore[attr-defined]
    merged = {k: (dict(v) if isinstance(v, dict) else v) for k, v in data.items()}
    origins: dict[tuple[str, str], str] = {}
    for section, kv in _env_overrides(env or {}).items():
        target = merged.setdefault(section, {})
        if target is None:
            target = merged[section] = {}
        if not isinstance(target, dict):
            raise ConfigError(file, section, target, "should be a mapping of keys")
        for key, (value, var) in kv.items():
            target[key] = value
            origins[(section, key)] = var
    try:
        return Config.model_validate(merged)
    except ValidationError as exc:
        raise _error_from_pydantic(file, exc, origins) from None


UNSIGNED_WHY = ("a signing key file is required (anyone who can write to the topics could move thresholds "
                "or forge state without one); set security.allow_unsigned: true to run unsigned on purpose")


def require_signing(cfg: Config, file: str = "<config>") -> bytes | None:
    """The signing key, or ``None`` when the config explicitly allows running
    unsigned (``security.allow_unsigned: true``); :class:`ConfigError` otherwise.

    >>> require_signing(parse_config({"security": {"allow_unsigned": True}})) is None
    True
    >>> require_signing(Config(), "c.yaml")
    Traceback (most recent call last):
    ...
    stopwise.daemon.errors.ConfigError: c.yaml: security.hmac_key_file: a signing key file is required ...allow_unsigned: true to run unsigned on purpose
    """
    key = cfg.security.hmac_key()
    if key is None and not cfg.security.allow_unsigned:
        raise ConfigError(file, "security.hmac_key_file", ConfigError.MISSING, UNSIGNED_WHY)  # type: ignore[attr-defined]
    return key


def load_config(path: str | Path, env: Mapping[str, str] | None = None) -> Config:
    """Read, merge env overrides and validate; raise :class:`ConfigError` if bad."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(p), "(file)", ConfigError.MISSING, f"cannot read: {exc.strerror or exc}") from None  # type: ignore[attr-defined]
    try:
        data = _yaml(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else "(yaml)"
        raise ConfigError(str(p), where, ConfigError.MISSING, f"not valid YAML: {getattr(exc, 'problem', exc)}") from None  # type: ignore[attr-defined]
    return parse_config(data, file=str(p), env=env)
