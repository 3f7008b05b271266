"""The make-sim table: rows per scenario x policy, verdicts on the targets,
the diagnosis, and section replacement in the results file."""

from __future__ import annotations

from typer.testing import CliRunner

from stopwise.daemon.cli import app
from stopwise.sim.matrix import main, verdict, verdicts

runner = CliRunner()


def _run(savings=0.4, frac=0.9, over=0, windows=100, recovery="absent"):
    s = {"overall": {"savings": savings, "fraction_of_oracle": frac, "windows_over_budget": over,
                     "windows": windows, "share_windows_over_budget": over / windows}, "events": []}
    if recovery != "absent":
        s["events"] = [{"kind": "abrupt_drift", "recovery": {"requests": recovery}}]
    return s


def test_oracle_share_targets_per_feedback_level():
    assert verdict("prod_30", "reference", {"reference": _run(frac=0.85, over=5)}).startswith("PASS")
    assert verdict("prod_30", "reference", {"reference": _run(frac=0.849)}).startswith("FAIL")
    assert verdict("prod_30", "reference", {"reference": _run(frac=0.95, over=6)}).startswith("FAIL")
    assert verdict("prod_5", "reference", {"reference": _run(frac=0.80)}).startswith("PASS")
    assert verdict("prod_5", "reference", {"reference": _run(frac=0.79)}).startswith("FAIL")
    assert verdict("prod_0", "reference", {"reference": _run(frac=0.75)}).startswith("PASS")
    assert verdict("prod_0", "reference", {"reference": _run(frac=0.74)}).startswith("FAIL")
    assert verdict("prod_full", "reference", {"reference": _run(frac=0.1)}) == "-"    # no numeric target
    assert verdict("prod_30", "naive", {"naive": _run(frac=0.1), "reference": _run()}) == "-"


def test_drift_recovery_targets():
    for sc in ("abrupt_drift", "prod_drift"):
        assert verdict(sc, "reference", {"reference": _run(recovery=2000)}).startswith("PASS")
        assert verdict(sc, "reference", {"reference": _run(recovery=3000)}).startswith("FAIL")
        assert "never" in verdict(sc, "reference", {"reference": _run(recovery=None)})
        assert verdict(sc, "reference", {"reference": _run()}).startswith("n/a")


def test_comparisons_with_offline_and_static():
    ref = _run(savings=0.4, over=2)
    vs = verdicts("stationary", "reference", {"reference": ref, "offline": _run(savings=0.3, over=2)})
    assert len(vs) == 1 and vs[0].startswith("PASS vs offline")
    assert verdicts("stationary", "reference", {"reference": ref, "offline": _run(savings=0.3, over=1)})[0].startswith("FAIL")
    assert verdicts("stationary", "reference", {"reference": ref, "offline": _run(savings=0.4, over=9)})[0].startswith("FAIL")
    # static-0.95 within budget (<= 5% of its windows over): reference must save more
    assert verdicts("x", "reference", {"reference": ref, "static-0.95": _run(savings=0.5, over=5)})[0].startswith("FAIL")
    assert verdicts("x", "reference", {"reference": ref, "static-0.95": _run(savings=0.3, over=5)})[0].startswith("PASS")
    # static-0.95 over budget: no comparison
    assert verdicts("x", "reference", {"reference": ref, "static-0.95": _run(savings=0.5, over=6)})[0].startswith("n/a")


def test_table_and_diagnosis_from_runs(tmp_path, capsys):
    root = tmp_path / "sim"
    world = root / "worlds" / "stationary.jsonl"
    assert runner.invoke(app, ["worlds", "generate", "--scenario", "stationary", "--seed", "2", "--n", "900",
                               "--out", str(world)]).exit_code == 0
    r = runner.invoke(app, ["simulate", "--world", str(world), "--policy", "none", "--policy", "reference",
                            "--window", "100", "--out", str(root / "stationary")])
    assert r.exit_code == 0, r.output
    out = tmp_path / "results.md"
    out.write_text("# Results\n\n<!-- sim:speed -->\nkept\n<!-- /sim:speed -->\n")
    assert main([str(root), "--out", str(out), "--command", "make sim (test)"]) == 0
    text = out.read_text()
    assert "kept" in text and "Made by: `make sim (test)`" in text
    rows = [line for line in text.splitlines() if line.startswith("| stationary |")]
    assert [row.split("|")[2].strip() for row in rows] == ["none", "reference"]
    assert "PASS" not in rows[0] and "FAIL" not in rows[0]            # none: untargeted
    assert rows[1].count("|") == 11 and "explored share" in text and "EM-budget use" in text
    assert "Targets (reference rows): 0 passed, 0 failed." in text     # stationary: no target, no offline run here
    assert "Diagnosis of `reference` on `stationary`" in text and "explored (ran to the end)" in text
    main([str(root), "--out", str(out)])                  # idempotent: one matrix section
    assert out.read_text().count("<!-- sim:matrix -->") == 1
