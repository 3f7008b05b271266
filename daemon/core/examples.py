"""The labelled example: an inference event joined with its feedback.

>>> from stopwise.daemon.records import InferenceEvent, FeedbackEvent
>>> from stopwise.daemon.context import ContextKeyer
>>> inf = InferenceEvent(request_id="r1", ts=1.0, context={"task": "qa"}, threshold=0.9,
...     stop_index=1, tokens_used=20, tokens_budget=40, checkpoints=[[10, 0.5, "a"], [20, 0.95, "b"]])
>>> fb = FeedbackEvent(request_id="r1", ts=2.0, em=1)
>>> ex = from_events(inf, fb, ContextKeyer(("task", "domain")))
>>> ex.context_key, ex.complete, ex.em
('task=qa', False, 1)
>>> LabelledExample.from_bytes(ex.to_bytes()) == ex
True
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, fields
from operator import itemgetter, lt

from ..context import ContextKeyer
from ..errors import DecodeError
from ..records import FeedbackEvent, InferenceEvent

Checkpoint = tuple[int, float, str]
_TOKENS, _SCORE = itemgetter(0), itemgetter(1)


@dataclass(frozen=True, slots=True)
class LabelledExample:
    """One request with its label. ``em`` is the EM (0/1) of the DELIVERED
    answer as reported by feedback (``None`` when only a gold hash came);
    ``complete`` says ``checkpoints`` are the full run; ``weight`` is the
    feedback's weight."""

    request_id: str
    context: dict[str, str]
    context_key: str
    features: dict[str, float]
    ts: float
    threshold: float
    threshold_version: int
    explore: bool
    propensity: float
    complete: bool
    stop_index: int
    checkpoints: tuple[Checkpoint, ...]
    tokens_budget: int
    em: int | None
    gold_answer_hash: str | None
    weight: float
    feedback_ts: float

    def to_bytes(self) -> bytes:
        """Compact JSON (for the examples topic)."""
        d = {name: getattr(self, name) for name in _FIELDS}   # no deep copy (asdict's)
        d["checkpoints"] = [list(cp) for cp in self.checkpoints]
        return _DUMPS(d).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> "LabelledExample":
        """Decode :meth:`to_bytes` output; raise :class:`DecodeError` if invalid."""
        try:
            d = json.loads(data)
        except (ValueError, TypeError, UnicodeDecodeError) as exc:
            raise DecodeError("bad_json", f"labelled example: {exc}"[:200]) from None
        if not isinstance(d, dict):
            raise DecodeError("not_object", "labelled example must be a JSON object")
        try:
            cps = tuple((int(t), float(s), str(a)) for t, s, a in d["checkpoints"])
            ex = cls(
                request_id=str(d["request_id"]), context={str(k): str(v) for k, v in d["context"].items()},
                context_key=str(d["context_key"]), features={str(k): float(v) for k, v in d["features"].items()},
                ts=float(d["ts"]), threshold=float(d["threshold"]), threshold_version=int(d["threshold_version"]),
                explore=bool(d["explore"]), propensity=float(d["propensity"]), complete=bool(d["complete"]),
                stop_index=int(d["stop_index"]), checkpoints=cps, tokens_budget=int(d["tokens_budget"]),
                em=None if d["em"] is None else int(d["em"]),
                gold_answer_hash=None if d["gold_answer_hash"] is None else str(d["gold_answer_hash"]),
                weight=float(d["weight"]), feedback_ts=float(d["feedback_ts"]),
            )
        except KeyError as exc:
            raise DecodeError("missing_field", f"labelled example: {exc.args[0]}") from None
        except (ValueError, TypeError, AttributeError) as exc:
            raise DecodeError("invalid_value", f"labelled example: {exc}"[:200]) from None
        if not cps or not 0 <= ex.stop_index < len(cps):
            raise DecodeError("out_of_range", "labelled example: stop_index outside checkpoints")
        if ex.em not in (None, 0, 1) or not (0.0 < ex.propensity <= 1.0) or not math.isfinite(ex.weight) or ex.weight <= 0:
            raise DecodeError("invalid_value", "labelled example: em, propensity or weight out of range")
        scores = list(map(_SCORE, cps))
        if not all(map(math.isfinite, (ex.ts, ex.feedback_ts, ex.threshold, *ex.features.values(), *scores))):
            raise DecodeError("not_finite", "labelled example: NaN or infinity")
        if not 0.0 <= ex.threshold <= 1.0 or min(scores) < 0.0 or max(scores) > 1.0:
            raise DecodeError("out_of_range", "labelled example: threshold and scores must be in [0, 1]")
        tokens = list(map(_TOKENS, cps))
        if tokens[0] < 0 or not all(map(lt, tokens, tokens[1:])):
            raise DecodeError("checkpoints_not_increasing", "labelled example: tokens must be >= 0 and increase")
        return ex


_KEYS: dict[tuple, str] = {}
_KEYS_CAP = 4096


def context_key(keyer: ContextKeyer, context: dict) -> str:
    """``keyer.key(context)``, memoised on the context's items (a bounded
    cache: cleared when it reaches ``_KEYS_CAP`` entries)."""
    try:
        memo = (keyer.dimensions, *context.items())
        key = _KEYS.get(memo)
    except TypeError:  # an unhashable value: no memo
        return keyer.key(context)
    if key is None:
        if len(_KEYS) >= _KEYS_CAP:
            _KEYS.clear()
        key = _KEYS[memo] = keyer.key(context)
    return key


_TUPLE_ONLY = {tuple}


def _checkpoints(cps) -> tuple[Checkpoint, ...]:
    # validated events already hold (int, float, str) tuples: keep them
    if set(map(type, cps)) == _TUPLE_ONLY:
        return tuple(cps)
    return tuple((int(t), float(s), str(a)) for t, s, a in cps)


_FIELDS = tuple(f.name for f in fields(LabelledExample))
_DUMPS = json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode


_SETTERS = tuple(LabelledExample.__dict__[name].__set__ for name in _FIELDS)


def _trusted(*values) -> LabelledExample:
    """``LabelledExample(*values)`` without the frozen ``__init__``'s
    per-field ``object.__setattr__`` (same object, a fraction of the cost)."""
    ex = object.__new__(LabelledExample)
    for put, value in zip(_SETTERS, values):
        put(ex, value)
    return ex


def from_events(inf: InferenceEvent, fb: FeedbackEvent, keyer: ContextKeyer) -> LabelledExample:
    """Join one inference event with its feedback."""
    return _trusted(
        inf.request_id, dict(inf.context), context_key(keyer, inf.context), dict(inf.features), inf.ts,
        inf.threshold, inf.threshold_version, inf.explore, inf.propensity, inf.is_complete, inf.stop_index,
        _checkpoints(inf.checkpoints), inf.tokens_budget, fb.em, fb.gold_answer_hash, fb.weight, fb.ts,
    )
