"""State snapshots: a shard's pickled core state together with the input
positions it reflects, in one signed blob for the compacted state topic.

Envelope (before signing): one JSON header line, then the zlib-compressed
state bytes (``dump_state`` output). ``sign_blob`` prefixes the HMAC.

>>> snap = Snapshot("join/0", {"stopwise.inference:0": 12, "stopwise.feedback:0": 7}, b"state", 5.0)
>>> back = Snapshot.decode(snap.encode(b"k"), b"k")
>>> back.shard, back.positions["stopwise.inference:0"], back.state
('join/0', 12, b'state')
>>> try:
...     Snapshot.decode(snap.encode(b"k"), b"other")
... except SignatureError as e:
...     print("refused:", e)
refused: snapshot signature does not verify
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass, field

from ..errors import SignatureError
from ..signing import sign_blob, verify_blob

FORMAT = 1

__all__ = ["Snapshot", "SignatureError", "pos_key", "parse_pos_key"]


def pos_key(topic: str, partition: int) -> str:
    """Position key of a topic partition in a snapshot header.

    >>> pos_key("stopwise.feedback", 2), parse_pos_key("stopwise.feedback:2")
    ('stopwise.feedback:2', ('stopwise.feedback', 2))
    """
    return f"{topic}:{partition}"


def parse_pos_key(key: str) -> tuple[str, int]:
    topic, _, part = key.rpartition(":")
    return topic, int(part)


@dataclass(frozen=True)
class Snapshot:
    """One shard's state and the next offsets to read for its inputs."""

    shard: str
    positions: dict[str, int]
    state: bytes
    created_at: float
    meta: dict = field(default_factory=dict)

    def encode(self, key: bytes | None) -> bytes:
        header = {"format": FORMAT, "shard": self.shard, "positions": self.positions,
                  "created_at": self.created_at, "meta": self.meta}
        blob = json.dumps(header, sort_keys=True, separators=(",", ":")).encode() + b"\n" + zlib.compress(self.state, 1)
        return sign_blob(blob, key)

    @classmethod
    def decode(cls, data: bytes, key: bytes | None) -> "Snapshot":
        """Verify (when a key is configured) and parse; raise
        :class:`SignatureError` for a forged/unsigned blob, ``ValueError`` for
        a malformed one."""
        blob = verify_blob(data, key)
        head, sep, body = blob.partition(b"\n")
        if not sep:
            raise ValueError("snapshot has no header line")
        header = json.loads(head)
        if header.get("format") != FORMAT:
            raise ValueError(f"unknown snapshot format {header.get('format')!r}")
        positions = {str(k): int(v) for k, v in header["positions"].items()}
        return cls(header["shard"], positions, zlib.decompress(body), float(header["created_at"]),
                   dict(header.get("meta") or {}))
