"""Context keys: canonical form, escaping, parent chain, cardinality cap."""

from __future__ import annotations

import pickle

from hypothesis import given, strategies as st

from stopwise.daemon.context import ROOT, ContextKeyer, ContextRegistry, dict_of, parent, parents

keyer = ContextKeyer(("task", "domain", "lang"))


def test_key_is_canonical_regardless_of_dict_order_and_extra_dims() -> None:
    a = keyer.key({"domain": "finance", "task": "qa", "tenant": "x"})
    b = keyer.key({"task": "qa", "domain": "finance"})
    assert a == b == "task=qa|domain=finance"


def test_missing_dimension_ends_the_key() -> None:
    assert keyer.key({"task": "qa", "lang": "en"}) == "task=qa"
    assert keyer.key({"domain": "finance"}) == ROOT
    assert keyer.key({}) == ROOT
    assert keyer.key({"task": ""}) == ROOT


def test_separators_in_values_are_escaped() -> None:
    k = keyer.key({"task": "a|b=c%d", "domain": "x"})
    assert k == "task=a%7Cb%3Dc%25d|domain=x"
    assert parents(k) == [k, "task=a%7Cb%3Dc%25d", ROOT]
    assert dict_of(k) == {"task": "a|b=c%d", "domain": "x"}


@given(st.dictionaries(st.sampled_from(["task", "domain", "lang"]), st.text(min_size=1, max_size=8), max_size=3))
def test_dict_of_inverts_key_on_the_used_prefix(ctx: dict[str, str]) -> None:
    k = keyer.key(ctx)
    back = dict_of(k)
    assert keyer.key(back) == k
    dims = keyer.dimensions[: len(back)]
    assert tuple(back) == dims and all(back[d] == ctx[d] for d in dims)


def test_parent_chain_ends_at_root() -> None:
    assert parents("task=qa|domain=finance|lang=en") == [
        "task=qa|domain=finance|lang=en", "task=qa|domain=finance", "task=qa", ROOT]
    assert parent(ROOT) is None and parents(ROOT) == [ROOT]


def test_registry_rolls_rare_contexts_up_until_they_have_support() -> None:
    reg = ContextRegistry(max_contexts=10, min_support=3)
    k = "task=qa|domain=a"
    got = [reg.observe(k) for _ in range(5)]
    # the parent "task=qa" needs support first; the child is admitted once both have it
    assert got[0] == ROOT and got[-1] == k
    assert "task=qa" in reg.admitted and reg.rolled_up >= 2


def test_registry_cap_sends_overflow_to_the_nearest_admitted_parent() -> None:
    reg = ContextRegistry(max_contexts=3, min_support=0)
    assert reg.observe("task=qa") == "task=qa"
    assert reg.observe("task=qa|domain=a") == "task=qa|domain=a"
    assert reg.observe("task=qa|domain=b") == "task=qa|domain=b"
    assert reg.observe("task=qa|domain=c") == "task=qa"  # cap of 3 reached
    assert reg.observe("task=mt|domain=x") == ROOT
    assert len(reg.admitted) - 1 == 3
    assert reg.resolve("task=qa|domain=c|lang=en") == "task=qa"


def test_registry_is_deterministic_and_picklable() -> None:
    seq = [f"task=t{i % 4}|domain=d{i % 7}" for i in range(200)]
    r1, r2 = ContextRegistry(5, 2), ContextRegistry(5, 2)
    assert [r1.observe(k) for k in seq] == [r2.observe(k) for k in seq]
    clone = pickle.loads(pickle.dumps(r1))
    assert clone.admitted == r1.admitted and clone.observe(seq[0]) == r1.observe(seq[0])
    assert pickle.loads(pickle.dumps(keyer)).key({"task": "qa"}) == "task=qa"


@given(st.lists(st.sampled_from([f"task=t{i}|domain=d{j}" for i in range(4) for j in range(4)]), max_size=200),
       st.integers(1, 6), st.integers(0, 4))
def test_registry_never_exceeds_cap_and_resolves_within_the_chain(keys: list[str], cap: int, support: int) -> None:
    reg = ContextRegistry(cap, support)
    for k in keys:
        got = reg.observe(k)
        assert got in parents(k) and got in reg.admitted
        assert len(reg.admitted) - 1 <= cap
        for a in reg.admitted:  # every admitted key's parents are admitted too
            assert all(p in reg.admitted for p in parents(a))
