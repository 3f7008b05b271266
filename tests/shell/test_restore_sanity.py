"""Issue 13, deliverable 1: state that fails validation on restore is refused
with a clear message naming the shard, and the shard is rebuilt (from the
start of the retained input: nothing lost), never crash-looped."""

from __future__ import annotations

import time

import pytest
from structlog.testing import capture_logs

from stopwise.daemon.config import Config
from stopwise.daemon.core.engine import Controller, dump_state, load_state
from stopwise.daemon.core.join import Joiner
from stopwise.daemon.records import FeedbackEvent
from stopwise.daemon.shell.assignment import Assignment
from stopwise.daemon.shell.sanity import StateError, check_state
from stopwise.daemon.shell.snapshots import Snapshot

from daemon_helpers import batch


def _states(cfg: Config):
    j, c = Joiner.from_config(cfg), Controller(cfg)
    for inf, fb in batch("s", 40, 1):
        for ex in j.add_inference(inf, 1.0):
            c.learn(ex, 1.0)
        if inf.request_id[-1] in "02468":
            for ex in j.add_feedback(fb, 1.0):
                c.learn(ex, 1.0)
    c.tick(2.0)
    return j, c


def test_healthy_states_pass_after_a_round_trip() -> None:
    j, c = _states(Config())
    check_state("join", load_state(dump_state(j)))
    check_state("learn", load_state(dump_state(c)))


def test_wrong_type_is_refused() -> None:
    j, c = _states(Config())
    with pytest.raises(StateError, match="state is a Controller, not a Joiner"):
        check_state("join", c)


def test_non_finite_learn_state_is_refused_naming_where() -> None:
    _, c = _states(Config())
    c._traffic["*"] = float("nan")
    with pytest.raises(StateError, match=r"non-finite number nan at \._traffic\['\*'\]"):
        check_state("learn", c)
    c._traffic["*"] = 1e300
    with pytest.raises(StateError, match="beyond"):
        check_state("learn", c)


def test_pending_feedback_past_the_decode_bounds_is_refused() -> None:
    """A snapshot from before the bounds can hold the 1e300 weight of issue 13."""
    j, _ = _states(Config())
    fb = FeedbackEvent.model_construct(request_id="old", ts=1.0, em=1, gold_answer_hash=None, source="u", weight=1e300)
    j.add_feedback(fb, 3.0)
    with pytest.raises(StateError, match=r"pending request 'old': feedback weight 1e\+300"):
        check_state("join", j)


class _Stub(Assignment):
    def __init__(self, cfg: Config, blobs: dict[bytes, bytes]) -> None:
        self.cfg, self.kill_switch, self.snapshots_refused = cfg, False, 0
        self.state_view = type("View", (), {"latest": blobs})()


@pytest.mark.parametrize("poison", ["nan", "wrong_type"])
def test_restore_refuses_poisoned_state_logs_the_shard_and_rebuilds(poison: str) -> None:
    cfg = Config()
    j, c = _states(cfg)
    if poison == "nan":
        c._traffic["task=qa"] = float("inf")
        state = c
    else:
        state = j  # a Joiner stored as a learn shard
    snap = Snapshot("learn/0", {"stopwise.examples:0": 40}, dump_state(state), time.time())
    stub = _Stub(cfg, {b"learn/0": snap.encode(None)})
    with capture_logs() as logs:
        shard = stub._restore("learn/0")
    assert stub.snapshots_refused == 1
    refused = [e for e in logs if e["event"] == "snapshot_refused"]
    assert refused and refused[0]["shard"] == "learn/0" and refused[0]["log_level"] == "error"
    # rebuilt fresh, from the start of the retained input (no positions: seek to the beginning)
    assert isinstance(shard.obj, Controller) and shard.positions == {} and shard.obj.unique_examples == 0
    assert shard.obj.tick(5.0)  # and it works
