"""ThresholdTable: fallback chain, expiry, tombstones, signatures, decide(), and tailing a real topic."""

from __future__ import annotations

import json
import threading

import pytest

from stopwise.clients.table import ThresholdTable
from stopwise.daemon.signing import sign_record
from stopwise.daemon.stoprule import explores, propensity

from clients_helpers import produce, wait_for

KEY = b"secret-key"


def rec(context: str, threshold: float, version: int = 1, *, explore_rate: float = 0.1,
        expires_at: float = 1e12, key: bytes | None = None) -> bytes:
    body = {"v": 1, "context": context, "threshold": threshold, "explore_rate": explore_rate, "version": version,
            "issued_at": 0.0, "expires_at": expires_at, "policy": "reference", "n": 10.0, "reason": "test"}
    return json.dumps(sign_record(body, key) if key else body).encode()


class Clock:
    def __init__(self, t: float = 100.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def table(**kw) -> ThresholdTable:
    kw.setdefault("dimensions", ("task", "domain"))
    if "hmac_key" not in kw:
        kw.setdefault("allow_unsigned", True)
    return ThresholdTable("127.0.0.1:1", "thr", **kw)


def test_a_table_needs_a_key_or_an_explicit_allow_unsigned():
    """Issue 13, reproduction 6: the default table (no key) applied forged thresholds."""
    with pytest.raises(ValueError, match="needs hmac_key .* or an explicit allow_unsigned=True"):
        ThresholdTable("127.0.0.1:1", "thr", dimensions=("task",))
    with pytest.raises(ValueError, match="allow_unsigned=True"):
        ThresholdTable("127.0.0.1:1", "thr", dimensions=("task",), hmac_key=b"", allow_unsigned=1)
    with pytest.raises(TypeError, match="hmac_key must be bytes"):
        ThresholdTable("127.0.0.1:1", "thr", dimensions=("task",), hmac_key="text-key")
    assert ThresholdTable("127.0.0.1:1", "thr", dimensions=("task",), allow_unsigned=True).apply(
        [("task=qa", rec("task=qa", 0.5))]) == 1  # unsigned on purpose: applied


def test_with_a_key_unsigned_tombstones_are_ignored_and_counted():
    """Issue 13, reproduction 6: an unsigned tombstone deleted a signed entry."""
    t = table(hmac_key=KEY)
    t.apply([("task=qa", rec("task=qa", 0.9, key=KEY)), ("*", rec("*", 0.95, key=KEY))])
    assert t.apply([("task=qa", None), ("*", None)]) == 0
    assert t.tombstones_ignored == 2 and t.get("task=qa").threshold == 0.9 and t.get("*").threshold == 0.95
    assert table().apply([("task=qa", None)]) == 0  # without a key a tombstone still deletes (nothing here)


def test_fallback_chain_to_default():
    t = table(default_threshold=1.0)
    t.apply([("*", rec("*", 0.97)), ("task=qa", rec("task=qa", 0.9)),
             ("task=qa|domain=fin", rec("task=qa|domain=fin", 0.8))])
    assert t.get({"task": "qa", "domain": "fin"}).threshold == 0.8
    assert t.get({"task": "qa", "domain": "law"}).threshold == 0.9
    assert t.get({"task": "other"}).threshold == 0.97
    assert t.get("task=qa|domain=fin").threshold == 0.8
    t.apply([("*", None)])
    assert t.get({"task": "other"}) is None
    assert t.decide("r", {"task": "other"}).threshold == 1.0


def test_expired_records_fall_back_to_parent_then_default():
    clock = Clock(100.0)
    t = table(clock=clock, default_threshold=1.0)
    t.apply([("task=qa", rec("task=qa", 0.9, expires_at=500.0)),
             ("task=qa|domain=fin", rec("task=qa|domain=fin", 0.7, expires_at=200.0))])
    ctx = {"task": "qa", "domain": "fin"}
    assert t.get(ctx).threshold == 0.7
    clock.t = 300.0
    assert t.get(ctx).threshold == 0.9          # specific one expired: parent
    clock.t = 600.0
    assert t.get(ctx) is None                   # all expired: default
    assert t.decide("r1", ctx).threshold == 1.0 and t.decide("r1", ctx).version == 0


def test_forged_and_unsigned_records_are_rejected_and_counted():
    t = table(hmac_key=KEY)
    t.apply([("task=qa", rec("task=qa", 0.9, version=1, key=KEY))])
    forged = rec("task=qa", 0.5, version=2, key=b"attacker")
    unsigned = rec("task=qa", 0.5, version=3)
    marked = json.dumps(sign_record(json.loads(unsigned), None)).encode()   # sig "unsigned", as an unsigned daemon writes
    tampered = json.loads(rec("task=qa", 0.9, version=4, key=KEY))
    tampered["threshold"] = 0.5
    assert json.loads(marked)["sig"] == "unsigned"
    assert t.apply([("task=qa", forged), ("task=qa", unsigned), ("task=qa", marked),
                    ("task=qa", json.dumps(tampered).encode())]) == 0
    assert t.rejected == 4
    assert t.get("task=qa").threshold == 0.9 and t.get("task=qa").version == 1


def test_invalid_records_are_counted_and_skipped():
    t = table()
    n = t.apply([("a", b"not json"), ("a", b"[1]"), ("task=x", rec("task=y", 0.9)),
                 ("task=z", b'{"v": 1, "context": "task=z"}'), ("task=ok", rec("task=ok", 0.9))])
    assert n == 1 and t.invalid == 4 and set(t.table) == {"task=ok"}


def test_decide_uses_stoprule_exactly():
    t = table()
    t.apply([("task=qa", rec("task=qa", 0.85, version=7, explore_rate=0.3))])
    hits = 0
    for i in range(500):
        rid = f"req-{i}"
        d = t.decide(rid, {"task": "qa", "domain": "x"})
        ex = explores(rid, 0.3)
        assert (d.threshold, d.explore, d.propensity, d.version) == (0.85, ex, propensity(ex, 0.3), 7)
        assert d.context_key == "task=qa|domain=x" and d.source == "task=qa"
        hits += ex
    assert 100 < hits < 200


def test_lookups_see_whole_batches_only():
    """Concurrent readers never observe a half-applied batch (swap, no lock)."""
    t = table()
    stop = threading.Event()
    bad = []

    def reader():
        while not stop.is_set():
            snap = t.table                      # one immutable snapshot
            if "task=a" in snap and snap["task=a"].version != snap["task=b"].version:
                bad.append((snap["task=a"].version, snap["task=b"].version))

    th = threading.Thread(target=reader)
    th.start()
    for v in range(1, 300):
        t.apply([("task=a", rec("task=a", 0.9, v)), ("task=b", rec("task=b", 0.9, v))])
    stop.set()
    th.join()
    assert bad == []


def test_tails_real_topic_forged_and_tombstones_ignored_updates_applied(make_config):
    cfg = make_config()
    topic = cfg.topics.thresholds
    produce(cfg.kafka.bootstrap, topic, [
        ("*", rec("*", 0.95, key=KEY)),
        ("task=qa", rec("task=qa", 0.9, version=1, key=KEY)),
        ("task=qa", rec("task=qa", 0.8, version=2, key=KEY)),
        ("task=qa", rec("task=qa", 0.5, version=3, key=b"forged")),   # forged: must be ignored
        ("task=gone", rec("task=gone", 0.6, key=KEY)),
        ("task=gone", None),
    ])
    t = ThresholdTable(cfg.kafka.bootstrap, topic, dimensions=("task", "domain"), hmac_key=KEY)
    with t:
        assert t.wait_ready(30)
        assert t.get({"task": "qa", "domain": "d"}).threshold == 0.8
        assert t.rejected == 1
        # with a key, an (unsigned) tombstone deletes nothing
        assert t.tombstones_ignored == 1 and t.get({"task": "gone"}).threshold == 0.6
        produce(cfg.kafka.bootstrap, topic, [("task=qa", rec("task=qa", 0.75, version=4, key=KEY)),
                                             ("*", None), ("task=new", rec("task=new", 0.5, version=9))])
        assert wait_for(lambda: t.get("task=qa").version == 4, 30)
        assert wait_for(lambda: t.tombstones_ignored == 2 and t.rejected == 2, 30)
        assert t.get({"task": "new"}).threshold == 0.95  # unsigned record ignored, '*' kept


def test_unreachable_broker_serves_default_and_keeps_retrying():
    attempts = []

    def factory(**kw):
        attempts.append(kw["bootstrap_servers"])
        raise ConnectionError("no brokers")

    t = table(consumer_factory=factory, retry_backoff_s=(0.01, 0.02))
    t.apply([("task=qa", rec("task=qa", 0.9))])       # a last good table
    with t:
        assert not t.wait_ready(0.3)
        assert wait_for(lambda: len(attempts) >= 3, 5)
        assert t.decide("r", {"task": "qa"}).threshold == 0.9
        assert t.decide("r", {"task": "zz"}).threshold == 1.0


def test_memoised_context_keys_match_the_keyer():
    from stopwise.daemon.context import ContextKeyer

    t = table()
    keyer = ContextKeyer(("task", "domain"))
    for ctx in ({"task": "qa"}, {"task": "qa", "domain": "a|b"}, {"domain": "x"}, {"task": "", "domain": "x"},
                {"task": "qa", "domain": "f", "lang": "en"}, {}, {"task": "qa", "domain": "f"}):
        assert t.key(ctx) == t.key(dict(ctx)) == keyer.key(ctx)
    assert t.key({"task": ["unhashable"]}) == keyer.key({"task": ["unhashable"]})
