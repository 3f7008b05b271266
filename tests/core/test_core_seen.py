from __future__ import annotations

import pickle

from stopwise.daemon.core.seen import RecentIds


def test_pickle_round_trip_keeps_order_cap_and_is_compact():
    s = RecentIds(cap=10_000)
    for i in range(12_000):
        s.add(f"req-{i}", float(i))
    data = pickle.dumps(s)
    assert len(data) < 10_000 * 16 + 1_000          # 16 bytes per remembered id
    t = pickle.loads(data)
    assert len(t) == 10_000 and "req-1999" not in t and "req-2000" in t and "req-11999" in t
    assert t.expire_before(2999.0) == 1000 and "req-2999" not in t and "req-3000" in t
    t.add("new", 20_000.0)
    assert "new" in t and len(t) == 9_001


def test_adding_twice_is_a_noop():
    s = RecentIds(cap=3)
    s.add("a", 1.0)
    s.add("a", 2.0)
    assert len(s) == 1 and s.expire_before(1.0) == 1
