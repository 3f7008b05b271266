from __future__ import annotations

import pytest

from stopwise.daemon.context import ContextKeyer
from stopwise.daemon.core.examples import LabelledExample, from_events
from stopwise.daemon.errors import DecodeError

from core_helpers import feedback, inference


def test_round_trip_keeps_every_field():
    ex = from_events(inference(threshold=0.9, explore=True, propensity=0.2, context={"task": "qa", "domain": "a|b"}),
                     feedback(em=None, gold="b"), ContextKeyer(("task", "domain")))
    back = LabelledExample.from_bytes(ex.to_bytes())
    assert back == ex
    assert back.context_key == "task=qa|domain=a%7Cb"
    assert back.gold_answer_hash == "b" and back.em is None and back.explore and back.propensity == 0.2


@pytest.mark.parametrize("data,reason", [
    (b"{nope", "bad_json"),
    (b"[1]", "not_object"),
    (b'{"request_id": "x"}', "missing_field"),
])
def test_bad_bytes_raise_decode_error(data, reason):
    with pytest.raises(DecodeError) as exc:
        LabelledExample.from_bytes(data)
    assert exc.value.reason == reason


def test_out_of_range_stop_index_is_refused():
    ex = from_events(inference(), feedback(), ContextKeyer(("task",)))
    bad = ex.to_bytes().replace(b'"stop_index":2', b'"stop_index":7')
    with pytest.raises(DecodeError) as exc:
        LabelledExample.from_bytes(bad)
    assert exc.value.reason == "out_of_range"


@pytest.mark.parametrize("old,new,reason", [
    (b'"ts":0.0', b'"ts":NaN', "not_finite"),
    (b'"threshold":1.0', b'"threshold":1.5', "out_of_range"),
    (b'[[10,0.5,"a"],[20,0.9,"b"]', b'[[20,0.5,"a"],[10,0.9,"b"]', "checkpoints_not_increasing"),
])
def test_invalid_numbers_are_refused(old, new, reason):
    ex = from_events(inference(), feedback(), ContextKeyer(("task",)))
    data = ex.to_bytes()
    assert old in data
    with pytest.raises(DecodeError) as exc:
        LabelledExample.from_bytes(data.replace(old, new))
    assert exc.value.reason == reason
