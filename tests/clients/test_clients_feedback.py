"""FeedbackSource: delay, jitter, missing rate, robustness; FleetStats accounting."""

from __future__ import annotations

import time

import pytest

from stopwise.clients.feedback import FeedbackSource
from stopwise.clients.inferencer import FleetStats


def test_delay_and_jitter_bounds():
    sent = []
    fb = FeedbackSource(sent.append, delay_s=10.0, jitter=0.5, missing=0.0)
    for i in range(200):
        fb.schedule(f"r{i}", em=1, gold_answer_hash="3", now=0.0)
    assert fb.pump(4.99) == 0
    assert fb.pump(15.01) == 200
    delays = [e["ts"] for e in sent]
    assert min(delays) >= 5.0 and max(delays) <= 15.0 and max(delays) - min(delays) > 5.0
    assert delays == sorted(delays)
    assert all(e["gold_answer_hash"] == "3" and e["source"] == "grader" for e in sent)


def test_missing_rate_is_respected_and_stable():
    fb = FeedbackSource(lambda e: None, missing=0.3, delay_s=0.0)
    first = [fb.schedule(f"r{i}", em=0, now=0.0) for i in range(2000)]
    again = FeedbackSource(lambda e: None, missing=0.3, delay_s=0.0)
    assert first == [again.schedule(f"r{i}", em=0, now=0.0) for i in range(2000)]
    frac = 1 - sum(first) / len(first)
    assert 0.25 < frac < 0.35 and fb.skipped == 2000 - sum(first)


def test_emit_errors_do_not_stop_the_source():
    calls = []

    def emit(e):
        calls.append(e)
        if len(calls) == 1:
            raise RuntimeError("boom")

    fb = FeedbackSource(emit, delay_s=0.0, jitter=0.0)
    fb.schedule("a", em=1, now=0.0)
    fb.schedule("b", em=1, now=0.0)
    assert fb.pump(1.0) == 2 and fb.errors == 1 and fb.emitted == 1


def test_background_thread_emits_due_events():
    sent = []
    fb = FeedbackSource(sent.append, delay_s=0.05, jitter=0.0).start(interval_s=0.01)
    fb.schedule("r", em=1)
    end = time.monotonic() + 5
    while not sent and time.monotonic() < end:
        time.sleep(0.01)
    fb.stop()
    assert [e["request_id"] for e in sent] == ["r"]


def test_bad_parameters():
    with pytest.raises(ValueError):
        FeedbackSource(lambda e: None, missing=1.5)
    with pytest.raises(ValueError):
        FeedbackSource(lambda e: None, delay_s=-1)


def test_fleet_stats_windows_and_em_drop():
    s = FleetStats(window_s=10.0)
    ctx = {"task": "digits", "domain": "clean"}
    for i in range(10):
        # delivered wrong while the full run was right on 2 of 10 requests
        s.record(ctx, 0.8, False, 500, 1000, int(i >= 2), 1, now=float(i))
    s.record(ctx, 0.9, False, 1000, 1000, 1, 1, now=25.0)   # closes the first window
    row = s.summary()["task=digits|domain=clean"]
    assert row["requests"] == 11 and row["em_drop"] == round(2 / 11, 4)
    assert len(s.timeline) == 1
    w = s.timeline[0]["contexts"]["task=digits|domain=clean"]
    assert w["requests"] == 10 and w["token_ratio"] == 0.5 and w["em_drop"] == 0.2 and w["mean_threshold"] == 0.8
