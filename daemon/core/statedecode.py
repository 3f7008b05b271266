"""Decoding for :mod:`.statecodec` (the inverse of its encoder): rebuilds plain
values and whitelisted stopwise objects, calls nothing but ``cls.__new__``,
``__setstate__`` and the record models' own validation."""

from __future__ import annotations

import array
import base64
import pathlib
import random
from collections import OrderedDict, deque
from typing import Any

from .statecodec import (_DOLLAR, _JSON_ATOMS, _KEY, _STATE, StateCodecError, _allowed_class, _is_json_model,
                         _where)


class _Decoder:
    def __init__(self) -> None:
        self.refs: dict[int, Any] = {}

    def node(self, v: Any, p: Any, define: int | None = None) -> Any:
        t = type(v)
        if t is list:
            if set(map(type, v)) <= _JSON_ATOMS:  # fast path: the parsed list is the value
                self._register(define, v)
                return v
            out: list = []
            self._register(define, out)
            out.extend([self.node(x, p) for x in v])
            return out
        if t is not dict:
            if define is not None:
                raise StateCodecError(f"{_where(p)}: $def of a plain value")
            return v
        if len(v) != 1 or not next(iter(v)).startswith("$"):
            if any(map(_DOLLAR, v)):
                raise StateCodecError(f"{_where(p)}: unexpected tag in a mapping of {len(v)} keys")
            if set(map(type, v.values())) <= _JSON_ATOMS:
                self._register(define, v)
                return v
            out_d: dict = {}
            self._register(define, out_d)
            for k, x in v.items():
                out_d[k] = self.node(x, (p, k))
            return out_d
        tag, arg = next(iter(v.items()))
        handler = _TAGS.get(tag)
        if handler is None:
            raise StateCodecError(f"{_where(p)}: unknown tag {tag!r}")
        try:
            return handler(self, arg, p, define)
        except StateCodecError:
            raise
        except (TypeError, ValueError, KeyError, IndexError, OverflowError, AttributeError) as exc:
            raise StateCodecError(f"{_where(p)}: malformed {tag}: {exc}") from None

    def _register(self, define: int | None, obj: Any) -> None:
        if define is not None:
            if define in self.refs:
                raise StateCodecError(f"$def {define} defined twice")
            self.refs[define] = obj

    def _done(self, define: int | None, obj: Any) -> Any:
        self._register(define, obj)
        return obj

    def items(self, arg: list, p: Any) -> list:
        arg = _list(arg, p)
        if set(map(type, arg)) <= _JSON_ATOMS:
            return arg
        return [self.node(x, p) for x in arg]

    def pairs(self, arg: list, p: Any):
        for i, kv in enumerate(_list(arg, p)):
            k, x = _list(kv, p)
            yield self.node(k, (p, _KEY)), self.node(x, p)


def _list(v: Any, p: str) -> list:
    if type(v) is not list:
        raise StateCodecError(f"{_where(p)}: expected a list, got {type(v).__name__}")
    return v


def _dec_float(d: _Decoder, a, p, define):
    if a not in ("inf", "-inf", "nan"):
        raise StateCodecError(f"{_where(p)}: bad float {a!r}")
    return d._done(define, float(a))


def _dec_dict(d: _Decoder, a, p, define, cls=dict):
    out = cls()
    d._register(define, out)
    for k, x in d.pairs(a, p):
        out[k] = x
    return out


def _dec_set(d: _Decoder, a, p, define):
    out: set = set()
    d._register(define, out)
    out.update(d.items(a, p))
    return out


def _dec_deque(d: _Decoder, a, p, define):
    items, maxlen = _list(a, p)
    if maxlen is not None and (type(maxlen) is not int or maxlen < 0):
        raise StateCodecError(f"{_where(p)}: bad deque maxlen {maxlen!r}")
    out: deque = deque(maxlen=maxlen)
    d._register(define, out)
    out.extend(d.items(items, p))
    return out


def _dec_array(d: _Decoder, a, p, define):
    code, data = _list(a, p)
    if code not in array.typecodes:
        raise StateCodecError(f"{_where(p)}: bad array typecode {code!r}")
    out = array.array(code)
    out.frombytes(base64.b64decode(data, validate=True))
    return d._done(define, out)


def _dec_numpy(d: _Decoder, a, p, define):
    import numpy as np
    dtype, shape, data = _list(a, p)
    dt = np.dtype(str(dtype))
    if dt.hasobject:
        raise StateCodecError(f"{_where(p)}: numpy array of Python objects is not allowed")
    arr = np.frombuffer(base64.b64decode(data, validate=True), dtype=dt).reshape([int(s) for s in shape]).copy()
    return d._done(define, arr)


def _dec_rng(d: _Decoder, a, p, define):
    state = d.node(a, p)
    r = random.Random()
    r.setstate(state)
    return d._done(define, r)


def _class_at(module, qualname, p):
    """:func:`_allowed_class`, its refusal naming where in the state it was."""
    try:
        return _allowed_class(module, qualname)
    except StateCodecError as exc:
        raise StateCodecError(f"{_where(p)}: {exc}") from None


def _dec_object(d: _Decoder, a, p, define):
    module, qualname, state = _list(a, p)
    cls = _class_at(module, qualname, p)
    obj = cls.__new__(cls)
    d._register(define, obj)
    st = d.node(state, (p, _STATE))
    if getattr(cls, "__setstate__", None) is not None:
        obj.__setstate__(st)
        return obj
    slots = None
    if isinstance(st, tuple) and len(st) == 2:
        st, slots = st
    for part in (st, slots):
        if part is None:
            continue
        if not isinstance(part, dict) or not all(type(k) is str for k in part):
            raise StateCodecError(f"{_where(p)}: state of {qualname} must map attribute names to values")
        for k, v in part.items():
            object.__setattr__(obj, k, v)
    return obj


def _dec_model(d: _Decoder, a, p, define):
    module, qualname, text = _list(a, p)
    cls = _class_at(module, qualname, p)
    if not _is_json_model(cls) or type(text) is not str:
        raise StateCodecError(f"{_where(p)}: {module}.{qualname} is not a record model")
    try:
        obj = cls.model_validate_json(text)  # the record's own schema, as for input from Kafka
    except ValueError as exc:
        raise StateCodecError(f"{_where(p)}: invalid {qualname}: {str(exc).splitlines()[0]}") from None
    return d._done(define, obj)


def _dec_ref(d: _Decoder, a, p, define):
    if a not in d.refs:
        raise StateCodecError(f"{_where(p)}: reference {a!r} before its definition")
    return d.refs[a]


def _dec_def(d: _Decoder, a, p, define):
    n, body = _list(a, p)
    if type(n) is not int:
        raise StateCodecError(f"{_where(p)}: bad $def id {n!r}")
    obj = d.node(body, p, define=n)
    if n not in d.refs:  # immutables (tuple, frozenset, ...) register once built
        d.refs[n] = obj
    return obj


def _b64(a) -> bytes:
    return base64.b64decode(a, validate=True)


_TAGS = {
    "$f": _dec_float,
    "$b": lambda d, a, p, define: d._done(define, _b64(a)),
    "$ba": lambda d, a, p, define: d._done(define, bytearray(_b64(a))),
    "$t": lambda d, a, p, define: d._done(define, tuple(d.items(a, p))),
    "$fs": lambda d, a, p, define: d._done(define, frozenset(d.items(a, p))),
    "$s": _dec_set,
    "$d": _dec_dict,
    "$od": lambda d, a, p, define: _dec_dict(d, a, p, define, OrderedDict),
    "$q": _dec_deque,
    "$arr": _dec_array,
    "$np": _dec_numpy,
    "$rng": _dec_rng,
    "$path": lambda d, a, p, define: d._done(define, pathlib.Path(str(a))),
    "$o": _dec_object,
    "$m": _dec_model,
    "$ref": _dec_ref,
    "$def": _dec_def,
}
