"""The world file: JSONL, one request per line, holding the full latent run
of every request (all checkpoints), its gold answer, and how (whether, when)
its user would give feedback. The simulator replays it closed-loop.

Line format (JSON object; unknown extra fields are kept and ignored)::

    {"request_id": "r1", "ts": 0.0, "context": {"task": "qa"}, "features": {},
     "checkpoints": [[10, 0.4, "a"], [20, 0.9, "b"]],
     "gold_answer_hash": "b",
     "feedback": {"present": true, "delay_s": 2.0, "em_override": null}}

>>> line = b'{"request_id": "r1", "ts": 0, "checkpoints": [[10, 0.4, "a"], [20, 0.9, "b"]], "gold_answer_hash": "b", "feedback": {"present": true}}'
>>> req = parse_line(line, 1)
>>> req.tokens_full, req.feedback.delay_s
(20, 0.0)
>>> try:
...     parse_line(b'{"request_id": "r1", "ts": 0, "checkpoints": [[20, 0.4, "a"], [10, 0.9, "b"]], "feedback": {"present": false}}', 7)
... except WorldError as e:
...     print(e)
<world>:7: checkpoints: checkpoints_not_increasing: tokens must strictly increase
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Iterable, Iterator, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from stopwise.daemon.errors import StopwiseError
from stopwise.daemon.records import InferenceEvent, RequestId

SCHEMA_FILE = "world.schema.json"

# Same element types and checks as the inference event's checkpoints.
_Checkpoints = InferenceEvent.model_fields["checkpoints"].annotation  # list[[tokens, score, answer_hash]]
_ContextMap = InferenceEvent.model_fields["context"].annotation
_FeatureMap = InferenceEvent.model_fields["features"].annotation


class WorldError(StopwiseError):
    """A world file line that is not a valid request: ``file:line: reason``."""

    def __init__(self, file: str, line: int, reason: str) -> None:
        self.file, self.line, self.reason = file, line, reason
        super().__init__(f"{file}:{line}: {reason}")


class WorldFeedback(BaseModel):
    """How the user would respond: whether feedback comes, after how many
    seconds of event time, and optionally a forced (possibly wrong) EM label."""

    model_config = ConfigDict(extra="allow", frozen=True, allow_inf_nan=False)

    present: bool
    delay_s: Annotated[float, Field(ge=0.0)] = 0.0
    em_override: Optional[Literal[0, 1]] = None


class WorldRequest(BaseModel):
    """One request of the world: its full run and its feedback behaviour."""

    model_config = ConfigDict(extra="allow", frozen=True, allow_inf_nan=False)

    request_id: RequestId
    ts: float
    context: _ContextMap = Field(default_factory=dict)  # type: ignore[valid-type]
    features: _FeatureMap = Field(default_factory=dict)  # type: ignore[valid-type]
    checkpoints: _Checkpoints = Field(min_length=1)  # type: ignore[valid-type]
    gold_answer_hash: Optional[Annotated[str, Field(max_length=256)]] = None
    feedback: WorldFeedback

    _check_increasing = field_validator("checkpoints")(InferenceEvent._increasing.__func__)  # type: ignore[attr-defined]

    @property
    def tokens_full(self) -> int:
        """Tokens of the full run (last checkpoint)."""
        return self.checkpoints[-1][0]

    def em_of(self, answer_hash: str) -> int | None:
        """True EM of a delivered answer: vs. gold when known, else the
        override (the label is all there is), else unknown."""
        if self.gold_answer_hash is not None:
            return int(answer_hash == self.gold_answer_hash)
        return self.feedback.em_override

    def to_line(self) -> str:
        """One JSONL line (no trailing newline)."""
        return self.model_dump_json()


def _reason(exc: ValidationError) -> str:
    err = exc.errors(include_url=False)[0]
    where = ".".join(str(p) for p in err.get("loc", ())) or "(line)"
    msg = err.get("msg", "").removeprefix("Value error, ")
    if err.get("type") == "json_invalid":
        return f"not valid JSON: {err.get('ctx', {}).get('error', msg)}"
    if err.get("type") == "model_type" and not err.get("loc"):
        return "not a JSON object"
    return f"{where}: {msg}"


def parse_line(line: bytes | str, lineno: int, file: str = "<world>") -> WorldRequest:
    """Validate one line; raise :class:`WorldError` naming the line and why."""
    try:
        return WorldRequest.model_validate_json(line)
    except ValidationError as exc:
        raise WorldError(file, lineno, _reason(exc)) from None


def iter_world(path: str | Path, *, errors: list[WorldError] | None = None) -> Iterator[WorldRequest]:
    """Yield the requests of a world file in file order. Blank lines are
    skipped. A bad line raises :class:`WorldError`, or, when ``errors`` is a
    list, is appended to it and skipped (so every bad line can be reported)."""
    name = str(path)
    try:
        fh = open(path, "rb")
    except OSError as exc:
        raise WorldError(name, 0, f"cannot read: {exc.strerror or exc}") from None
    with fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                yield parse_line(line, lineno, name)
            except WorldError as exc:
                if errors is None:
                    raise
                errors.append(exc)


def read_world(path: str | Path, *, collect: bool = False) -> tuple[list[WorldRequest], list[WorldError]]:
    """Read a whole world file, sorted by ``ts`` (stable). With
    ``collect=True`` bad lines are returned instead of raised. Duplicate
    request ids are refused (each must be a distinct request)."""
    errors: list[WorldError] | None = [] if collect else None
    reqs = list(iter_world(path, errors=errors))
    seen: set[str] = set()
    for i, r in enumerate(reqs):
        if r.request_id in seen:
            err = WorldError(str(path), 0, f"duplicate request_id {r.request_id!r} (request #{i + 1})")
            if errors is None:
                raise err
            errors.append(err)
        seen.add(r.request_id)
    reqs.sort(key=lambda r: r.ts)
    return reqs, errors or []


def write_world(requests: Iterable[WorldRequest | dict], path: str | Path) -> int:
    """Write requests (models or plain dicts) as JSONL; return the count."""
    n = 0
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        for r in requests:
            fh.write(r.to_line() if isinstance(r, WorldRequest) else json.dumps(r, separators=(",", ":")))
            fh.write("\n")
            n += 1
    return n


def render_schema() -> str:
    """The JSON Schema of one world line, as shipped (``sim/world.schema.json``)."""
    schema = WorldRequest.model_json_schema(mode="validation")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = "stopwise/world_request/v1"
    schema["description"] = "One line of a stopwise world file (JSONL): a request's full run and its feedback behaviour."
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def load_schema() -> dict:
    """The shipped world schema, read from the installed package."""
    return json.loads((Path(__file__).with_name(SCHEMA_FILE)).read_text(encoding="utf-8"))


def read_meta(path: str | Path) -> dict:
    """The optional sidecar ``<world>.meta.json`` written by the scenario
    generator (scenario name, seed, drift events); ``{}`` when absent."""
    p = Path(str(path) + ".meta.json")
    if not p.exists():
        return {}
    return json.loads(p.read_text())
