"""World file parsing, line-numbered errors, round trip, shipped schema."""

from __future__ import annotations

import json

import pytest

from stopwise.sim.world import WorldError, load_schema, read_world, render_schema, write_world

from sim_helpers import row, world

CPS = [[10, 0.5, "x"], [20, 0.9, "y"]]


def test_reads_and_sorts_by_ts_keeping_extras(tmp_path):
    rows = [row("b", 2.0, CPS), row("a", 1.0, CPS, gold=None, override=1, delay=3.5)]
    rows[0]["note"] = "extra fields are kept"
    write_world(rows, tmp_path / "w.jsonl")
    reqs, errors = read_world(tmp_path / "w.jsonl")
    assert errors == []
    assert [r.request_id for r in reqs] == ["a", "b"]
    a, b = reqs
    assert a.gold_answer_hash is None and a.feedback.em_override == 1 and a.feedback.delay_s == 3.5
    assert a.em_of("y") == 1 and b.em_of("x") == 0 and b.em_of("y") == 1 and b.tokens_full == 20
    assert b.model_extra == {"note": "extra fields are kept"}


@pytest.mark.parametrize("bad, reason", [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "not a JSON object"),
    (json.dumps(row("r", 0, [[20, 0.5, "a"], [10, 0.6, "b"]])), "checkpoints_not_increasing"),
    (json.dumps(row("r", 0, [[10, 1.5, "a"]])), "checkpoints.0.1"),
    (json.dumps(row("r", 0, [[-1, 0.5, "a"]])), "checkpoints.0.0"),
    (json.dumps(row("r", 0, [])), "checkpoints"),
    (json.dumps({k: v for k, v in row("r", 0, CPS).items() if k != "feedback"}), "feedback: Field required"),
    (json.dumps(row("r", 0, CPS, delay=-1)), "feedback.delay_s"),
    (json.dumps(row("r", 0, CPS, override=2)), "feedback.em_override"),
    (json.dumps({**row("r", 0, CPS), "ts": "soon"}), "ts"),
    (json.dumps({**row("r", 0, CPS), "request_id": ""}), "request_id"),
])
def test_bad_line_names_line_and_reason(tmp_path, bad, reason):
    p = tmp_path / "w.jsonl"
    p.write_text(json.dumps(row("ok", 0, CPS)) + "\n\n" + bad + "\n")
    with pytest.raises(WorldError) as exc:
        read_world(p)
    assert exc.value.line == 3 and str(exc.value).startswith(f"{p}:3: ")
    assert reason in exc.value.reason


def test_collect_reports_every_bad_line_and_duplicates(tmp_path):
    p = tmp_path / "w.jsonl"
    p.write_text("\n".join([json.dumps(row("a", 0, CPS)), "oops", json.dumps(row("a", 1, CPS)), "{}"]) + "\n")
    reqs, errors = read_world(p, collect=True)
    assert [e.line for e in errors[:2]] == [2, 4]
    assert "duplicate request_id 'a'" in errors[2].reason
    assert len(reqs) == 2


def test_unreadable_file(tmp_path):
    with pytest.raises(WorldError, match="cannot read"):
        read_world(tmp_path / "missing.jsonl")


def test_write_read_round_trip(tmp_path):
    reqs = world([row(f"r{i}", i, CPS, delay=i) for i in range(3)])
    assert write_world(reqs, tmp_path / "x" / "w.jsonl") == 3
    back, _ = read_world(tmp_path / "x" / "w.jsonl")
    assert back == reqs


def test_shipped_schema_is_current():
    """Fails when sim/world.schema.json is stale: regenerate with
    python -c 'from stopwise.sim.world import render_schema; open("sim/world.schema.json","w").write(render_schema())'"""
    assert load_schema() == json.loads(render_schema())

