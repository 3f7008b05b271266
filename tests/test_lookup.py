"""The shared lookup (stopwise.daemon.lookup): the real inferencer's table
and the simulator's table give the same threshold, exploration draw,
propensity, version and source for any records, key, time and request; with
no record in force both serve the configured default WITHOUT exploring."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from stopwise.clients.table import ThresholdTable as ClientTable
from stopwise.daemon.config import parse_config
from stopwise.daemon.context import parents
from stopwise.daemon.lookup import NO_RECORD_EXPLORE_RATE, draw, lookup
from stopwise.daemon.records import ThresholdRecord
from stopwise.daemon.stoprule import explore_draw
from stopwise.sim.simulator import ThresholdTable as SimTable
from stopwise.sim.simulator import simulate
from stopwise.sim.world import WorldRequest

KEYS = ["*", "task=a", "task=b", "task=a|domain=x", "task=a|domain=y", "task=b|domain=x"]

records = st.dictionaries(
    st.sampled_from(KEYS),
    st.tuples(st.sampled_from([0.5, 0.8, 0.9, 0.95, 1.0]), st.sampled_from([0.0, 0.05, 0.3, 1.0]),
              st.integers(1, 50), st.sampled_from([10.0, 50.0, 100.0, 1e9])),
    max_size=len(KEYS))


def _record(ctx: str, spec: tuple) -> ThresholdRecord:
    thr, rate, version, expires = spec
    return ThresholdRecord(context=ctx, threshold=thr, explore_rate=rate, version=version, issued_at=0.0,
                           expires_at=expires, policy="p")


@given(recs=records, key=st.sampled_from(KEYS + ["task=c|domain=z", "task=b|domain=q"]),
       now=st.sampled_from([0.0, 10.0, 49.0, 50.0, 99.0, 1e6]), rid=st.text(min_size=1, max_size=12),
       default=st.sampled_from([1.0, 0.9]))
def test_client_and_simulator_apply_the_same_rule(recs, key, now, rid, default):
    client = ClientTable("127.0.0.1:1", "thr", dimensions=("task", "domain"), default_threshold=default,
                         clock=lambda: now, allow_unsigned=True)
    sim = SimTable(default)
    for ctx, spec in recs.items():
        r = _record(ctx, spec)
        client.apply([(ctx, json.dumps(r.model_dump(mode="json")).encode())])
        sim.apply(r)
    d = client.decide(rid, key)
    thr, rate, version, source = sim.lookup(key, now)
    explored, prop = draw(rid, rate)
    assert (d.threshold, d.explore, d.propensity, d.version, d.source) == (thr, explored, prop, version, source)
    # and both follow the documented rule: first unexpired record along the chain, else the default
    live = [k for k in parents(key) if k in recs and recs[k][3] > now]
    if live:
        t, r, v, _ = recs[live[0]]
        assert (thr, rate, version, source) == (t, r, v, live[0])
        assert explored == (r > 0 and explore_draw(rid) < r)
    else:
        assert (thr, rate, version, source, explored, prop) == (default, NO_RECORD_EXPLORE_RATE, 0, "", False, 1.0)


class Silent:
    """A core that learns nothing and never publishes."""

    def on_inference(self, ev, now):
        return []

    def on_feedback(self, ev, now):
        return []

    def tick(self, now):
        return []


def test_no_record_means_no_exploration_even_with_an_initial_rate():
    """With nothing published the simulator serves the default threshold and
    explores nothing, as the real inferencer does (exploration.initial_rate
    is the daemon's starting rate for a NEW record, not a no-record rate)."""
    cfg = parse_config({"publish": {"interval_s": 1.0}, "exploration": {"initial_rate": 0.25}})
    cps = [[10, 0.5, "x"], [20, 0.9, "y"], [30, 0.95, "y"]]
    world = [WorldRequest.model_validate({"request_id": f"r{i}", "ts": i * 0.001, "context": {"task": "qa"},
                                          "checkpoints": cps, "gold_answer_hash": "y",
                                          "feedback": {"present": False}}) for i in range(400)]
    res = simulate(world, cfg, core=Silent())
    assert [o.explored for o in res.outcomes] == [False] * 400
    assert {o.threshold for o in res.outcomes} == {1.0}
    assert sum(explore_draw(o.request_id) < 0.25 for o in res.outcomes) > 50   # the old rule would have explored these
    client = ClientTable("127.0.0.1:1", "thr", dimensions=("task",), allow_unsigned=True)
    assert [(d.threshold, d.explore, d.propensity, d.version, d.source) for d in
            (client.decide(o.request_id, {"task": "qa"}) for o in res.outcomes)] == [(1.0, False, 1.0, 0, "")] * 400
    assert lookup({}, "task=qa", 0.0) == (1.0, 0.0, 0, "")
