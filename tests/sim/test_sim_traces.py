from __future__ import annotations

import random
import statistics

from stopwise.daemon.stoprule import explores, stop_index
from stopwise.sim.traces import (THREE_CONTEXTS, best_threshold, make_request, to_events, traffic, true_cost_curve,
                                 true_curves, true_loss_curve)

EASY, MIDDLE, RISKY = THREE_CONTEXTS
GRID = (0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.93, 0.95, 0.97, 0.98, 0.99)


def test_requests_are_deterministic_given_the_rng():
    a = make_request(random.Random(1), MIDDLE, "x", 0.0)
    b = make_request(random.Random(1), MIDDLE, "x", 0.0)
    assert a == b and len(a.checkpoints) == MIDDLE.n_checkpoints


def test_scores_rise_and_answers_stabilise():
    rng = random.Random(2)
    reqs = [make_request(rng, prof, f"r{i}", 0.0) for i in range(600) for prof in THREE_CONTEXTS]
    n = MIDDLE.n_checkpoints
    mean_score = [statistics.fmean(r.checkpoints[k][1] for r in reqs) for k in range(n)]
    assert mean_score[-1] > mean_score[0] + 0.3
    final_share = [statistics.fmean(r.checkpoints[k][2] == r.checkpoints[-1][2] for r in reqs) for k in range(n)]
    assert final_share == sorted(final_share) and final_share[-1] == 1.0
    for r in reqs:
        assert all(0.0 <= s <= 1.0 for _, s, _ in r.checkpoints)
        assert all(b[0] > a[0] for a, b in zip(r.checkpoints, r.checkpoints[1:]))


def test_risky_context_has_confident_scores_with_changing_answers():
    def confident_but_changes(prof):
        rng = random.Random(3)
        hits = 0
        for i in range(2000):
            r = make_request(rng, prof, f"r{i}", 0.0)
            hits += any(s >= 0.9 and a != r.checkpoints[-1][2] for _, s, a in r.checkpoints)
        return hits / 2000
    assert confident_but_changes(RISKY) > 3 * confident_but_changes(EASY)


def test_true_curves_differ_and_are_ordered():
    curves = {p.context["task"]: true_loss_curve(p, GRID, n=4000) for p in THREE_CONTEXTS}
    for c in curves.values():
        assert c[0.5] > c[0.99]
    assert curves["extract"][0.9] < curves["qa"][0.9] < curves["math"][0.9]
    best = [best_threshold(p, GRID, 0.01, n=4000) for p in THREE_CONTEXTS]
    assert best[0] < best[1] < best[2]
    cost = true_cost_curve(EASY, (0.6, 0.99, 1.0), n=2000)
    assert cost[0.6] < cost[0.99] < cost[1.0] == 1.0
    assert true_curves(EASY, (1.0,), n=100)[1.0] == (0.0, 1.0)


def test_to_events_applies_the_shared_stop_rule():
    rng = random.Random(4)
    for i in range(300):
        req = make_request(rng, RISKY, f"q{i}", float(i))
        inf, fb = to_events(req, 0.9, 0.3, threshold_version=7)
        assert inf.threshold_version == 7 and inf.explore == explores(req.request_id, 0.3)
        full = req.checkpoints
        if inf.explore:
            assert len(inf.checkpoints) == len(full) and inf.complete and inf.propensity == 0.3
        else:
            k = stop_index(full, 0.9)
            assert inf.stop_index == k and len(inf.checkpoints) == k + 1
            assert inf.complete == (k == len(full) - 1) and abs(inf.propensity - 0.7) < 1e-12
        delivered = inf.checkpoints[inf.stop_index][2]
        assert fb.em == int(delivered == req.gold_answer_hash) and fb.gold_answer_hash is None
    _, fb = to_events(req, 1.0, 0.0, with_gold=True)
    assert fb.gold_answer_hash == req.gold_answer_hash


def test_traffic_mixes_profiles_by_weight():
    reqs = traffic(random.Random(5), THREE_CONTEXTS, 900, rate=10.0)
    tasks = [r.context["task"] for r in reqs]
    assert {t: tasks.count(t) > 200 for t in set(tasks)} == {"extract": True, "qa": True, "math": True}
    assert reqs[10].ts == 1.0
