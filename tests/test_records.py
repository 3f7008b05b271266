"""Record contracts: round trips, typed rejections, and no crash on any input."""

from __future__ import annotations

import json
from typing import Any, Callable

import pytest
from hypothesis import given, strategies as st

from stopwise.daemon.errors import DecodeError
from stopwise.daemon.records import (
    MAX_FEATURE, MAX_TOKENS, MAX_TS, MAX_VERSION, MAX_WEIGHT, FeedbackEvent, InferenceEvent, ThresholdRecord,
    decode_feedback, decode_inference, decode_threshold,
)

DECODERS: list[Callable[..., Any]] = [decode_inference, decode_feedback, decode_threshold]

# ------------------------------------------------------------------ strategies
finite = st.floats(allow_nan=False, allow_infinity=False)
stamp = st.floats(min_value=0.0, max_value=MAX_TS)
feature = st.floats(min_value=-MAX_FEATURE, max_value=MAX_FEATURE)
unit = st.floats(min_value=0.0, max_value=1.0)
text = st.text(max_size=20)
ident = st.text(min_size=1, max_size=40)


@st.composite
def inference_dicts(draw: st.DrawFn) -> dict[str, Any]:
    n = draw(st.integers(1, 12))
    steps = draw(st.lists(st.integers(1, 1000), min_size=n, max_size=n))
    tokens = [sum(steps[: i + 1]) for i in range(n)]
    cps = [[t, draw(unit), draw(st.text(max_size=12))] for t in tokens]
    explore = draw(st.booleans())
    stop = draw(st.integers(0, n - 1)) if explore else n - 1
    d: dict[str, Any] = {
        "v": 1, "request_id": draw(ident), "ts": draw(stamp),
        "context": draw(st.dictionaries(st.text(min_size=1, max_size=10), st.text(max_size=10), max_size=3)),
        "features": draw(st.dictionaries(st.text(min_size=1, max_size=10), feature, max_size=3)),
        "threshold": draw(unit), "threshold_version": draw(st.integers(0, 10**6)),
        "explore": explore, "propensity": draw(st.floats(min_value=0.001, max_value=1.0)),
        "stop_index": stop, "tokens_used": tokens[stop], "tokens_budget": draw(st.integers(0, 10**6)),
        "checkpoints": cps,
    }
    if draw(st.booleans()):
        d["complete"] = draw(st.booleans())
    return d


@st.composite
def feedback_dicts(draw: st.DrawFn) -> dict[str, Any]:
    d: dict[str, Any] = {"v": 1, "request_id": draw(ident), "ts": draw(stamp),
                         "source": draw(st.text(max_size=10)),
                         "weight": draw(st.floats(min_value=1e-6, max_value=1e6))}
    which = draw(st.sampled_from(["em", "gold", "both"]))
    if which in ("em", "both"):
        d["em"] = draw(st.sampled_from([0, 1]))
    if which in ("gold", "both"):
        d["gold_answer_hash"] = draw(st.text(max_size=16))
    return d


@st.composite
def threshold_dicts(draw: st.DrawFn) -> dict[str, Any]:
    issued = draw(st.floats(min_value=0, max_value=2e9))
    return {
        "v": 1, "context": draw(ident), "threshold": draw(unit), "explore_rate": draw(unit),
        "version": draw(st.integers(1, 10**9)), "issued_at": issued, "expires_at": issued + 3600,
        "policy": draw(text), "est_loss": draw(st.none() | unit), "est_loss_ucb": draw(st.none() | unit),
        "est_savings": draw(st.none() | finite), "n": draw(st.floats(min_value=0, max_value=1e9)),
        "reason": draw(text), "sig": draw(st.none() | st.text(max_size=64)),
    }


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | finite | st.text(max_size=10),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)

CASES = [(InferenceEvent, decode_inference, inference_dicts()),
         (FeedbackEvent, decode_feedback, feedback_dicts()),
         (ThresholdRecord, decode_threshold, threshold_dicts())]
IDS = ["inference", "feedback", "threshold"]


def _only_typed_errors(decoder: Callable[..., Any], data: bytes | str, **kw: Any) -> None:
    try:
        decoder(data, **kw)
    except DecodeError as err:
        assert err.reason in DecodeError.REASONS, err.reason
        assert str(err)


# ------------------------------------------------------------------ round trips
@pytest.mark.parametrize(("model", "decoder", "strategy"), CASES, ids=IDS)
@given(data=st.data())
def test_round_trip(model, decoder, strategy, data) -> None:
    d = data.draw(strategy)
    rec = decoder(json.dumps(d).encode())
    assert isinstance(rec, model)
    again = decoder(rec.to_bytes())
    assert again == rec
    assert json.loads(rec.to_bytes()) == json.loads(again.to_bytes())
    assert model(**d) == rec


@pytest.mark.parametrize(("model", "decoder", "strategy"), CASES, ids=IDS)
@given(data=st.data())
def test_unknown_extra_fields_are_kept(model, decoder, strategy, data) -> None:
    d = data.draw(strategy)
    extra = data.draw(st.dictionaries(st.text(min_size=1, max_size=8).map(lambda s: "x_" + s), json_values,
                                      min_size=1, max_size=3))
    rec = decoder(json.dumps({**d, **extra}).encode())
    assert rec.model_extra == extra
    assert {k: json.loads(rec.to_bytes())[k] for k in extra} == extra


# ------------------------------------------------------------------ never crash
@pytest.mark.parametrize("decoder", DECODERS, ids=IDS)
@given(raw=st.binary(max_size=300))
def test_arbitrary_bytes_only_raise_decode_error(decoder, raw: bytes) -> None:
    _only_typed_errors(decoder, raw)


@pytest.mark.parametrize("decoder", DECODERS, ids=IDS)
@given(value=json_values)
def test_arbitrary_json_only_raises_decode_error(decoder, value: Any) -> None:
    _only_typed_errors(decoder, json.dumps(value).encode())


@pytest.mark.parametrize(("model", "decoder", "strategy"), CASES, ids=IDS)
@given(data=st.data())
def test_mutated_valid_records_only_raise_decode_error(model, decoder, strategy, data) -> None:
    d = data.draw(strategy)
    key = data.draw(st.sampled_from(sorted(d)))
    action = data.draw(st.sampled_from(["replace", "delete", "nest"]))
    if action == "delete":
        del d[key]
    elif action == "replace":
        d[key] = data.draw(json_values | st.sampled_from([float("nan"), float("inf"), -1, 10**30, "", [], {}]))
    else:
        d[key] = [d[key], d[key]]
    raw = json.dumps(d).encode()  # NaN/Infinity become the JSON literals
    if data.draw(st.booleans()):
        i = data.draw(st.integers(0, len(raw)))
        raw = raw[:i] + data.draw(st.binary(max_size=4)) + raw[i + 1:]
    _only_typed_errors(decoder, raw)


@pytest.mark.parametrize("decoder", DECODERS, ids=IDS)
@pytest.mark.parametrize("raw", [
    b"", b"null", b"[" * 50_000 + b"]" * 50_000, b'{"a":' * 10_000, b'"\\ud800"', b'{"v": 1, "request_id": "\\udfff"}',
    b"\xff\xfe\x00", b'{"v": 1e400}', b'{"v": 1}' * 3, "{\"v\": 1, \"request_id\": \"\udc80\"}",
], ids=["empty", "null", "deep-list", "deep-obj", "lone-surrogate", "surrogate-field", "bad-utf8", "huge-number",
        "trailing", "str-surrogate"])
def test_nasty_inputs_only_raise_decode_error(decoder, raw) -> None:
    _only_typed_errors(decoder, raw)


# ------------------------------------------------------------------ specific rejections
def _valid_inference() -> dict[str, Any]:
    return {"v": 1, "request_id": "r1", "ts": 1.0, "context": {"task": "qa"}, "features": {"len": 12.0},
            "threshold": 0.9, "threshold_version": 3, "explore": False, "propensity": 0.8, "stop_index": 2,
            "tokens_used": 30, "tokens_budget": 100,
            "checkpoints": [[10, 0.2, "a"], [20, 0.5, "b"], [30, 0.95, "b"]]}


def _raw(d: dict[str, Any], **changes: Any) -> bytes:
    out = {**d, **changes}
    return json.dumps(out).encode()


@pytest.mark.parametrize(("raw", "reason"), [
    (b"{not json", "bad_json"),
    (b"[1, 2]", "not_object"),
    (b'"a string"', "not_object"),
    (json.dumps({k: v for k, v in _valid_inference().items() if k != "request_id"}).encode(), "missing_field"),
    (json.dumps({k: v for k, v in _valid_inference().items() if k != "checkpoints"}).encode(), "missing_field"),
    (_raw(_valid_inference(), threshold=float("nan")), "not_finite"),
    (_raw(_valid_inference(), ts=float("inf")), "not_finite"),
    (_raw(_valid_inference(), features={"x": float("-inf")}), "not_finite"),
    (_raw(_valid_inference(), checkpoints=[[10, 0.2, "a"], [20, float("nan"), "b"], [30, 0.95, "b"]]), "not_finite"),
    (_raw(_valid_inference(), threshold=1.5), "out_of_range"),
    (_raw(_valid_inference(), checkpoints=[[10, 0.2, "a"], [20, -0.1, "b"], [30, 0.95, "b"]]), "out_of_range"),
    (_raw(_valid_inference(), stop_index=5), "out_of_range"),
    (_raw(_valid_inference(), tokens_used=-1), "negative_tokens"),
    (_raw(_valid_inference(), tokens_budget=-5), "negative_tokens"),
    (_raw(_valid_inference(), checkpoints=[[-10, 0.2, "a"], [20, 0.5, "b"], [30, 0.95, "b"]]), "negative_tokens"),
    (_raw(_valid_inference(), checkpoints=[[10, 0.2, "a"], [10, 0.5, "b"], [30, 0.95, "b"]]), "checkpoints_not_increasing"),
    (_raw(_valid_inference(), checkpoints=[[30, 0.2, "a"], [20, 0.5, "b"], [40, 0.95, "b"]]), "checkpoints_not_increasing"),
    (_raw(_valid_inference(), v=2), "unknown_version"),
    (_raw(_valid_inference(), v=0), "unknown_version"),
    (_raw(_valid_inference(), request_id=""), "invalid_value"),
    (_raw(_valid_inference(), checkpoints=[]), "invalid_value"),
], ids=lambda x: x if isinstance(x, str) else None)
def test_inference_rejections_carry_their_reason(raw: bytes, reason: str) -> None:
    with pytest.raises(DecodeError) as info:
        decode_inference(raw)
    assert info.value.reason == reason, str(info.value)


def test_valid_inference_sample_decodes() -> None:
    ev = decode_inference(_raw(_valid_inference()))
    assert ev.stop_index == 2 and ev.checkpoints[-1] == (30, 0.95, "b") and ev.context == {"task": "qa"}
    assert not ev.is_complete  # stopped early: last score passed the threshold


def test_over_the_size_limit_is_too_large() -> None:
    raw = _raw(_valid_inference(), padding="x" * 2000)
    assert decode_inference(raw, max_bytes=len(raw)).model_extra == {"padding": "x" * 2000}
    with pytest.raises(DecodeError) as info:
        decode_inference(raw, max_bytes=len(raw) - 1)
    assert info.value.reason == "too_large" and str(len(raw)) in info.value.detail


def test_feedback_rejections() -> None:
    base = {"v": 1, "request_id": "r1", "ts": 5.0, "em": 1}
    for changes, reason in [({"em": 2}, "invalid_value"), ({"weight": 0}, "out_of_range"),
                            ({"weight": float("nan")}, "not_finite"), ({"v": 3}, "unknown_version"),
                            ({"ts": "5"}, "invalid_value"), ({"ts": True}, "invalid_value"),
                            ({"request_id": 5}, "invalid_value")]:
        with pytest.raises(DecodeError) as info:
            decode_feedback(_raw(base, **changes))
        assert info.value.reason == reason, (changes, str(info.value))
    with pytest.raises(DecodeError) as info:
        decode_feedback(_raw({"v": 1, "request_id": "r1", "ts": 5.0}))
    assert info.value.reason == "missing_field"
    assert decode_feedback(_raw({"v": 1, "request_id": "r1", "ts": 5.0, "gold_answer_hash": "h"})).em is None


def test_threshold_rejections() -> None:
    base = {"v": 1, "context": "*", "threshold": 0.9, "explore_rate": 0.1, "version": 1,
            "issued_at": 0.0, "expires_at": 60.0, "policy": "reference"}
    assert decode_threshold(_raw(base)).threshold == 0.9
    for changes, reason in [({"threshold": 1.01}, "out_of_range"), ({"explore_rate": -0.1}, "out_of_range"),
                            ({"version": 0}, "out_of_range"), ({"issued_at": float("inf")}, "not_finite"),
                            ({"v": 2}, "unknown_version")]:
        with pytest.raises(DecodeError) as info:
            decode_threshold(_raw(base, **changes))
        assert info.value.reason == reason, (changes, str(info.value))


def test_decode_error_detail_names_the_field() -> None:
    with pytest.raises(DecodeError) as info:
        decode_inference(_raw(_valid_inference(), tokens_used=-1))
    assert info.value.detail.startswith("tokens_used:")


# ------------------------------------------------------------------ bounds (issue 13)
def test_feedback_weight_of_1e300_is_refused_naming_the_field() -> None:
    """Issue 13, reproduction 1: a weight of 1e300 (allowed by the schema then)
    made n_eff NaN and the daemon exit; it now goes to the DLQ at decode."""
    base = {"v": 1, "request_id": "r1", "ts": 5.0, "em": 1}
    for weight in (1e300, 1.3e154, MAX_WEIGHT * 1.000001):
        with pytest.raises(DecodeError) as info:
            decode_feedback(_raw(base, weight=weight))
        assert info.value.reason == "out_of_range" and info.value.detail.startswith("weight:"), str(info.value)
    assert decode_feedback(_raw(base, weight=MAX_WEIGHT)).weight == MAX_WEIGHT


@pytest.mark.parametrize(("field", "value"), [("em", True), ("em", False), ("v", True)])
def test_a_boolean_is_not_a_number_in_feedback(field: str, value: bool) -> None:
    """Issue 13, 'Also': `em: true` and `v: true` were accepted (True == 1)."""
    with pytest.raises(DecodeError) as info:
        decode_feedback(_raw({"v": 1, "request_id": "r1", "ts": 5.0, "em": 1}, **{field: value}))
    assert info.value.reason == "invalid_value" and info.value.detail.startswith(f"{field}:"), str(info.value)


@pytest.mark.parametrize(("field", "value"), [
    ("v", True), ("stop_index", True), ("tokens_used", True), ("tokens_budget", False),
    ("threshold_version", True), ("threshold", True), ("propensity", True), ("ts", True),
])
def test_a_boolean_is_not_a_number_in_inference(field: str, value: bool) -> None:
    with pytest.raises(DecodeError) as info:
        decode_inference(_raw(_valid_inference(), **{field: value}))
    assert info.value.reason == "invalid_value" and info.value.detail.startswith(f"{field}:"), str(info.value)


@pytest.mark.parametrize(("changes", "where"), [
    ({"ts": -1.0}, "ts"), ({"ts": MAX_TS * 2}, "ts"), ({"ts": 1.7e12}, "ts"),
    ({"tokens_used": MAX_TOKENS + 1}, "tokens_used"), ({"tokens_budget": 10**30}, "tokens_budget"),
    ({"threshold_version": MAX_VERSION + 1}, "threshold_version"),
    ({"features": {"len": 1e300}}, "features.len"), ({"features": {"len": -MAX_FEATURE * 2}}, "features.len"),
    ({"checkpoints": [[10, 0.2, "a"], [20, 0.5, "b"], [MAX_TOKENS + 1, 0.95, "b"]]}, "checkpoints.2.0"),
    ({"propensity": 0.0}, "propensity"), ({"propensity": 1.5}, "propensity"),
])
def test_inference_numbers_out_of_bounds_are_out_of_range(changes: dict, where: str) -> None:
    with pytest.raises(DecodeError) as info:
        decode_inference(_raw(_valid_inference(), **changes))
    assert info.value.reason == "out_of_range" and info.value.detail.startswith(f"{where}:"), str(info.value)


def test_feedback_timestamp_bounds() -> None:
    base = {"v": 1, "request_id": "r1", "ts": 5.0, "em": 1}
    for ts in (-0.5, 1.7e12, 1e300):
        with pytest.raises(DecodeError) as info:
            decode_feedback(_raw(base, ts=ts))
        assert info.value.reason == "out_of_range" and info.value.detail.startswith("ts:")
    assert decode_feedback(_raw(base, ts=0.0)).ts == 0.0 and decode_feedback(_raw(base, ts=MAX_TS)).ts == MAX_TS
