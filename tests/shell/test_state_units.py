"""Pure parts of the shell: snapshot envelope, version floor, signed records,
control records, shard naming."""

from __future__ import annotations

import json

import pytest

from stopwise.daemon.errors import SignatureError
from stopwise.daemon.records import ThresholdRecord
from stopwise.daemon.shell.control import control_record, kill_records, parse_control
from stopwise.daemon.shell.dlq import dlq_headers
from stopwise.daemon.shell.publisher import VersionFloor, read_threshold, signed_record_dict
from stopwise.daemon.shell.shards import shard_inputs, shard_names_for
from stopwise.daemon.shell.snapshots import Snapshot
from stopwise.daemon.signing import verify_record

from daemon_helpers import FakeProducer


def test_snapshot_roundtrip_keeps_positions_state_and_meta() -> None:
    snap = Snapshot("learn/1", {"t.examples:1": 99}, b"\x80pickle" * 100, 12.5, {"unique_examples": 7})
    back = Snapshot.decode(snap.encode(b"key"), b"key")
    assert back == snap


@pytest.mark.parametrize("write_key,read_key", [(b"k1", b"k2"), (None, b"k2")])
def test_snapshot_forged_or_unsigned_is_refused_when_a_key_is_configured(write_key, read_key) -> None:
    blob = Snapshot("join/0", {"t.inference:0": 1}, b"x", 0.0).encode(write_key)
    with pytest.raises(SignatureError):
        Snapshot.decode(blob, read_key)


def test_snapshot_tampered_body_is_refused() -> None:
    blob = bytearray(Snapshot("join/0", {"t.inference:0": 1}, b"state", 0.0).encode(b"k"))
    blob[-1] ^= 1
    with pytest.raises(SignatureError):
        Snapshot.decode(bytes(blob), b"k")


def test_snapshot_malformed_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        Snapshot.decode(b"-\nnot json", None)


def test_version_floor_only_grows() -> None:
    vf = VersionFloor()
    vf.observe("a", 10)
    vf.observe("a", 3)  # lower observations never lower the floor
    got = [vf.next("a", 1), vf.next("a", 1), vf.next("a", 50), vf.next("a", 2)]
    assert got == [11, 12, 50, 51]
    assert vf.next("b", 1) == 1


def _rec(**kw) -> ThresholdRecord:
    base = dict(context="task=qa", threshold=0.8, explore_rate=0.1, version=3, issued_at=1.0, expires_at=2.0,
                policy="reference")
    return ThresholdRecord(**(base | kw))


def test_signed_record_verifies_and_decodes() -> None:
    body = signed_record_dict(_rec(), 9, b"secret")
    assert body["version"] == 9 and verify_record(body, b"secret")
    data = json.dumps(body).encode()
    assert read_threshold(data, b"secret").version == 9
    assert read_threshold(json.dumps(dict(body, threshold=0.5)).encode(), b"secret") is None
    assert read_threshold(b"{nope", None) is None


def test_control_record_must_verify() -> None:
    rec = control_record(True, 5.0, b"k")
    assert parse_control(json.dumps(rec).encode(), b"k")["on"] is True
    assert parse_control(json.dumps(dict(rec, on=False)).encode(), b"k") is None  # tampered
    assert parse_control(b"garbage", None) is None
    assert parse_control(json.dumps({"kind": "other", "on": True}).encode(), None) is None


def test_kill_records_are_no_early_stop_with_next_version() -> None:
    out = kill_records({"a": _rec(context="a", version=4), "b": _rec(context="b", version=1)}, 10.0, 60.0)
    assert [(r.context, r.threshold, r.version, r.expires_at) for r in out] == [("a", 1.0, 5, 70.0), ("b", 1.0, 2, 70.0)]


def test_dlq_headers_name_reason_and_origin() -> None:
    hs = dict(dlq_headers("not_finite", "x" * 5000, "t.inference", 1, 7))
    assert hs["stopwise.reason"] == b"not_finite" and hs["stopwise.topic"] == b"t.inference"
    assert hs["stopwise.partition"] == b"1" and hs["stopwise.offset"] == b"7"
    assert len(hs["stopwise.detail"]) == 1000


def test_shards_cover_copartitioned_inputs() -> None:
    roles = {"i": "inference", "f": "feedback", "e": "examples"}
    assert shard_names_for([("i", 0), ("f", 0), ("f", 1), ("e", 1), ("other", 3)], roles) == ["join/0", "join/1", "learn/1"]
    assert shard_inputs("learn/3", roles) == [("e", 3)]


def test_examples_produced_by_the_join_round_trip() -> None:
    import random

    from stopwise.daemon.context import ContextKeyer
    from stopwise.daemon.core.examples import LabelledExample, from_events
    from stopwise.sim.traces import THREE_CONTEXTS, make_request, to_events

    rng = random.Random(2)
    keyer = ContextKeyer(("task", "domain"))
    for i in range(60):
        req = make_request(rng, THREE_CONTEXTS[i % 3], f"r{i}", float(i))
        inf, fb = to_events(req, (0.7, 0.95, 1.0)[i % 3], 0.3, with_gold=bool(i % 2))
        ex = from_events(inf, fb, keyer)
        assert LabelledExample.from_bytes(ex.to_bytes()) == ex


def test_checked_producer_counts_delivery_failures() -> None:
    from stopwise.daemon.shell.kafka_io import CheckedProducer

    p = CheckedProducer(FakeProducer(failing={"bad"}))
    p.send("good", b"v")
    p.send("bad", b"v")
    p.send("bad", b"v")
    n, err = p.take_failures()
    assert n == 2 and "bad" in str(err)
    assert p.take_failures() == (0, None)


def test_checkpoint_refuses_to_snapshot_past_lost_output() -> None:
    from stopwise.daemon.config import Config
    from stopwise.daemon.core.join import Joiner
    from stopwise.daemon.context import ContextKeyer
    from stopwise.daemon.shell.kafka_io import CheckedProducer
    from stopwise.daemon.shell.runner import Daemon
    from stopwise.daemon.shell.shards import Shard

    d = Daemon(Config(), lag_monitor=False)
    fake = FakeProducer(failing={"stopwise.examples"})
    d.producer = CheckedProducer(fake)
    d.shards = {"join/0": Shard("join/0", "join", 0, Joiner(60, 10, ContextKeyer(("task",))), {"stopwise.inference:0": 5})}
    d.producer.send("stopwise.examples", b"lost example")
    with pytest.raises(RuntimeError, match="refusing to snapshot"):
        d.checkpoint()
    with pytest.raises(RuntimeError):  # sticky: the shutdown checkpoint refuses too
        d.checkpoint(force=True)
    assert not [s for s in fake.sent if s[0] == "stopwise.state"]

    ok = Daemon(Config(), lag_monitor=False)
    good = FakeProducer()
    ok.producer = CheckedProducer(good)
    ok.shards = dict(d.shards)
    ok.checkpoint(force=True)
    assert [s[1] for s in good.sent if s[0] == "stopwise.state"] == [b"join/0"]


def test_version_floor_ignores_versions_beyond_the_int64_ceiling() -> None:
    """Issue 13, reproduction 7: after a forged 2^63 the daemon published 2^63 + 3."""
    from stopwise.daemon.records import MAX_VERSION
    from stopwise.daemon.shell.publisher import VERSION_CEILING

    vf = VersionFloor()
    for forged in (2**63, MAX_VERSION, VERSION_CEILING, -5):
        assert vf.observe("a", forged) is False
    assert vf.observe("a", VERSION_CEILING - 1) is True
    assert vf.next("a", 1) == VERSION_CEILING <= MAX_VERSION
    assert vf.next("b", 2**63) == 1  # a proposal beyond the ceiling is not believed either


def test_publisher_floor_reads_only_verified_records() -> None:
    """Issue 13, reproduction 7: the floor trusted unverified thresholds-topic records."""
    from stopwise.daemon.shell.publisher import Publisher

    pub = Publisher(FakeProducer(), "thr", "dec", b"key")
    good = json.dumps(signed_record_dict(_rec(), 40, b"key")).encode()
    forged = json.dumps(signed_record_dict(_rec(), 10**6, b"attacker")).encode()
    unsigned = json.dumps(signed_record_dict(_rec(), 10**7, None)).encode()
    huge = json.dumps(signed_record_dict(_rec(), 2**63, b"key")).encode()
    for value in (good, forged, unsigned, huge, b"{nope"):
        pub.observe_topic_value(value)
    assert pub.ignored == 4 and pub.versions.max == {"task=qa": 40}
    # unsigned on purpose (no key): still bounded by the ceiling
    open_pub = Publisher(FakeProducer(), "thr", "dec", None)
    for value in (unsigned, huge):
        open_pub.observe_topic_value(value)
    assert open_pub.versions.max == {"task=qa": 10**7} and open_pub.ignored == 1


def test_unsigned_records_and_snapshots_say_so() -> None:
    body = signed_record_dict(_rec(), 3, None)
    assert body["sig"] == "unsigned" and not verify_record(body, b"k")
    blob = Snapshot("join/0", {}, b"{}", 0.0).encode(None)
    assert blob.startswith(b"unsigned\n")
    with pytest.raises(SignatureError):
        Snapshot.decode(blob, b"k")


def test_pickled_format1_snapshot_is_refused_naming_the_shard() -> None:
    """Issue 13, reproduction 6: a forged (pickled) state record was unpickled and ran code."""
    import pickle
    import zlib

    from stopwise.daemon.shell.snapshots import LegacySnapshotError

    header = json.dumps({"format": 1, "shard": "learn/3", "positions": {}, "created_at": 0.0, "meta": {}}).encode()
    blob = b"-\n" + header + b"\n" + zlib.compress(pickle.dumps({"any": "thing"}))
    with pytest.raises(LegacySnapshotError, match=r"shard 'learn/3' is format 1 \(pickled state\): refused"):
        Snapshot.decode(blob, None)
