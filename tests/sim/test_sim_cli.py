"""The simulator commands through typer's CliRunner, and the report PNGs."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from stopwise.daemon.cli import app
from stopwise.sim.summary import OUTCOME_FIELDS
from stopwise.sim.world import write_world

from sim_helpers import row

runner = CliRunner()


def test_generate_simulate_report(tmp_path):
    world = tmp_path / "w.jsonl"
    r = runner.invoke(app, ["worlds", "generate", "--scenario", "abrupt_drift", "--seed", "1", "--n", "600", "--out", str(world)])
    assert r.exit_code == 0, r.output
    assert world.exists() and (tmp_path / "w.jsonl.meta.json").exists()
    out = tmp_path / "runs"
    r = runner.invoke(app, ["simulate", "--world", str(world), "--policy", "none", "--policy", "static-0.95",
                            "--policy", "reference", "--window", "100", "--publish-delay", "0.5", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "| reference |" in r.output
    for pol in ("none", "static-0.95", "reference"):
        d = out / pol
        lines = (d / "outcomes.jsonl").read_text().splitlines()
        assert len(lines) == 600 and list(json.loads(lines[0])) == list(OUTCOME_FIELDS)
        s = json.loads((d / "summary.json").read_text())
        assert s["policy"] == pol and s["overall"]["n"] == 600 and s["events"][0]["kind"] == "abrupt_drift"
        assert (d / "thresholds.jsonl").exists() and (d / "oracle.json").exists()
    assert json.loads((out / "none" / "summary.json").read_text())["overall"]["savings"] == 0.0
    r = runner.invoke(app, ["report", str(out)])
    assert r.exit_code == 0, r.output
    for pol in ("none", "reference"):
        for png in ("thresholds.png", "em_drop.png", "tokens_saved.png", "tradeoff.png"):
            data = (out / pol / png).read_bytes()
            assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
        assert "windows over" in (out / pol / "report.md").read_text()
    index = (out / "report.md").read_text()
    assert "[reference](reference/report.md)" in index


def test_single_policy_writes_into_out(tmp_path):
    world = tmp_path / "w.jsonl"
    write_world([row(f"r{i}", i * 0.1, [[10, 0.5, "x"], [20, 0.99, "y"]]) for i in range(50)], world)
    r = runner.invoke(app, ["simulate", "--world", str(world), "--policy", "reference", "--out", str(tmp_path / "o")])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "o" / "outcomes.jsonl").exists()


def test_bad_world_lines_are_reported_with_line_numbers(tmp_path):
    p = tmp_path / "bad.jsonl"
    p.write_text(json.dumps(row("a", 0, [[10, 0.5, "x"]])) + "\n{oops\n" + json.dumps(row("b", 1, [[10, 2.0, "x"]])) + "\n")
    r = runner.invoke(app, ["simulate", "--world", str(p), "--out", str(tmp_path / "o")])
    assert r.exit_code == 1
    assert f"{p}:2: not valid JSON" in r.output and f"{p}:3: checkpoints.0.1" in r.output
    assert not (tmp_path / "o").exists()


def test_unknown_policy_and_scenario_fail_clearly(tmp_path):
    world = tmp_path / "w.jsonl"
    write_world([row("a", 0, [[10, 0.5, "x"]])], world)
    r = runner.invoke(app, ["simulate", "--world", str(world), "--policy", "nope", "--out", str(tmp_path / "o")])
    assert r.exit_code == 1 and "unknown policy 'nope'" in r.output
    r = runner.invoke(app, ["worlds", "generate", "--scenario", "nope", "--out", str(tmp_path / "x.jsonl")])
    assert r.exit_code == 1 and "valid: abrupt_drift" in r.output


def test_report_without_runs_fails(tmp_path):
    r = runner.invoke(app, ["report", str(tmp_path)])
    assert r.exit_code == 1 and "no summary.json" in r.output
