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

The daemon writes examples in batches, one examples-topic record per context
key and input batch; a single-example record still decodes:

>>> decode_examples(encode_examples([ex, ex])) == ([ex, ex], [])
True
>>> decode_examples(ex.to_bytes()) == ([ex], [])
True
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, fields
from operator import attrgetter, itemgetter, lt

from ..context import ContextKeyer
from ..errors import DecodeError
from ..records import FeedbackEvent, InferenceEvent

Checkpoint = tuple[int, float, str]
_TOKENS, _SCORE, _ANSWER = itemgetter(0), itemgetter(1), itemgetter(2)


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
    followup: bool = False
    """A labelled example whose unlabelled evidence (the same inference
    event, learned the moment it arrived) was already emitted: the learner
    only refines it with the label."""

    def to_bytes(self) -> bytes:
        """Compact JSON of one example (see :func:`encode_examples` for the
        batched form the daemon writes)."""
        return _DUMPS(_as_dict(self)).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> "LabelledExample":
        """Decode :meth:`to_bytes` output; raise :class:`DecodeError` if invalid."""
        d = _loads(data)
        if not isinstance(d, dict):
            raise DecodeError("not_object", "labelled example must be a JSON object")
        return _from_dict(d)


def _as_dict(ex: LabelledExample) -> dict:
    return dict(zip(_FIELDS, _ROW(ex)))   # no deep copy (asdict's); tuples encode as arrays


def _loads(data: bytes):
    try:
        return json.loads(data)
    except (ValueError, TypeError, UnicodeDecodeError) as exc:
        raise DecodeError("bad_json", f"labelled example: {exc}"[:200]) from None


def _from_dict(d: dict) -> LabelledExample:
    try:
        row = [d[name] for name in _REQUIRED]
        row += [d.get(name, default) for name, default in _OPTIONAL.items()]
    except KeyError as exc:
        raise DecodeError("missing_field", f"labelled example: {exc.args[0]}") from None
    return _from_row(row)


_INT, _NUM, _STR = {int}, {int, float}, {str}


def _from_row(row) -> LabelledExample:
    """Validate one example given as its field values in ``_FIELDS`` order
    (as JSON decoding gives them). Element-wise checks are ``map``-based,
    so a long checkpoint list costs little Python work."""
    if not isinstance(row, list) or len(row) != len(_FIELDS):
        raise DecodeError("invalid_value", f"labelled example: {len(_FIELDS)} field values expected")
    (rid, context, ckey, features, ts, threshold, version, explore, propensity, complete,
     stop_index, cps, tokens_budget, em, gold, weight, feedback_ts, followup) = row
    try:
        cps = tuple(map(tuple, cps))
        if not cps or set(map(len, cps)) != {3}:
            raise DecodeError("invalid_value", "labelled example: checkpoints must be [tokens, score, answer]")
        tokens, scores = list(map(_TOKENS, cps)), list(map(_SCORE, cps))
        if set(map(type, tokens)) != _INT or not set(map(type, scores)) <= _NUM \
                or set(map(type, map(_ANSWER, cps))) != _STR:
            raise DecodeError("invalid_value", "labelled example: checkpoint types are [int, number, string]")
        ex = _trusted(
            str(rid), {str(k): str(v) for k, v in context.items()}, str(ckey),
            {str(k): float(v) for k, v in features.items()}, float(ts), float(threshold), int(version),
            bool(explore), float(propensity), bool(complete), int(stop_index), cps, int(tokens_budget),
            None if em is None else int(em), None if gold is None else str(gold),
            float(weight), float(feedback_ts), followup is True,
        )
    except (ValueError, TypeError, AttributeError) as exc:
        raise DecodeError("invalid_value", f"labelled example: {exc}"[:200]) from None
    if not 0 <= ex.stop_index < len(cps):
        raise DecodeError("out_of_range", "labelled example: stop_index outside checkpoints")
    if ex.em not in (None, 0, 1) or not (0.0 < ex.propensity <= 1.0) or not math.isfinite(ex.weight) or ex.weight <= 0:
        raise DecodeError("invalid_value", "labelled example: em, propensity or weight out of range")
    if not all(map(math.isfinite, (ex.ts, ex.feedback_ts, ex.threshold, *ex.features.values(), *scores))):
        raise DecodeError("not_finite", "labelled example: NaN or infinity")
    if not 0.0 <= ex.threshold <= 1.0 or min(scores) < 0.0 or max(scores) > 1.0:
        raise DecodeError("out_of_range", "labelled example: threshold and scores must be in [0, 1]")
    if tokens[0] < 0 or not all(map(lt, tokens, tokens[1:])):
        raise DecodeError("checkpoints_not_increasing", "labelled example: tokens must be >= 0 and increase")
    return ex


BATCH_VERSION = 1
"""Major version of an examples-topic batch record."""


def encode_examples(examples) -> bytes:
    """Several examples (of one context key) as ONE examples-topic record,
    one row of field values per example:
    ``{"v": 1, "fields": ["request_id", ...], "examples": [[...], ...]}``.
    Kafka's per-record cost (produce, fetch, unpack) is then paid once per
    batch, and rows encode and decode faster than objects."""
    return _DUMPS({"v": BATCH_VERSION, "fields": _FIELDS, "examples": list(map(_ROW, examples))}).encode()


def decode_examples(data: bytes) -> tuple[list[LabelledExample], list[tuple[int, DecodeError]]]:
    """Decode an examples-topic record: a batch (:func:`encode_examples`) or
    a single example (:meth:`LabelledExample.to_bytes`, as older versions
    wrote). Returns the valid examples and ``(index, error)`` for each
    invalid one; raises :class:`DecodeError` when the record as a whole is
    unreadable (see the module docstring for an example)."""
    d = _loads(data)
    if not isinstance(d, dict):
        raise DecodeError("not_object", "examples record must be a JSON object")
    if "examples" not in d:
        return [_from_dict(d)], []
    if d.get("v") != BATCH_VERSION:
        raise DecodeError("unknown_version", f"examples batch version {d.get('v')!r} (known: {BATCH_VERSION})")
    rows, names = d.get("examples"), d.get("fields")
    if not isinstance(rows, list) or not isinstance(names, list):
        raise DecodeError("invalid_value", "examples batch: 'fields' and 'examples' must be lists")
    if tuple(names) == _FIELDS:
        parse = _from_row
    else:  # another field order or extra fields (a newer minor version): go by name
        def parse(row):
            if not isinstance(row, list) or len(row) != len(names):
                raise DecodeError("invalid_value", f"labelled example: {len(names)} field values expected")
            return _from_dict(dict(zip(map(str, names), row)))
    good, bad = [], []
    for i, row in enumerate(rows):
        try:
            good.append(parse(row))
        except DecodeError as exc:
            bad.append((i, exc))
    return good, bad


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
_OPTIONAL = {"followup": False}
"""Fields added after version 1 of the record, with the value an older record means."""
_REQUIRED = tuple(f for f in _FIELDS if f not in _OPTIONAL)
_ROW = attrgetter(*_FIELDS)
_DUMPS = json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode


_SETTERS = tuple(LabelledExample.__dict__[name].__set__ for name in _FIELDS)


def _trusted(*values) -> LabelledExample:
    """``LabelledExample(*values)`` without the frozen ``__init__``'s
    per-field ``object.__setattr__`` (same object, a fraction of the cost)."""
    ex = object.__new__(LabelledExample)
    for put, value in zip(_SETTERS, values):
        put(ex, value)
    return ex


def from_events(inf: InferenceEvent, fb: FeedbackEvent | None, keyer: ContextKeyer,
                followup: bool = False) -> LabelledExample:
    """Join one inference event with its feedback; ``fb=None`` gives the
    UNLABELLED example of the inference event alone (``em`` and
    ``gold_answer_hash`` None, weight 1, ``feedback_ts`` = the event's ts).

    >>> from stopwise.daemon.records import InferenceEvent
    >>> inf = InferenceEvent(request_id="r", ts=1.0, threshold=1.0, stop_index=0, tokens_used=5,
    ...     tokens_budget=5, checkpoints=[[5, 0.9, "a"]])
    >>> ex = from_events(inf, None, ContextKeyer(("task",)))
    >>> ex.em, ex.gold_answer_hash, ex.followup
    (None, None, False)
    """
    if fb is None:
        em, gold, weight, fts = None, None, 1.0, inf.ts
    else:
        em, gold, weight, fts = fb.em, fb.gold_answer_hash, fb.weight, fb.ts
    return _trusted(
        inf.request_id, dict(inf.context), context_key(keyer, inf.context), dict(inf.features), inf.ts,
        inf.threshold, inf.threshold_version, inf.explore, inf.propensity, inf.is_complete, inf.stop_index,
        _checkpoints(inf.checkpoints), inf.tokens_budget, em, gold, weight, fts, followup,
    )
