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


# ---- batched examples-topic records ------------------------------------------------

def _batch(n: int = 5):
    keyer = ContextKeyer(("task",))
    return [from_events(inference(f"r{i}", context={"task": "qa"}), feedback(f"r{i}", em=i % 2), keyer)
            for i in range(n)]


def test_batch_round_trip_keeps_order_and_every_field():
    from stopwise.daemon.core.examples import decode_examples, encode_examples

    exs = _batch(7)
    good, bad = decode_examples(encode_examples(exs))
    assert good == exs and bad == []
    assert [e.em for e in good] == [0, 1, 0, 1, 0, 1, 0]


def test_batch_with_invalid_rows_keeps_the_valid_ones_and_names_the_bad():
    import json

    from stopwise.daemon.core.examples import decode_examples, encode_examples

    exs = _batch(4)
    d = json.loads(encode_examples(exs))
    i_stop = d["fields"].index("stop_index")
    d["examples"][1][i_stop] = 9            # outside the checkpoints
    d["examples"][3] = "not a row"
    good, bad = decode_examples(json.dumps(d).encode())
    assert [e.request_id for e in good] == ["r0", "r2"]
    assert [(i, e.reason) for i, e in bad] == [(1, "out_of_range"), (3, "invalid_value")]


def test_batch_in_another_field_order_decodes_by_name():
    import json

    from stopwise.daemon.core.examples import decode_examples, encode_examples

    exs = _batch(3)
    d = json.loads(encode_examples(exs))
    order = list(reversed(range(len(d["fields"]))))
    d["fields"] = [d["fields"][i] for i in order] + ["added_in_a_minor_version"]
    d["examples"] = [[row[i] for i in order] + [42] for row in d["examples"]]
    assert decode_examples(json.dumps(d).encode()) == (exs, [])


@pytest.mark.parametrize("data,reason", [
    (b'{"v": 2, "fields": [], "examples": []}', "unknown_version"),
    (b'{"v": 1, "fields": [], "examples": {}}', "invalid_value"),
    (b'[]', "not_object"),
    (b'{"v": 1, "examples"', "bad_json"),
])
def test_unreadable_batch_raises_decode_error(data, reason):
    from stopwise.daemon.core.examples import decode_examples

    with pytest.raises(DecodeError) as exc:
        decode_examples(data)
    assert exc.value.reason == reason


@pytest.mark.parametrize("field,value", [
    ("checkpoints", [[10, 0.5]]),                 # not [tokens, score, answer]
    ("checkpoints", [[10.5, 0.5, "a"]]),          # float tokens
    ("checkpoints", [[10, "0.5", "a"]]),          # string score
    ("checkpoints", [[10, 0.5, 7]]),              # numeric answer
    ("checkpoints", [[True, 0.5, "a"]]),          # a bool is not a token count
])
def test_checkpoint_types_are_checked(field, value):
    import json

    from stopwise.daemon.core.examples import decode_examples, encode_examples

    d = json.loads(encode_examples(_batch(1)))
    d["examples"][0][d["fields"].index(field)] = value
    d["examples"][0][d["fields"].index("stop_index")] = 0
    good, bad = decode_examples(json.dumps(d).encode())
    assert good == [] and bad[0][1].reason == "invalid_value"
