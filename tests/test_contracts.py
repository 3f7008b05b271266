"""The shipped JSON Schemas match the models, and accept/refuse what the decoders do."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from stopwise.daemon.contracts import load_schema, render, render_all
from stopwise.daemon.errors import DecodeError
from stopwise.daemon.records import SCHEMA_MODELS, decode

SCHEMA_DIR = Path(__file__).resolve().parents[1] / "daemon" / "schemas"

jsonschema = pytest.importorskip("jsonschema")  # in the `test` extras


def test_checked_in_schemas_are_up_to_date() -> None:
    stale = [name for name, text in render_all().items()
             if not (SCHEMA_DIR / f"{name}.schema.json").exists()
             or (SCHEMA_DIR / f"{name}.schema.json").read_text() != text]
    assert not stale, f"regenerate with `stopwise schemas --out daemon/schemas` (stale: {stale})"


def test_no_orphan_schema_files() -> None:
    on_disk = {p.name.removesuffix(".schema.json") for p in SCHEMA_DIR.glob("*.schema.json")}
    assert on_disk == set(SCHEMA_MODELS)


def test_installed_package_ships_the_same_schemas() -> None:
    for name in SCHEMA_MODELS:
        assert load_schema(name) == json.loads(render(name))


def test_schemas_are_valid_draft_2020_12() -> None:
    for name in SCHEMA_MODELS:
        schema = load_schema(name)
        jsonschema.Draft202012Validator.check_schema(schema)
        assert schema["$schema"].endswith("2020-12/schema") and schema["$id"] == f"stopwise/{name}/v1"


SAMPLES = {
    "inference_event": {"v": 1, "request_id": "r1", "ts": 1.0, "context": {"task": "qa"}, "features": {"n": 3.0},
                        "threshold": 0.9, "threshold_version": 1, "explore": True, "propensity": 0.1,
                        "stop_index": 0, "tokens_used": 10, "tokens_budget": 64,
                        "checkpoints": [[10, 0.95, "a"], [20, 0.97, "a"]], "x_extra": "kept"},
    "feedback_event": {"v": 1, "request_id": "r1", "ts": 2.0, "em": 0, "source": "grader", "weight": 2.0},
    "threshold_record": {"v": 1, "context": "task=qa", "threshold": 0.85, "explore_rate": 0.05, "version": 7,
                         "issued_at": 10.0, "expires_at": 3610.0, "policy": "reference", "est_loss": 0.004,
                         "est_loss_ucb": 0.009, "est_savings": 0.31, "n": 812.0, "reason": "ucb", "sig": None},
}

# rejected by both the schema and the decoder
BAD_SAMPLES = [
    ("inference_event", {"threshold": 1.5}),
    ("inference_event", {"tokens_used": -1}),
    ("inference_event", {"checkpoints": []}),
    ("inference_event", {"v": 2}),
    ("inference_event", {"request_id": ""}),
    ("feedback_event", {"em": 3}),
    ("feedback_event", {"weight": 0}),
    ("feedback_event", {"weight": 1e300}),
    ("feedback_event", {"em": True}),
    ("feedback_event", {"v": True}),
    ("feedback_event", {"ts": -1.0}),
    ("inference_event", {"tokens_budget": 2**40}),
    ("inference_event", {"stop_index": True}),
    ("inference_event", {"features": {"n": 1e300}}),
    ("threshold_record", {"version": 0}),
    ("threshold_record", {"explore_rate": 2}),
]


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_samples_validate_against_schema_and_decode(name: str) -> None:
    jsonschema.validate(SAMPLES[name], load_schema(name))
    rec = decode(SCHEMA_MODELS[name], json.dumps(SAMPLES[name]).encode())
    jsonschema.validate(json.loads(rec.to_bytes()), load_schema(name))  # what we write validates too


@pytest.mark.parametrize(("name", "change"), BAD_SAMPLES, ids=[f"{n}:{c}" for n, c in BAD_SAMPLES])
def test_bad_samples_fail_schema_and_decoder(name: str, change: dict) -> None:
    bad = {**SAMPLES[name], **change}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, load_schema(name))
    with pytest.raises(DecodeError):
        decode(SCHEMA_MODELS[name], json.dumps(bad).encode())


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_required_fields_agree_with_the_model(name: str) -> None:
    model = SCHEMA_MODELS[name]
    required = {n for n, f in model.model_fields.items() if f.is_required()}
    assert set(load_schema(name).get("required", [])) == required
