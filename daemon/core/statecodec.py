"""A safe, versioned codec for the daemon's state (the snapshot payload).

Replaces pickle: decoding cannot run code. The output is JSON (then zlib by
the snapshot envelope) of a tagged tree; it holds only plain data and the
names of whitelisted classes.

Encoded natively: ``None``, ``bool``, ``int``, finite ``float``, ``str``,
``list``, and ``dict`` with ``str`` keys not starting with ``$``. Tagged
(a one-key object whose key starts with ``$``): non-finite floats, bytes,
tuples, other dicts (any hashable keys), ``OrderedDict``, ``set``,
``frozenset``, ``deque`` (with ``maxlen``), ``array.array``, numpy arrays
(dtype, shape, raw bytes; object dtypes refused), ``random.Random`` (its
``getstate()``), ``pathlib`` paths, shared references and cycles
(``$def``/``$ref``: an object reachable twice is stored once), and
instances of whitelisted classes.

Whitelisted classes: a class whose ``__module__`` starts with ``stopwise.``
and which the module defines (looked up by module and qualified name among
the modules already imported: decoding never imports anything). An
instance is stored as its ``__getstate__()`` result (dataclasses,
``__slots__`` classes and plain ``__dict__`` classes use the default one)
and rebuilt with ``cls.__new__(cls)`` followed by ``__setstate__`` when the
class defines one, else by setting the attributes. No other callable is
ever invoked. Classes wrapping foreign objects (River models, for one) give
themselves a ``__getstate__``/``__setstate__`` exporting plain data. The
record models listed in :data:`JSON_MODELS` (inference and feedback events,
threshold records) are stored as their own JSON and decoded through their own
validation, as when they arrive from Kafka.

Anything else is refused with :class:`StateCodecError` naming where it was.

>>> from collections import deque
>>> obj = {"a": (1, 2.5, float("inf")), 3: {b"x", None}, "q": deque([1, 2], maxlen=5)}
>>> back = decode(encode(obj))
>>> back == obj, back["q"].maxlen
(True, 5)
>>> decode(b'{"format":"stopwise-state","version":2,"root":{"$o":["os","system",{}]}}')
Traceback (most recent call last):
...
stopwise.daemon.core.statecodec.StateCodecError: root: class os.system is not allowed (only stopwise.* classes)
"""

from __future__ import annotations

import array
import base64
import json
import math
import pathlib
import random
import sys
from collections import OrderedDict, deque
from operator import methodcaller
from typing import Any

from ..errors import StopwiseError

FORMAT = "stopwise-state"
VERSION = 2
ALLOWED_PREFIX = "stopwise."

__all__ = ["FORMAT", "VERSION", "StateCodecError", "decode", "encode"]


class StateCodecError(StopwiseError, ValueError):
    """State that cannot be encoded, or bytes that are not valid state."""


_ATOMS = (type(None), bool, int, float, str)
_ATOM_SET = frozenset((*_ATOMS, bytes))
_JSON_ATOMS = frozenset(_ATOMS)
_STR = frozenset((str,))
_EXACT = frozenset((type(None), bool, int, str))
_NUMBERS = frozenset((bool, int, float))
_DOLLAR = methodcaller("startswith", "$")


def _plain_values(values) -> bool:
    """Every value is JSON as it is (None, bool, int, str, finite float):
    checked with C-level loops, so long runs of plain data skip the walk."""
    types = set(map(type, values))
    if types <= _EXACT:
        return True
    if float not in types or not types <= _JSON_ATOMS:
        return False
    if types <= _NUMBERS:
        return all(map(math.isfinite, values))
    return all(math.isfinite(v) for v in values if type(v) is float)


JSON_MODELS = {"stopwise.daemon.records": frozenset({"InferenceEvent", "FeedbackEvent", "ThresholdRecord"})}
"""The record models (pydantic) stored as their own JSON and restored through
their own validation, exactly as input from Kafka is: far faster than a walk
over their fields, and they hold nothing else."""


def _is_json_model(cls: type) -> bool:
    names = JSON_MODELS.get(cls.__module__)
    return names is not None and cls.__qualname__ in names


def _allowed_class(module: str, qualname: str) -> type:
    """The class ``module.qualname``, if it is a stopwise class already imported."""
    if not isinstance(module, str) or not isinstance(qualname, str):
        raise StateCodecError(f"class name must be two strings, got {module!r}, {qualname!r}")
    if not module.startswith(ALLOWED_PREFIX):
        raise StateCodecError(f"class {module}.{qualname} is not allowed (only stopwise.* classes)")
    mod = sys.modules.get(module)
    if mod is None:
        raise StateCodecError(f"class {module}.{qualname}: module {module} is not loaded")
    obj: Any = mod
    for part in qualname.split("."):
        if part.startswith("<"):
            raise StateCodecError(f"class {module}.{qualname}: not a module-level class")
        obj = getattr(obj, part, None)
    if not isinstance(obj, type) or obj.__module__ != module or obj.__qualname__ != qualname:
        raise StateCodecError(f"{module}.{qualname} is not a class defined in {module}")
    return obj


def _sorted_if_plain(items) -> list:
    """Set elements sorted when they are all str or all numbers (so equal
    sets encode to equal bytes), else in iteration order."""
    kinds = {type(v) for v in items}
    if kinds and (kinds <= {str} or kinds <= {int, float}):
        return sorted(items)
    return list(items)


_STATE, _KEY = object(), object()  # path steps: into an instance's state, into a mapping's keys


def _where(path: Any) -> str:
    """A readable location from a path chain ``(parent, step)`` (built cheaply,
    formatted only for an error message)."""
    steps = []
    while isinstance(path, tuple):
        path, step = path
        steps.append(".state" if step is _STATE else "<key>" if step is _KEY else f"[{step!r}]")
    return str(path) + "".join(reversed(steps))


_TRACKED = (list, dict, OrderedDict, set, deque, bytearray, array.array, random.Random)
"""Types whose identity is kept (shared references, cycles); instances of
whitelisted classes too. Tuples, frozensets and atoms are values."""


class _Encoder:
    def __init__(self) -> None:
        self.counts: dict[int, int] = {}
        self.states: dict[int, Any] = {}   # id(instance) -> its __getstate__() (kept alive: ids stay unique)
        self.ids: dict[int, int] = {}

    # pass 1: count how often each tracked object is reached
    def count(self, root: Any) -> None:
        counts, stack = self.counts, [(root, "root")]
        atoms = _ATOM_SET
        while stack:
            o, p = stack.pop()
            t = type(o)
            if t in atoms:
                continue
            if t is tuple or t is frozenset:
                if not set(map(type, o)) <= atoms:
                    stack.extend([(v, p) for v in o if type(v) not in atoms])
                continue
            oid = id(o)
            if oid in counts:
                counts[oid] += 1
                continue
            counts[oid] = 1
            if t is list or t is set or t is deque:
                if not set(map(type, o)) <= atoms:
                    stack.extend([(v, p) for v in o if type(v) not in atoms])
            elif t is dict or t is OrderedDict:
                for k, v in o.items():
                    if type(v) not in atoms:
                        stack.append((v, (p, k)))
                    if type(k) not in atoms:
                        stack.append((k, (p, _KEY)))
            elif t in _TRACKED or isinstance(o, pathlib.PurePath):
                continue
            elif t.__module__ == "numpy" and t.__name__ == "ndarray":
                if o.dtype.hasobject:
                    raise StateCodecError(f"{_where(p)}: numpy array of Python objects is not allowed")
            elif t.__module__.startswith("numpy"):
                continue  # numpy scalar: encoded as a plain number
            elif _is_json_model(t):
                continue
            else:
                stack.append((self._state(o, p), (p, _STATE)))

    def _state(self, o: Any, p: Any) -> Any:
        oid = id(o)
        if oid in self.states:
            return self.states[oid]
        cls = type(o)
        try:
            _allowed_class(cls.__module__, cls.__qualname__)  # raises for foreign classes
        except StateCodecError as exc:
            raise StateCodecError(f"{_where(p)}: {exc}") from None
        if isinstance(o, (tuple, list, dict, set, frozenset, int, float, str, bytes)):
            raise StateCodecError(f"{_where(p)}: {cls.__qualname__} subclasses a builtin; not supported")
        st = self.states[oid] = o.__getstate__()
        return st

    # pass 2: build the tree
    def tree(self, o: Any, p: Any) -> Any:
        t = type(o)
        if t is str or t is int or t is bool or o is None:
            return o
        if t is float:
            return o if math.isfinite(o) else {"$f": repr(o)}
        if t is bytes:
            return {"$b": base64.b64encode(o).decode()}
        if t is tuple:
            return {"$t": list(o) if _plain_values(o) else [self.tree(v, p) for v in o]}
        if t is frozenset:
            return {"$fs": [self.tree(v, p) for v in _sorted_if_plain(o)]}
        oid = id(o)
        if self.counts.get(oid, 1) > 1:
            if oid in self.ids:
                return {"$ref": self.ids[oid]}
            self.ids[oid] = n = len(self.ids)
            return {"$def": [n, self._plain(o, t, p)]}
        return self._plain(o, t, p)

    def _plain(self, o: Any, t: type, p: Any) -> Any:
        tr = self.tree
        if t is list:
            return o if _plain_values(o) else [tr(v, p) for v in o]
        if t is dict:
            if set(map(type, o)) <= _STR and not any(map(_DOLLAR, o)):
                return o if _plain_values(o.values()) else {k: tr(v, (p, k)) for k, v in o.items()}
            return {"$d": [[tr(k, (p, _KEY)), tr(v, (p, k))] for k, v in o.items()]}
        if t is OrderedDict:
            return {"$od": [[tr(k, (p, _KEY)), tr(v, (p, k))] for k, v in o.items()]}
        if t is set:
            return {"$s": [tr(v, p) for v in _sorted_if_plain(o)]}
        if t is deque:
            return {"$q": [[tr(v, p) for v in o], o.maxlen]}
        if t is bytearray:
            return {"$ba": base64.b64encode(bytes(o)).decode()}
        if t is array.array:
            return {"$arr": [o.typecode, base64.b64encode(o.tobytes()).decode()]}
        if t is random.Random:
            return {"$rng": tr(o.getstate(), p)}
        if isinstance(o, pathlib.PurePath):
            return {"$path": str(o)}
        if t.__module__ == "numpy" and t.__name__ == "ndarray":
            import numpy as np
            a = np.ascontiguousarray(o)
            return {"$np": [a.dtype.str, list(a.shape), base64.b64encode(a.tobytes()).decode()]}
        if t.__module__.startswith("numpy"):
            v = o.item()
            if type(v) not in _ATOM_SET:
                raise StateCodecError(f"{_where(p)}: numpy value of type {t.__name__} is not supported")
            return tr(v, p)
        if _is_json_model(t):
            return {"$m": [t.__module__, t.__qualname__, o.model_dump_json()]}
        st = self._state(o, p)
        return {"$o": [t.__module__, t.__qualname__, tr(st, (p, _STATE))]}


def encode(obj: Any) -> bytes:
    """The state of ``obj`` as versioned JSON bytes (see the module doc)."""
    enc = _Encoder()
    enc.count(obj)
    root = enc.tree(obj, "root")
    try:
        return json.dumps({"format": FORMAT, "version": VERSION, "root": root},
                          separators=(",", ":"), allow_nan=False).encode()
    except (TypeError, ValueError) as exc:  # pragma: no cover - the tree is plain by construction
        raise StateCodecError(f"cannot write state: {exc}") from None


def decode(data: bytes) -> Any:
    """Inverse of :func:`encode`; :class:`StateCodecError` for anything that
    is not state of this format and version (an old pickle included)."""
    if data[:1] == b"\x80":
        raise StateCodecError("state is a pickle (snapshot format 1): refused, it could run code")
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise StateCodecError(f"state is not JSON: {exc}") from None
    except RecursionError:
        raise StateCodecError("state nests too deeply") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise StateCodecError(f"not {FORMAT} data")
    if doc.get("version") != VERSION:
        raise StateCodecError(f"{FORMAT} version {doc.get('version')!r} is not supported (this build reads {VERSION})")
    from .statedecode import _Decoder  # the decoder lives beside this module (size)

    try:
        return _Decoder().node(doc.get("root"), "root")
    except RecursionError:
        raise StateCodecError("state nests too deeply") from None

