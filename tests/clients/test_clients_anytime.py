"""The reference anytime model: shipped ONNX files, stopping rule, traces, training/export parity."""

from __future__ import annotations

import itertools
import json
from collections import defaultdict

import numpy as np
import pytest

from stopwise.clients.anytime import (DOMAINS, MODEL_DIR, METADATA_FILE, TASKS, AnytimeModel, digits_traces,
                                      load_data, make_request)
from stopwise.daemon.stoprule import stop_index


@pytest.fixture(scope="module")
def model() -> AnytimeModel:
    return AnytimeModel.load()


def test_shipped_files_are_small_and_described():
    meta = json.loads((MODEL_DIR / METADATA_FILE).read_text())
    files = [MODEL_DIR / b for b in meta["blocks"]]
    assert len(files) == 4 and all(f.exists() for f in files)
    assert sum(f.stat().st_size for f in files) < 200_000
    # later exits are more accurate than the first, and noise hurts
    assert meta["accuracy_clean"][-1] > meta["accuracy_clean"][0] + 0.2
    assert meta["accuracy_noisy"][-1] < meta["accuracy_clean"][-1]
    assert meta["cumulative_macs"] == sorted(meta["cumulative_macs"])


def test_run_matches_stoprule_on_the_full_trace(model: AnytimeModel):
    """Running with a threshold stops exactly where stoprule.stop_index would on the full run."""
    for i, tau in itertools.product(range(60), (0.5, 0.8, 0.95, 1.0)):
        req = make_request(3, i)
        full = model.run(req.x)
        assert full.complete and len(full.checkpoints) == model.n_exits
        res = model.run(req.x, tau)
        k = stop_index(full.checkpoints, tau)
        assert res.stop_index == k
        assert [c[2] for c in res.checkpoints] == [c[2] for c in full.checkpoints[:k + 1]]
        assert res.tokens == full.checkpoints[k][0]
        assert res.complete == (k == model.n_exits - 1)


def test_explore_runs_every_block_and_delivers_the_full_answer(model: AnytimeModel):
    req = make_request(5, 1)
    res = model.run(req.x, threshold=0.0, explore=True)
    assert res.complete and res.stop_index == model.n_exits - 1
    assert res.answer == model.run_plain(req.x)


def test_requests_are_deterministic_and_cover_contexts():
    a, b = make_request(1, 10), make_request(1, 10)
    assert a.request_id == b.request_id and a.context == b.context and np.array_equal(a.x, b.x)
    seen = {(make_request(1, i).context["task"], make_request(1, i).context["domain"]) for i in range(200)}
    assert seen == set(itertools.product(TASKS, DOMAINS))
    hard = [make_request(2, i) for i in range(200)]
    assert all(r.label in (1, 3, 5, 7, 8, 9) for r in hard if r.context["task"] == "hard")


def test_digits_traces_shape_and_determinism():
    t1 = list(digits_traces(seed=4, n=300, start_ts=100.0, rate=50.0, feedback_missing=0.2))
    t2 = list(digits_traces(seed=4, n=300, start_ts=100.0, rate=50.0, feedback_missing=0.2))
    assert t1 == t2 and len(t1) == 300
    ts = [t["ts"] for t in t1]
    assert ts == sorted(ts) and ts[0] > 100.0
    assert 300 / 50.0 * 0.7 < ts[-1] - 100.0 < 300 / 50.0 * 1.3
    for t in t1[:20]:
        cps = t["checkpoints"]
        assert len(cps) == 4 and [c[0] for c in cps] == sorted(c[0] for c in cps)
        assert all(0.0 <= c[1] <= 1.0 and isinstance(c[2], str) for c in cps)
        assert t["gold_answer_hash"] in [str(d) for d in range(10)]
    missing = sum(not t["feedback"]["present"] for t in t1) / len(t1)
    assert 0.1 < missing < 0.3
    assert len({t["request_id"] for t in t1}) == 300


def test_contexts_have_different_risk_curves():
    """At the same threshold the noisy domain loses EM more often than the clean one."""
    loss = defaultdict(lambda: [0, 0])
    for t in digits_traces(seed=9, n=2000):
        cps = t["checkpoints"]
        k = stop_index(cps, 0.7)
        full_ok = cps[-1][2] == t["gold_answer_hash"]
        acc = loss[t["context"]["domain"]]
        acc[0] += int(full_ok and cps[k][2] != cps[-1][2])
        acc[1] += 1
    clean = loss["clean"][0] / loss["clean"][1]
    noisy = loss["noisy"][0] / loss["noisy"][1]
    assert noisy > clean + 0.01


def test_training_export_parity(tmp_path):
    """A (briefly) trained net exported per block gives the same probabilities under onnxruntime."""
    pytest.importorskip("onnx")
    from stopwise.clients.train_anytime import export_onnx, train

    net, meta = train(seed=1, epochs=2)
    export_onnx(net, tmp_path, meta)
    m = AnytimeModel.load(tmp_path)
    _, _, x_te, _, _ = load_data()
    ref = net.forward(x_te[:32])
    h = x_te[:32]
    for i in range(m.n_exits):
        h, probs = m.block(i, h)
        np.testing.assert_allclose(probs, ref[i], rtol=1e-4, atol=1e-5)
    # tokens = cumulative multiply-accumulates per input: the sizes of each block's two weight matrices
    assert m.cumulative_tokens == [int(x) for x in np.cumsum([w.size + v.size for w, _, v, _ in net.blocks()])]
