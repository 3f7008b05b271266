"""The snapshot codec: plain data round trips exactly, nothing else is
decoded (issue 13, reproduction 6: a forged pickled state ran code), and a
restored RiskModel predicts exactly as the original after further learning."""

from __future__ import annotations

import math
import pickle
import random
from array import array
from collections import OrderedDict, deque
from dataclasses import dataclass

import numpy as np
import pytest

from stopwise.daemon.core import statecodec
from stopwise.daemon.core.counterfactual import evaluate
from stopwise.daemon.core.risk_model import RiskModel
from stopwise.daemon.core.statecodec import StateCodecError, decode, encode

from core_helpers import example


@dataclass
class _Point:  # module tests.core..., not stopwise.*: refused
    x: int


def test_plain_values_round_trip_exactly() -> None:
    rng = random.Random(5)
    rng.random()
    obj = {
        "none": None, "bools": [True, False], "big": 2**80, "neg": -3, "floats": (0.1, -0.0, 1e308, 5e-324),
        "nonfinite": [math.inf, -math.inf], "text": "é$x", "bytes": b"\x00\xff", "ba": bytearray(b"ab"),
        7: "int key", 2.5: "float key", ("t", 1): "tuple key", "$dollar": 1,
        "set": {3, 1, 2}, "fs": frozenset({"a", "b"}), "q": deque([1, 2, 3], maxlen=4), "q0": deque([]),
        "od": OrderedDict([("b", 1), ("a", 2)]), "arr": array("Q", [1, 2**64 - 1]),
        "np": np.arange(6, dtype=np.float32).reshape(2, 3), "np_scalar": np.float64(0.25), "rng": rng,
        "nested": [[{"k": ({1, 2},)}]],
    }
    back = decode(encode(obj))
    rng2 = back.pop("rng")
    arr = back.pop("np")
    obj.pop("rng"), obj.pop("np")
    assert back == obj
    assert type(back["od"]) is OrderedDict and list(back["od"]) == ["b", "a"]
    assert back["q"].maxlen == 4 and type(back["floats"]) is tuple and type(back["fs"]) is frozenset
    assert math.copysign(1.0, back["floats"][1]) == -1.0
    assert arr.dtype == np.float32 and arr.shape == (2, 3) and arr.tolist() == [[0, 1, 2], [3, 4, 5]]
    assert rng2.random() == rng.random()
    assert math.isnan(decode(encode(math.nan)))


def test_shared_objects_and_cycles_keep_their_identity() -> None:
    shared = [1, 2]
    obj = {"a": shared, "b": shared, "self": []}
    obj["self"].append(obj["self"])
    back = decode(encode(obj))
    assert back["a"] is back["b"] and back["self"][0] is back["self"]


def test_stopwise_objects_round_trip() -> None:
    from stopwise.daemon.config import Config
    from stopwise.daemon.context import ContextKeyer
    from stopwise.daemon.core.seen import RecentIds

    keyer, seen = ContextKeyer(("task", "domain")), RecentIds(3)
    for i in range(5):
        seen.add(f"r{i}", float(i))
    ex = example(((10, 0.5, "a"), (20, 0.9, "b")))
    back = decode(encode({"keyer": keyer, "seen": seen, "ex": ex, "cfg": Config()}))
    assert back["keyer"].key({"task": "qa"}) == "task=qa" and back["ex"] == ex
    assert len(back["seen"]) == 3 and "r4" in back["seen"] and "r0" not in back["seen"]
    assert back["cfg"].budget == Config().budget


@pytest.mark.parametrize("doc", [
    b'{"format":"stopwise-state","version":2,"root":{"$o":["os","system",{}]}}',
    b'{"format":"stopwise-state","version":2,"root":{"$o":["subprocess","Popen",{}]}}',
    b'{"format":"stopwise-state","version":2,"root":{"$o":["builtins","eval",{}]}}',
    b'{"format":"stopwise-state","version":2,"root":{"$o":["stopwise.daemon.core.engine","load_state",{}]}}',
    b'{"format":"stopwise-state","version":2,"root":{"$o":["stopwise.daemon.core.engine","statecodec",{}]}}',
    b'{"format":"stopwise-state","version":2,"root":{"$o":["stopwise.daemon.core.engine","Controller.<locals>.x",{}]}}',
    b'{"format":"stopwise-state","version":2,"root":{"$o":["stopwise.not_loaded_module","X",{}]}}',
    b'{"format":"stopwise-state","version":2,"root":{"$np":["|O",[1],"AAAAAAAAAAA="]}}',
    b'{"format":"stopwise-state","version":2,"root":{"$ref":0}}',
    b'{"format":"stopwise-state","version":2,"root":{"$nope":1}}',
    b'{"format":"stopwise-state","version":2,"root":{"a":1,"$t":[]}}',
    b'{"format":"stopwise-state","version":2,"root":{"$q":[[1],-1]}}',
    b'{"format":"stopwise-state","version":2,"root":{"$b":"!!"}}',
    b'{"format":"stopwise-state","version":3,"root":null}',
    b'{"format":"other","version":2,"root":null}',
    b"not json",
])
def test_anything_else_is_refused_with_a_clear_error(doc: bytes) -> None:
    with pytest.raises(StateCodecError):
        decode(doc)


def test_a_pickle_is_refused_and_never_loaded(tmp_path) -> None:
    marker = tmp_path / "ran"

    class Bomb:
        def __reduce__(self):
            import os
            return (os.system, (f"touch {marker}",))

    with pytest.raises(StateCodecError, match="pickle"):
        decode(pickle.dumps(Bomb()))
    assert not marker.exists()


def test_foreign_objects_are_refused_at_encode_naming_where() -> None:
    from river import linear_model

    with pytest.raises(StateCodecError, match=r"root\['m'\]: class river\..* is not allowed"):
        encode({"m": linear_model.LogisticRegression()})
    with pytest.raises(StateCodecError, match="is not allowed"):
        encode([_Point(1)])
    with pytest.raises(StateCodecError, match="numpy array of Python objects"):
        encode(np.array([object()]))


def _stream(seed: int, n: int):
    rng = random.Random(seed)
    for i in range(n):
        k = rng.randint(2, 6)
        answers = [rng.choice("ab") for _ in range(k)]
        cps = tuple((10 * (j + 1), round(min(1.0, 0.3 + 0.12 * j + rng.random() * 0.1), 3), answers[j])
                    for j in range(k))
        yield example(cps, em=rng.random() < 0.7, rid=f"r{seed}-{i}", key=("task=" + rng.choice("xyz")),
                      explore=True)


def test_restored_risk_model_predicts_exactly_as_the_original_after_more_learning() -> None:
    taus = (0.5, 0.7, 0.9, 1.0)
    a = RiskModel(seed=3, learning_rate=0.05, warmup=20, sample_rate=0.5)
    for ex in _stream(1, 300):
        a.learn(ex, evaluate(ex, taus))
    b = decode(encode(a))
    assert type(b.pipeline) is type(a.pipeline) and b.n_learned == a.n_learned
    more = list(_stream(2, 300))
    for ex in more:
        assert a.learn(ex, evaluate(ex, taus)) == b.learn(ex, evaluate(ex, taus))
    assert b.n_learned == a.n_learned > 0
    for ex in more[:50]:
        for k in range(len(ex.checkpoints)):
            assert b.predict_checkpoint(ex, k) == a.predict_checkpoint(ex, k)
    assert encode(b) == encode(a)
    assert b"river" not in encode(a)  # plain data: no River class names in the state


def test_encoding_is_deterministic_for_equal_state() -> None:
    assert encode({"s": {"b", "a", "c"}}) == encode({"s": {"c", "a", "b"}})
    assert statecodec.VERSION == 2


def test_deep_nesting_is_refused_not_a_crash() -> None:
    deep = b'{"format":"stopwise-state","version":2,"root":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    with pytest.raises(StateCodecError, match="nests too deeply"):
        decode(deep)
