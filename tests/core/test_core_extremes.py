"""Issue 13, deliverable 1: the core never produces a non-finite estimate,
whatever the numbers the decoder lets through (at the extremes of their
bounds), and a context that fails is skipped, never the tick."""

from __future__ import annotations

import math
from dataclasses import replace

from hypothesis import HealthCheck, given, settings, strategies as st

from stopwise.daemon.core.engine import Controller
from stopwise.daemon.records import MAX_TOKENS, MAX_TS, MAX_WEIGHT, ThresholdRecord

from core_helpers import example, small_cfg

TINY = 5e-324   # the smallest positive float: 1 / TINY overflows
KEYS = ("task=qa", "task=code", "task=chat")

weights = st.sampled_from([TINY, 1e-300, 1e-6, 1.0, 1e3, MAX_WEIGHT]) | st.floats(min_value=TINY, max_value=MAX_WEIGHT)
propensities = st.sampled_from([TINY, 1e-300, 1e-9, 0.5, 1.0]) | st.floats(min_value=TINY, max_value=1.0)


@st.composite
def examples(draw: st.DrawFn, rid: str):
    n = draw(st.integers(1, 6))
    steps = draw(st.lists(st.sampled_from([1, 7, 1000, MAX_TOKENS // 8]), min_size=n, max_size=n))
    tokens = [min(MAX_TOKENS, sum(steps[: i + 1])) for i in range(n)]
    tokens = [t for i, t in enumerate(tokens) if i == 0 or t > tokens[i - 1]]
    cps = [(t, draw(st.sampled_from([0.0, 1e-300, 0.5, 0.9, 1.0]) | st.floats(0.0, 1.0)),
            draw(st.sampled_from("ab"))) for t in tokens]
    explore = draw(st.booleans())
    return example(cps, threshold=draw(st.sampled_from([0.0, 0.5, 0.9, 1.0]) | st.floats(0.0, 1.0)),
                   explore=explore, propensity=draw(propensities), complete=draw(st.booleans()),
                   em=draw(st.sampled_from([None, 0, 1])), rid=rid, key=draw(st.sampled_from(KEYS)),
                   weight=draw(weights))


def _finite_record(rec: ThresholdRecord) -> None:
    for name in ("threshold", "explore_rate", "issued_at", "expires_at", "est_loss", "est_loss_ucb",
                 "est_savings", "n"):
        value = getattr(rec, name)
        assert value is None or math.isfinite(value), (rec.context, name, value)
    assert 0.0 <= rec.threshold <= 1.0 and 0.0 <= rec.explore_rate <= 1.0


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data(), repeat=st.sampled_from([1, 1, 50, 400]), now=st.sampled_from([0.0, 1.0, MAX_TS]))
def test_learn_and_tick_give_finite_records_at_the_extremes(data, repeat: int, now: float) -> None:
    ctl = Controller(small_cfg(guardrails={"min_evidence": 0}))
    drawn = data.draw(st.lists(examples(rid="x"), min_size=1, max_size=8))
    i = 0
    for ex in drawn:
        for _ in range(repeat):   # many examples of the same extreme kind
            ctl.learn(replace(ex, request_id=f"r{i}"), now)
            i += 1
    decisions = ctl.tick(now)
    # the first tick publishes every known context: none was skipped by the guard
    assert {d.record.context for d in decisions} == set(ctl.known_contexts())
    for d in decisions:
        _finite_record(d.record)
    for d in ctl.tick(now + 10 * 3600):   # a refresh after more time: still finite
        _finite_record(d.record)


def test_absurd_weights_past_the_decoder_never_fail_the_tick() -> None:
    """Issue 13, reproduction 1 inside the core: weights of 1e300 (which the
    decoder now refuses) made n_eff NaN and the ThresholdRecord raise in tick,
    taking the daemon down. Now every record is finite, or its context is
    skipped with a warning: the tick itself never raises."""
    ctl = Controller(small_cfg(guardrails={"min_evidence": 0}))
    cps = ((10, 0.5, "a"), (20, 0.9, "b"), (30, 0.95, "b"))
    for i in range(50):
        ctl.learn(example(cps, rid=f"big{i}", weight=1e300, em=i % 2), 1.0)
        ctl.learn(example(cps, rid=f"inf{i}", weight=float("inf"), explore=True, threshold=0.5,
                          propensity=TINY, key="task=code"), 1.0)
    decisions = ctl.tick(2.0)
    for d in decisions:
        _finite_record(d.record)


def test_a_context_that_fails_is_skipped_and_logged_not_the_tick(monkeypatch) -> None:
    ctl = Controller(small_cfg(guardrails={"min_evidence": 0}))
    cps = ((10, 0.5, "a"), (20, 0.9, "b"), (30, 0.95, "b"))
    for i, key in enumerate(KEYS):
        ctl.learn(example(cps, rid=f"r{i}", key=key), 1.0)
    decide = ctl.policy.decide

    def broken(key, view, now):
        if key == "task=code":
            raise ZeroDivisionError("a bug in one context")
        return decide(key, view, now)

    monkeypatch.setattr(ctl.policy, "decide", broken)
    from structlog.testing import capture_logs

    with capture_logs() as logs:
        published = {d.record.context for d in ctl.tick(2.0)}
    assert published == set(ctl.known_contexts()) - {"task=code"} and "task=qa" in published
    failed = [e for e in logs if e["event"] == "tick_context_failed"]
    assert [e["context"] for e in failed] == ["task=code"] and failed[0]["log_level"] == "error"


def test_a_non_finite_estimate_is_refused_before_the_record(monkeypatch) -> None:
    ctl = Controller(small_cfg(guardrails={"min_evidence": 0}))
    cps = ((10, 0.5, "a"), (20, 0.9, "b"), (30, 0.95, "b"))
    for i, key in enumerate(KEYS):
        ctl.learn(example(cps, rid=f"r{i}", key=key), 1.0)
    stats = ctl._stats

    def poisoned(key, memo=None):
        st = stats(key, memo)
        if key == "task=chat":
            st = replace(st, n_eff=float("nan"))
        return st

    monkeypatch.setattr(ctl, "_stats", poisoned)
    from structlog.testing import capture_logs

    with capture_logs() as logs:
        published = {d.record.context for d in ctl.tick(2.0)}
    assert "task=chat" not in published and "task=qa" in published
    assert [e["context"] for e in logs if e["event"] == "tick_context_skipped"] == ["task=chat"]


def test_a_context_whose_stats_fail_is_skipped(monkeypatch) -> None:
    ctl = Controller(small_cfg(guardrails={"min_evidence": 0}))
    cps = ((10, 0.5, "a"), (20, 0.9, "b"), (30, 0.95, "b"))
    for i, key in enumerate(KEYS):
        ctl.learn(example(cps, rid=f"r{i}", key=key), 1.0)
    stats = ctl._stats

    def broken(key, memo=None):
        if key == "task=qa":
            raise FloatingPointError("overflow")
        return stats(key, memo)

    monkeypatch.setattr(ctl, "_stats", broken)
    published = {d.record.context for d in ctl.tick(2.0)}
    assert "task=qa" not in published and {"task=code", "task=chat", "*"} <= published
