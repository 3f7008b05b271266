"""The stopping rule and the exploration draw, shared by the inferencer
client, the simulator and the daemon's counterfactual evaluator so that all
three agree exactly.

Stop at the first checkpoint whose score is at least ``tau``; a threshold of
1.0 (``NO_EARLY_STOP``) never stops early.

>>> cps = [(10, 0.4, "a"), (20, 0.8, "b"), (30, 0.9, "b")]
>>> stop_index(cps, 0.75), stop_index(cps, 0.95), stop_index(cps, 1.0)
(1, 2, 2)
>>> explores("req-1", 0.0), explores("req-1", 1.0)
(False, True)
"""

from __future__ import annotations

import hashlib
from typing import Sequence

NO_EARLY_STOP = 1.0


def stops_at(score: float, tau: float) -> bool:
    """Whether a checkpoint with ``score`` stops a request under ``tau``."""
    return tau < NO_EARLY_STOP and score >= tau


def stop_index(checkpoints: Sequence[Sequence], tau: float) -> int:
    """Index of the checkpoint delivered under threshold ``tau``: the first
    whose score passes it, else the last (the run went to the end)."""
    if tau < NO_EARLY_STOP:
        for i, cp in enumerate(checkpoints):
            if cp[1] >= tau:
                return i
    return len(checkpoints) - 1


def id_hash(request_id: str, salt: bytes = b"") -> int:
    """64-bit blake2b of a request id, keyed by ``salt`` (none by default)."""
    digest = hashlib.blake2b(request_id.encode("utf-8", "surrogatepass"), digest_size=8, key=salt).digest()
    return int.from_bytes(digest, "big")


def explore_draw(request_id: str, salt: bytes = b"") -> float:
    """A stable uniform draw in [0, 1) from the request id (another
    ``salt`` gives an independent draw)."""
    return id_hash(request_id, salt) / 2.0**64


def explores(request_id: str, explore_rate: float) -> bool:
    """Whether this request runs to the end as exploration."""
    return explore_draw(request_id) < explore_rate


def propensity(explored: bool, explore_rate: float) -> float:
    """Probability of the logged choice (explore or not) under ``explore_rate``."""
    p = explore_rate if explored else 1.0 - explore_rate
    return min(1.0, max(p, 1e-6))
