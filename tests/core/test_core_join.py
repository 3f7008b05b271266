from __future__ import annotations

from stopwise.daemon.context import ContextKeyer
from stopwise.daemon.core.join import Joiner

from core_helpers import feedback, inference


def joiner(ttl=60.0, cap=100):
    return Joiner(ttl_s=ttl, max_entries=cap, keyer=ContextKeyer(("task", "domain")))


def test_inference_then_feedback_joins():
    j = joiner()
    (u,) = j.add_inference(inference("r1"), now=0.0)      # unlabelled evidence, at once
    assert u.request_id == "r1" and u.em is None and u.gold_answer_hash is None and not u.followup
    assert u.weight == 1.0 and u.feedback_ts == u.ts == 0.0 and u.context_key == "task=qa"
    assert len(j) == 1 and j.stats.pending == 1 and j.stats.unlabelled == 1 and j.stats.joined == 0
    (ex,) = j.add_feedback(feedback("r1", em=0), now=1.0)
    assert ex.request_id == "r1" and ex.em == 0 and ex.context_key == "task=qa" and ex.followup
    assert ex.checkpoints == u.checkpoints and ex.feedback_ts == 1.0
    assert len(j) == 0 and j.stats.joined == 1 and j.stats.pending == 0


def test_feedback_then_inference_joins():
    j = joiner()
    assert j.add_feedback(feedback("r1", em=1), now=0.0) == []
    (ex,) = j.add_inference(inference("r1"), now=1.0)    # labelled at once: no unlabelled copy
    assert ex.em == 1 and ex.feedback_ts == 1.0 and not ex.followup
    assert j.stats.joined == 1 and j.stats.unlabelled == 0


def test_duplicates_of_either_half_are_idempotent():
    j = joiner()
    j.add_inference(inference("r1"), 0.0)
    assert j.add_inference(inference("r1"), 0.5) == []          # duplicate while pending
    assert len(j.add_feedback(feedback("r1"), 1.0)) == 1
    assert j.add_feedback(feedback("r1"), 2.0) == []            # late duplicate feedback
    assert j.add_inference(inference("r1"), 3.0) == []          # late duplicate inference
    assert j.stats.joined == 1 and j.stats.duplicates == 3 and len(j) == 0


def test_first_feedback_wins():
    j = joiner()
    j.add_feedback(feedback("r1", em=0), 0.0)
    j.add_feedback(feedback("r1", em=1), 0.1)
    (ex,) = j.add_inference(inference("r1"), 0.2)
    assert ex.em == 0
    assert j.stats.duplicates == 1


def test_ttl_expiry_counts_each_side_and_never_labels():
    j = joiner(ttl=10.0)
    j.add_inference(inference("a"), 0.0)
    j.add_feedback(feedback("c"), 1.0)
    j.add_inference(inference("b"), 5.0)
    assert j.expire(9.0) == 0
    assert j.expire(11.0) == 2                 # a (no feedback) and c (no inference)
    assert j.stats.expired_no_feedback == 1 and j.stats.expired_no_inference == 1
    assert len(j) == 1 and j.stats.pending == 1
    # the expired inference is gone: a late feedback starts a new pending entry, no example
    assert j.add_feedback(feedback("a"), 12.0) == []
    assert j.stats.joined == 0


def test_eviction_cap_evicts_oldest_first_and_counts():
    j = joiner(cap=3)
    for i in range(5):
        j.add_inference(inference(f"r{i}"), float(i))
    assert len(j) == 3 and j.stats.evicted == 2 and j.stats.unlabelled == 5
    assert j.add_feedback(feedback("r0"), 6.0) == []   # r0 was evicted: no join
    (ex,) = j.add_feedback(feedback("r4"), 6.0)
    assert ex.request_id == "r4" and ex.followup


def test_missing_feedback_is_never_em1():
    j = joiner(ttl=1.0)
    out = []
    for i in range(10):
        out += j.add_inference(inference(f"r{i}"), 0.0)
    assert [ex.em for ex in out] == [None] * 10 and [ex.gold_answer_hash for ex in out] == [None] * 10
    assert j.expire(5.0) == 10
    assert j.stats.joined == 0 and j.stats.expired_no_feedback == 10 and len(j) == 0


def test_clock_stepping_back_does_not_expire_early():
    j = joiner(ttl=10.0)
    j.add_inference(inference("a"), 100.0)
    j.add_inference(inference("b"), 50.0)     # clock stepped back: treated as 100
    assert j.expire(105.0) == 0
    assert j.expire(111.0) == 2


from hypothesis import given, strategies as st


@given(st.lists(st.tuples(st.integers(0, 7), st.booleans()), max_size=60))
def test_any_arrival_order_joins_each_request_at_most_once(events):
    """Property: whatever the order and duplication, a request is joined
    exactly once iff both halves arrived (no TTL, no cap pressure here);
    its unlabelled example comes once iff its inference came first, and then
    (only then) the labelled one is a followup."""
    j = joiner(ttl=1e9, cap=1000)
    joined: list[str] = []
    unlabelled: list[str] = []
    followups: set[str] = set()
    first: dict[str, bool] = {}
    seen: dict[str, set] = {}
    for t, (rid_n, is_inf) in enumerate(events):
        rid = f"r{rid_n}"
        first.setdefault(rid, is_inf)
        seen.setdefault(rid, set()).add(is_inf)
        out = j.add_inference(inference(rid), float(t)) if is_inf else j.add_feedback(feedback(rid), float(t))
        for ex in out:
            assert ex.request_id == rid
            if ex.em is None:
                assert not ex.followup
                unlabelled.append(rid)
            else:
                joined.append(rid)
                if ex.followup:
                    followups.add(rid)
    assert len(joined) == len(set(joined)) and len(unlabelled) == len(set(unlabelled))
    assert set(joined) == {rid for rid, halves in seen.items() if halves == {True, False}}
    assert set(unlabelled) == {rid for rid, inf_first in first.items() if inf_first}
    assert followups == set(joined) & set(unlabelled)
    assert j.stats.joined + len(j) == len(seen) and j.stats.unlabelled == len(unlabelled)
    assert j.stats.duplicates == len(events) - sum(len(h) for h in seen.values())
