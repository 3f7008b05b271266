"""One generic check for every registered policy (as River's ``checks/``):
clone, pickle and snapshot-codec round-trips, determinism, inputs not mutated."""

from __future__ import annotations

import copy
import pickle

import pytest

from stopwise.daemon.core import statecodec
from stopwise.policies import POLICIES, make_policy
from stopwise.policies.base import Policy, Proposal

from policy_helpers import outcomes, view_for

KEYS = ("task=qa|domain=finance", "task=math|domain=science", "*")


def _run(policy: Policy, outs, views, steps: int = 4) -> list[tuple]:
    decisions = []
    chunk = max(1, len(outs) // steps)
    for s in range(steps):
        for o in outs[s * chunk:(s + 1) * chunk]:
            for k in KEYS:
                policy.learn_one(k, o)
        for k in KEYS:
            p = policy.decide(k, views[k], float(s))
            assert isinstance(p, Proposal)
            assert 0.0 <= p.threshold <= 1.0 and 0.0 <= p.explore_rate <= 1.0
            decisions.append((k, p.threshold, round(p.explore_rate, 12), p.reason))
    return decisions


@pytest.fixture(scope="module")
def data():
    outs = outcomes(1200, seed=3, threshold=0.9, explore_rate=0.3)
    views = {k: view_for(outs, k) for k in KEYS}
    return outs, views


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_policy_checks(name, data):
    outs, views = data
    policy = make_policy(name)
    assert policy.name == name
    # parameters are stored under their own names; clone copies them, unlearned
    fresh = policy.clone()
    assert fresh is not policy and type(fresh) is type(policy) and repr(fresh) == repr(policy)

    # inputs are not mutated
    outs_before = copy.deepcopy(outs)
    views_before = copy.deepcopy(views)
    first = _run(policy, outs, views)
    assert outs == outs_before and views == views_before

    # determinism: a fresh copy fed the same stream decides the same
    assert _run(policy.clone(), outs, views) == first
    assert _run(fresh, outs, views) == first     # the clone taken before learning is unlearned

    # pickle round trip mid-stream continues identically
    a = policy.clone()
    _run(a, outs[:600], views, steps=2)
    b = pickle.loads(pickle.dumps(a))
    # ... and so does the snapshot codec's (plain data, no pickle) round trip
    c = statecodec.decode(statecodec.encode(a))
    assert type(c) is type(a)
    rest = _run(a, outs[600:], views, steps=2)
    assert rest == _run(b, outs[600:], views, steps=2)
    assert rest == _run(c, outs[600:], views, steps=2)

    # clone() refuses unknown parameters
    with pytest.raises(ValueError):
        policy.clone(not_a_param=1)


def test_registry_has_the_required_names():
    assert {"reference", "static", "naive", "offline", "bandit", "ab", "load_aware", "ensemble"} <= set(POLICIES)


def test_unknown_name_lists_valid_ones():
    with pytest.raises(ValueError) as exc:
        make_policy("nope")
    assert "reference" in str(exc.value) and "ensemble" in str(exc.value)


def test_bad_params_are_value_errors():
    with pytest.raises(ValueError):
        make_policy("static", threshold=2.0)
    with pytest.raises(ValueError):
        make_policy("static", nope=1)
