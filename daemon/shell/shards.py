"""Per-partition state shards owned by a daemon instance.

``join/<p>``: a Joiner for inference partition p and feedback partition p;
its positions are the next offsets of those two partitions.
``learn/<p>``: a Controller for examples partition p; its position is the
next offset of examples partition p.

>>> s = Shard("join/2", kind="join", partition=2, obj=None)
>>> s.advance("stopwise.inference", 2, 40); s.positions
{'stopwise.inference:2': 41}
>>> shard_names_for([("stopwise.inference", 2), ("stopwise.feedback", 2), ("stopwise.examples", 0)],
...                 {"stopwise.inference": "inference", "stopwise.feedback": "feedback", "stopwise.examples": "examples"})
['join/2', 'learn/0']
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Iterable

from .snapshots import Snapshot, pos_key


@dataclass
class Shard:
    name: str
    kind: str                     # "join" | "learn"
    partition: int
    obj: Any                      # Joiner | Controller
    positions: dict[str, int] = field(default_factory=dict)
    dirty: bool = True            # changed since its last snapshot
    tag: str = field(default_factory=lambda: os.urandom(8).hex())
    """Identifies this incarnation of the shard (a new one per restore or
    assignment): examples-topic records learned into it as they were
    produced carry it in a header, so reading them back skips them."""

    def advance(self, topic: str, partition: int, last_offset: int) -> None:
        self.positions[pos_key(topic, partition)] = last_offset + 1
        self.dirty = True

    def meta(self) -> dict:
        """Counters copied into the snapshot header (readable without decoding the state)."""
        if self.kind == "learn":
            st = self.obj.stats()
            return {"unique_examples": int(self.obj.unique_examples), "labelled": float(st.get("labelled", 0)),
                    "learned": float(st.get("learned", 0)), "duplicates": float(st.get("duplicates", 0)),
                    "contexts": float(st.get("contexts", 0))}
        js = self.obj.stats
        return {"pending": len(self.obj), "joined": int(js.joined), "duplicates": int(js.duplicates),
                "evicted": int(js.evicted)}

    def snapshot(self, dump_state, now: float) -> Snapshot:
        return Snapshot(self.name, dict(self.positions), dump_state(self.obj), now, self.meta())


def shard_name(kind: str, partition: int) -> str:
    return f"{kind}/{partition}"


def shard_names_for(tps: Iterable[tuple[str, int]], roles: dict[str, str]) -> list[str]:
    """Shard names covering these (topic, partition) pairs, sorted."""
    names = set()
    for topic, p in tps:
        role = roles.get(topic)
        if role in ("inference", "feedback"):
            names.add(shard_name("join", p))
        elif role == "examples":
            names.add(shard_name("learn", p))
    return sorted(names)


def shard_inputs(name: str, roles: dict[str, str]) -> list[tuple[str, int]]:
    """The (topic, partition) inputs of a shard.

    >>> shard_inputs("join/1", {"i": "inference", "f": "feedback", "e": "examples"})
    [('i', 1), ('f', 1)]
    """
    kind, _, p = name.partition("/")
    wanted = ("inference", "feedback") if kind == "join" else ("examples",)
    by_role = {r: t for t, r in roles.items()}
    return [(by_role[r], int(p)) for r in wanted]
