"""Sanity checks of a shard's state restored from a snapshot, before it is
used: the right type for the shard, and no poisoned number in it.

A snapshot that verifies and loads can still hold state that would fail
every tick after the restart (issue 13: a feedback weight of 1e300, once
accepted, made the estimates NaN, the tick raised, and the shutdown
snapshot saved the poison, so every restart died the same way). The runner
refuses such a snapshot (:func:`check_state` raises :class:`StateError`),
logs it naming the shard, and rebuilds the shard from its input.

Rules, over every number reachable from the state object (attributes,
slots, containers, numpy arrays; for pydantic records only their declared
fields, since unknown extra fields are kept verbatim and never read):

* NaN and +inf are refused;
* -inf is refused except as the "never" sentinel of the attributes named in
  :data:`SENTINEL_ATTRS` (``Joiner._clock`` before any event, a circuit
  breaker's ``until``);
* a finite float beyond :data:`MAX_MAGNITUDE` is refused (decode bounds keep
  every input number under 1e10, so no legitimate sum comes near it; an
  older snapshot holding a 1e300 weight does);
* an int beyond 2**64 is refused (request-id hashes are 64-bit);
* a Joiner's pending halves are checked against the decode bounds
  (:func:`check_pending`), everything else by the generic walk.

>>> from stopwise.daemon.config import Config
>>> from stopwise.daemon.core.join import Joiner
>>> check_state("join", Joiner.from_config(Config()))
>>> try:
...     check_state("learn", Joiner.from_config(Config()))
... except StateError as e:
...     print(e)
state is a Joiner, not a Controller
>>> class Poisoned:
...     def __init__(self): self.sums = {"task=qa": [1.0, float("nan")]}
>>> try:
...     check_numbers(Poisoned())
... except StateError as e:
...     print(e)
non-finite number nan at .sums['task=qa'][1]
"""

from __future__ import annotations

import math
from collections import deque
from types import FunctionType, ModuleType

import numpy as np
from pydantic import BaseModel

from ..errors import StopwiseError
from ..records import MAX_FEATURE, MAX_TS, MAX_WEIGHT

MAX_MAGNITUDE = 1e100
MAX_INT = 2**64
SENTINEL_ATTRS = frozenset({"_clock", "until"})
SKIP_FIELDS = frozenset({"checkpoints", "context", "request_id", "gold_answer_hash", "source", "sig"})
"""Record fields not walked: strings, and checkpoints (tokens and scores were
always bounded at decode; walking them made a 150k-entry join state take 13 s)."""

_ATOMS = (str, bytes, bytearray, bool, type(None), complex, range, type, FunctionType, ModuleType)


class StateError(StopwiseError):
    """A restored state object failed a sanity check (what and where)."""


def check_state(kind: str, obj) -> None:
    """Raise :class:`StateError` unless ``obj`` is the state of a ``kind``
    shard (``join`` or ``learn``) with no poisoned number (module doc)."""
    from ..core.engine import Controller
    from ..core.join import Joiner

    want = {"join": Joiner, "learn": Controller}.get(kind)
    if want is None:
        raise StateError(f"unknown shard kind {kind!r}")
    if not isinstance(obj, want):
        raise StateError(f"state is a {type(obj).__name__}, not a {want.__name__}")
    skip: tuple = ()
    pending = getattr(obj, "_pending", None) if kind == "join" else None
    if isinstance(pending, dict):
        check_pending(pending)
        skip = (pending,)
    check_numbers(obj, skip=skip)


def check_pending(pending: dict) -> None:
    """The pending halves of a Joiner (``request_id -> [inference, feedback,
    first_seen, size in bytes]``) against the decode bounds of :mod:`..records` (a
    snapshot from before the bounds may hold a 1e300 weight). A tight loop:
    150k entries take a fraction of a second, where the generic walk takes
    seconds."""
    rid = None
    try:
        for rid, entry in pending.items():
            inf, fb, first, size = entry   # a wrong shape raises ValueError/TypeError
            if type(size) is not int or size < 0:
                raise ValueError(f"entry size {size!r}")
            # comparisons are False for NaN; a wrong type raises TypeError
            if not -MAX_MAGNITUDE <= first <= MAX_MAGNITUDE:
                raise ValueError(f"arrival time {first!r}")
            if fb is not None and not (0.0 < fb.weight <= MAX_WEIGHT and 0.0 <= fb.ts <= MAX_TS):
                raise ValueError(f"feedback weight {fb.weight!r} / ts {fb.ts!r} out of bounds")
            if inf is not None:
                if not (0.0 <= inf.ts <= MAX_TS and 0.0 <= inf.threshold <= 1.0 and 0.0 < inf.propensity <= 1.0):
                    raise ValueError(f"inference ts {inf.ts!r} / threshold {inf.threshold!r} / "
                                     f"propensity {inf.propensity!r} out of bounds")
                for v in inf.features.values():
                    if not -MAX_FEATURE <= v <= MAX_FEATURE:
                        raise ValueError(f"inference feature {v!r} out of bounds")
    except (ValueError, TypeError, AttributeError, IndexError) as exc:
        raise StateError(f"pending request {rid!r}: {exc}") from None


def _bad_float(x: float, attr: str | None) -> str | None:
    if math.isfinite(x):
        return None if abs(x) <= MAX_MAGNITUDE else f"number {x!r} beyond {MAX_MAGNITUDE:g}"
    if x == -math.inf and attr in SENTINEL_ATTRS:
        return None
    return f"non-finite number {x!r}"


def _children(obj):
    """(path suffix, attribute name or None, child) of a container or object."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield (k,), None, v
    elif isinstance(obj, (list, tuple, deque)):
        for i, v in enumerate(obj):
            yield (i,), None, v
    elif isinstance(obj, (set, frozenset)):
        for v in obj:
            yield ("{}",), None, v
    elif isinstance(obj, BaseModel):
        d = obj.__dict__
        for name in type(obj).model_fields:
            if name not in SKIP_FIELDS:
                yield name, name, d.get(name)
    else:
        d = getattr(obj, "__dict__", None)
        if isinstance(d, dict):
            for k, v in d.items():
                yield k, k, v
        for cls in type(obj).__mro__:
            slots = cls.__dict__.get("__slots__", ())
            for name in (slots,) if isinstance(slots, str) else slots:
                if not name.startswith("__") and hasattr(obj, name):
                    yield name, name, getattr(obj, name)


def _show(path: list) -> str:
    return "".join(f"[{p[0]!r}]" if isinstance(p, tuple) else f".{p}" for p in path) or "(state)"


def check_numbers(root, max_nodes: int = 50_000_000, skip: tuple = ()) -> None:
    """Raise :class:`StateError` at the first poisoned number reachable from
    ``root`` (module doc), naming its path; objects in ``skip`` are not walked."""
    why = _walk(root, max_nodes, False, skip)
    if why is not None:   # found: walk again, keeping paths, to say where
        raise StateError(_walk(root, max_nodes, True, skip) or why)


def _walk(root, max_nodes: int, paths: bool, skip: tuple) -> str | None:
    seen: set[int] = {id(o) for o in skip}
    stack: list = [((), None, root)]
    nodes = 0
    while stack:
        path, attr, obj = stack.pop()
        if isinstance(obj, float):
            why = _bad_float(obj, attr)
            if why:
                return f"{why} at {_show(list(path))}" if paths else why
            continue
        if isinstance(obj, int) and not isinstance(obj, bool):
            if abs(obj) > MAX_INT:
                return f"integer beyond 2**64 at {_show(list(path))}" if paths else "integer beyond 2**64"
            continue
        if isinstance(obj, _ATOMS):
            continue
        if isinstance(obj, np.ndarray):
            if obj.dtype.kind in "fc" and obj.size:
                vals = np.abs(obj)
                if not np.isfinite(vals).all() or float(vals.max()) > MAX_MAGNITUDE:
                    return f"non-finite or huge number in the array at {_show(list(path))}"
            elif obj.dtype.kind == "O":
                stack.extend((path + ((i,),) if paths else path, None, v) for i, v in enumerate(obj.ravel().tolist()))
            continue
        if isinstance(obj, np.generic):
            stack.append((path, attr, obj.item()))
            continue
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        nodes += 1
        if nodes > max_nodes:
            return f"state has more than {max_nodes} objects"
        if paths:
            stack.extend((path + (suffix,), name, child) for suffix, name, child in _children(obj))
        else:
            stack.extend(_children(obj))
    return None
