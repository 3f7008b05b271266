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
from dataclasses import asdict, dataclass

from ..context import ContextKeyer
from ..errors import DecodeError
from ..records import FeedbackEvent, InferenceEvent

Checkpoint = tuple[int, float, str]


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
        d = asdict(self)
        d["checkpoints"] = [list(cp) for cp in self.checkpoints]
        return json.dumps(d, separators=(",", ":"), allow_nan=False).encode()

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
        numbers = [ex.ts, ex.feedback_ts, ex.threshold, *ex.features.values(), *(cp[1] for cp in cps)]
        if not all(math.isfinite(x) for x in numbers):
            raise DecodeError("not_finite", "labelled example: NaN or infinity")
        if not 0.0 <= ex.threshold <= 1.0 or any(not 0.0 <= cp[1] <= 1.0 for cp in cps):
            raise DecodeError("out_of_range", "labelled example: threshold and scores must be in [0, 1]")
        if cps[0][0] < 0 or any(b[0] <= a[0] for a, b in zip(cps, cps[1:])):
            raise DecodeError("checkpoints_not_increasing", "labelled example: tokens must be >= 0 and increase")
        return ex


def from_events(inf: InferenceEvent, fb: FeedbackEvent, keyer: ContextKeyer) -> LabelledExample:
    """Join one inference event with its feedback."""
    return LabelledExample(
        request_id=inf.request_id, context=dict(inf.context), context_key=keyer.key(inf.context),
        features=dict(inf.features), ts=inf.ts, threshold=inf.threshold, threshold_version=inf.threshold_version,
        explore=inf.explore, propensity=inf.propensity, complete=inf.is_complete, stop_index=inf.stop_index,
        checkpoints=tuple((int(t), float(s), str(a)) for t, s, a in inf.checkpoints),
        tokens_budget=inf.tokens_budget, em=fb.em, gold_answer_hash=fb.gold_answer_hash,
        weight=fb.weight, feedback_ts=fb.ts,
    )
