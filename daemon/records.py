"""Record contracts (DESIGN section 3) as pydantic models, and their decoders.

Every record carries ``v``, its major version; an unknown major version is
rejected. Unknown extra fields are kept and ignored. Decoding bytes yields a
record or raises :class:`DecodeError` whose ``reason`` is a stable code.

>>> ev = decode_feedback(b'{"v": 1, "request_id": "r1", "ts": 1.0, "em": 1}')
>>> ev.em, ev.weight
(1, 1.0)
>>> try:
...     decode_feedback(b'{"v": 9, "request_id": "r1", "ts": 1.0, "em": 1}')
... except DecodeError as e:
...     print(e.reason)
unknown_version
"""

from __future__ import annotations

from typing import Annotated, Literal, Optional

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator, model_validator

from .errors import DecodeError

MAJOR = 1
DEFAULT_MAX_BYTES = 1_000_000

# Bounds of every number that enters the core (issue 13: a feedback weight of
# 1e300 made the estimates NaN). Out of bounds is ``out_of_range``, a
# boolean where a number is expected ``invalid_value`` (JSON ``true`` is not 1).
MAX_WEIGHT = 1e6
"""Feedback ``weight`` is in (0, MAX_WEIGHT]."""
MAX_TS = 1e10
"""``ts`` is in [0, MAX_TS]: seconds since the epoch (a millisecond stamp,
~1.7e12, is refused rather than read as the year 55000)."""
MAX_TOKENS = 2**31 - 1
"""Token counts (checkpoints, ``tokens_used``, ``tokens_budget``)."""
MAX_VERSION = 2**63 - 1
"""Versions stay within int64."""
MAX_FEATURE = 1e6
"""Numeric features are in [-MAX_FEATURE, MAX_FEATURE] (they feed the River model)."""
DEFAULT_MAX_CHECKPOINTS = 4096
"""Default ``limits.max_checkpoints`` (the schemas' ``maxItems``)."""

CROSS_FIELD_RULES: dict[str, tuple[str, str]] = {
    # key: (DecodeError reason, rule) -- README "Cross-field rules the schema cannot express" mirrors this
    "checkpoints_increasing": ("checkpoints_not_increasing", "checkpoint tokens strictly increase"),
    "stop_index_in_checkpoints": ("out_of_range", "`stop_index` < number of checkpoints"),
    "stop_index_last_unless_explore": ("out_of_range", "a non-exploration run's `stop_index` is its last checkpoint"),
    "no_lone_surrogates": ("bad_json", "strings are valid Unicode (no lone surrogate escape such as `\\ud800`)"),
    "max_record_bytes": ("too_large", "the record is at most `limits.max_record_bytes` bytes"),
    "max_checkpoints": ("too_large", "at most `limits.max_checkpoints` checkpoints (the schema's `maxItems` is the default, 4096)"),
}
"""What the decoders enforce beyond the JSON Schemas (tests/test_contracts_agreement.py)."""


def _not_bool(v):
    """Before-validator of integer fields: Python (and pydantic's ``Literal``)
    takes ``True == 1``; the contract does not. An integral float (``192.0``)
    is an integer, as in JSON Schema (draft 2020-12)."""
    if isinstance(v, bool):
        raise ValueError("invalid_value: a boolean is not a number")
    if isinstance(v, float) and v.is_integer():
        return int(v)
    return v


def _int(lo: int, hi: int | None = None):
    """An integer field in [lo, hi] (integral floats accepted, booleans not)."""
    return Annotated[int, Field(ge=lo, le=hi), BeforeValidator(_not_bool)]


RequestId = Annotated[str, Field(min_length=1, max_length=256)]
Score = Annotated[float, Field(ge=0.0, le=1.0)]
TokenCount = _int(0, MAX_TOKENS)
Timestamp = Annotated[float, Field(ge=0.0, le=MAX_TS)]
Checkpoint = tuple[TokenCount, Score, Annotated[str, Field(max_length=256)]]


class _Record(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True, allow_inf_nan=False, strict=False)

    v: Literal[1] = MAJOR

    _v_not_bool = field_validator("v", mode="before")(_not_bool)

    def to_bytes(self) -> bytes:
        """Compact JSON bytes (extra fields included)."""
        return self.model_dump_json(exclude_none=False).encode()


class InferenceEvent(_Record):
    """Written by an inferencer after each request.

    ``checkpoints`` are ``[tokens, score, answer_hash]`` up to where the request
    stopped, or the whole run for an exploration run; ``stop_index`` is the
    checkpoint whose answer was delivered. ``complete`` (optional, minor
    addition) says the checkpoints are the whole run; when absent it is
    inferred (exploration runs, or runs whose last score is under the
    threshold, ran to the end).
    """

    request_id: RequestId
    ts: Timestamp
    context: dict[Annotated[str, Field(min_length=1, max_length=64)], Annotated[str, Field(max_length=128)]] = Field(default_factory=dict)
    features: dict[Annotated[str, Field(min_length=1, max_length=64)],
                   Annotated[float, Field(ge=-MAX_FEATURE, le=MAX_FEATURE)]] = Field(default_factory=dict)
    threshold: Score
    threshold_version: _int(0, MAX_VERSION) = 0
    explore: bool = False
    propensity: Annotated[float, Field(gt=0.0, le=1.0)] = 1.0
    stop_index: _int(0, MAX_TOKENS)
    tokens_used: TokenCount
    tokens_budget: TokenCount
    checkpoints: list[Checkpoint] = Field(min_length=1, json_schema_extra={"maxItems": DEFAULT_MAX_CHECKPOINTS})
    complete: Optional[bool] = None

    @field_validator("checkpoints")
    @classmethod
    def _increasing(cls, cps: list[Checkpoint]) -> list[Checkpoint]:
        for a, b in zip(cps, cps[1:]):
            if b[0] <= a[0]:
                raise ValueError("checkpoints_not_increasing: tokens must strictly increase")
        return cps

    @model_validator(mode="after")
    def _consistent(self) -> "InferenceEvent":
        n = len(self.checkpoints)
        if self.stop_index >= n:
            raise ValueError(f"out_of_range: stop_index {self.stop_index} >= {n} checkpoints")
        if not self.explore and self.stop_index != n - 1:
            raise ValueError("out_of_range: a non-exploration run's checkpoints end where it stopped")
        return self

    @property
    def is_complete(self) -> bool:
        """Whether the checkpoints are the full run (see class doc)."""
        if self.complete is not None:
            return self.complete
        return self.explore or self.checkpoints[-1][1] < self.threshold or self.threshold >= 1.0


_ONE_LABEL = {"anyOf": [{"required": [f], "properties": {f: {"not": {"type": "null"}}}}
                        for f in ("em", "gold_answer_hash")]}


class FeedbackEvent(_Record):
    """Written by the app, a grader or a user action: EM of the delivered
    answer (``em``) and/or the gold answer's hash (at least one not null)."""

    model_config = ConfigDict(json_schema_extra=_ONE_LABEL)

    request_id: RequestId
    ts: Timestamp
    em: Optional[Literal[0, 1]] = None
    gold_answer_hash: Optional[Annotated[str, Field(max_length=256)]] = None
    source: Annotated[str, Field(max_length=64)] = "user"
    weight: Annotated[float, Field(gt=0.0, le=MAX_WEIGHT)] = 1.0

    _em_not_bool = field_validator("em", mode="before")(_not_bool)

    @model_validator(mode="after")
    def _one_label(self) -> "FeedbackEvent":
        if self.em is None and self.gold_answer_hash is None:
            raise ValueError("missing_field: one of em or gold_answer_hash is required")
        return self


class ThresholdRecord(_Record):
    """Written by stopwise to the compacted thresholds topic, one per context."""

    context: Annotated[str, Field(min_length=1, max_length=1024)]
    threshold: Score
    explore_rate: Score
    version: _int(1)
    issued_at: float
    expires_at: float
    policy: str
    est_loss: Optional[Score] = None
    est_loss_ucb: Optional[Score] = None
    est_savings: Optional[float] = None
    n: Annotated[float, Field(ge=0)] = 0.0
    reason: str = ""
    sig: Optional[str] = None


_REASON_BY_TYPE = {
    "missing": "missing_field",
    "finite_number": "not_finite",
    "greater_than_equal": "out_of_range",
    "less_than_equal": "out_of_range",
    "greater_than": "out_of_range",
    "less_than": "out_of_range",
    "too_short": "invalid_value",
    "too_long": "invalid_value",
}


def _reason(err: dict) -> str:
    loc = err.get("loc", ())
    typ = err.get("type", "")
    if typ == "json_invalid":
        return "bad_json"
    if typ == "model_type" and not loc:
        return "not_object"
    if loc and loc[0] == "v":
        return "unknown_version" if typ == "literal_error" else "invalid_value"
    msg = err.get("msg", "")
    head = msg.removeprefix("Value error, ").split(":", 1)[0]
    if head in DecodeError.REASONS:
        return head
    if loc and loc[0] in ("tokens_used", "tokens_budget") and typ == "greater_than_equal":
        return "negative_tokens"
    if len(loc) >= 3 and loc[0] == "checkpoints" and loc[2] == 0 and typ == "greater_than_equal":
        return "negative_tokens"
    return _REASON_BY_TYPE.get(typ, "invalid_value")


def decode(model: type[_Record], data: bytes | bytearray | memoryview | str, max_bytes: int = DEFAULT_MAX_BYTES):
    """Decode bytes into ``model``; raise :class:`DecodeError` on any problem."""
    if data is None:
        raise DecodeError("bad_json", "empty value")
    if isinstance(data, str):
        data = data.encode("utf-8", "surrogatepass")
    if len(data) > max_bytes:
        raise DecodeError("too_large", f"{len(data)} bytes > limit {max_bytes}")
    try:
        # strict: the wire types must be the contract's (no "5" for 5, no
        # true for 1.0), as the JSON Schema says; Python construction stays lax
        return model.model_validate_json(bytes(data), strict=True)
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        where = ".".join(str(p) for p in err.get("loc", ())) or "(record)"
        msg = err.get("msg", "").removeprefix("Value error, ")
        raise DecodeError(_reason(err), f"{where}: {msg}") from None
    except (ValueError, TypeError, RecursionError) as exc:  # defensive: never leak other errors
        raise DecodeError("bad_json", str(exc)[:200]) from None


def decode_inference(data, max_bytes: int = DEFAULT_MAX_BYTES,
                     max_checkpoints: int = DEFAULT_MAX_CHECKPOINTS) -> InferenceEvent:
    """Decode an inference event; more than ``max_checkpoints`` checkpoints is ``too_large``."""
    ev = decode(InferenceEvent, data, max_bytes)
    if len(ev.checkpoints) > max_checkpoints:
        raise DecodeError("too_large", f"{len(ev.checkpoints)} checkpoints > limit {max_checkpoints}")
    return ev


def decode_feedback(data, max_bytes: int = DEFAULT_MAX_BYTES) -> FeedbackEvent:
    return decode(FeedbackEvent, data, max_bytes)


def decode_threshold(data, max_bytes: int = DEFAULT_MAX_BYTES) -> ThresholdRecord:
    return decode(ThresholdRecord, data, max_bytes)


SCHEMA_MODELS: dict[str, type[_Record]] = {
    "inference_event": InferenceEvent,
    "feedback_event": FeedbackEvent,
    "threshold_record": ThresholdRecord,
}
