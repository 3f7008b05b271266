"""The thresholds_published metric is labelled only with bounded reason codes."""

from types import SimpleNamespace

from stopwise.daemon.core.reasons import REASON_CODES, reason_code
from stopwise.daemon.metrics import Metrics


def test_reason_codes_known():
    assert reason_code("circuit_breaker") == "circuit_breaker"
    assert reason_code("min_evidence", None) == "min_evidence"
    assert reason_code("ltt: ucb 0.01 <= budget 0.02; clamp", 0.9) == "clamp"


def test_many_free_text_reasons_give_bounded_series():
    m = Metrics()
    reasons = [f"ltt: ucb {i / 997:.4f} <= budget 0.0200 (ratio {i / 7:.2f}); explore {i / 1000:.3f}" for i in range(200)]
    reasons += [r + "; step" for r in reasons[:50]] + ["drift: realized loss over budget; " + r for r in reasons[:50]]
    reasons += ["kill_switch", "circuit_breaker", "min_evidence", ""]
    for i, r in enumerate(reasons):
        m.thresholds_published.labels(reason=reason_code(r, None if i % 3 == 0 else 0.5)).inc()
    labels = {s.labels["reason"] for metric in m.registry.collect() if metric.name == "stopwise_thresholds_published"
              for s in metric.samples if s.name.endswith("_total")}
    assert labels <= set(REASON_CODES)
    assert len(labels) >= 6
