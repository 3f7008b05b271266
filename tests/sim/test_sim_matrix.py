"""The make-sim table: rows per scenario x policy, verdicts on the targets,
the diagnosis, and section replacement in the results file."""

from __future__ import annotations

from typer.testing import CliRunner

from stopwise.daemon.cli import app
from stopwise.sim.matrix import main, verdict

runner = CliRunner()


def _summary(frac, worst, recovery=None):
    s = {"overall": {"fraction_of_oracle": frac, "worst_context_share_over_budget": worst}, "events": []}
    if recovery is not None or frac is None:
        s["events"] = [{"kind": "abrupt_drift", "recovery": {"requests": recovery}}]
    return s


def test_verdicts():
    assert verdict("stationary", "reference", _summary(0.91, 0.05)).startswith("PASS")
    assert verdict("stationary", "reference", _summary(0.89, 0.0)).startswith("FAIL")
    assert verdict("stationary", "reference", _summary(0.95, 0.06)).startswith("FAIL")
    assert verdict("stationary", "naive", _summary(0.1, 1.0)) == "-"
    assert verdict("abrupt_drift", "reference", _summary(0.5, 0.5, 2000)).startswith("PASS")
    assert verdict("abrupt_drift", "reference", _summary(0.5, 0.5, 3000)).startswith("FAIL")
    assert "never" in verdict("abrupt_drift", "reference", _summary(None, 0.5, None))


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
    assert ("PASS" in rows[1]) or ("FAIL" in rows[1])
    assert "Diagnosis of `reference` on `stationary`" in text and "explored (ran to the end)" in text
    main([str(root), "--out", str(out)])                  # idempotent: one matrix section
    assert out.read_text().count("<!-- sim:matrix -->") == 1
