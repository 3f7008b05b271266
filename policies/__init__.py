"""Threshold policies, registered by name.

>>> sorted(POLICIES)[:3]
['ab', 'bandit', 'ensemble']
>>> make_policy("static", threshold=0.9).threshold
0.9
>>> try:
...     make_policy("nope")
... except ValueError as e:
...     print(str(e).split(";")[0])
unknown policy 'nope'
"""

from __future__ import annotations

from .ab import ABPolicy
from .bandit import BanditPolicy
from .base import Outcome, Policy, Proposal, View
from .ensemble import EnsemblePolicy
from .load_aware import LoadAwarePolicy
from .naive import NaivePolicy
from .offline import OfflinePolicy
from .reference import ReferencePolicy
from .static import StaticPolicy

POLICIES: dict[str, type] = {
    "reference": ReferencePolicy,
    "static": StaticPolicy,
    "naive": NaivePolicy,
    "offline": OfflinePolicy,
    "bandit": BanditPolicy,
    "ab": ABPolicy,
    "load_aware": LoadAwarePolicy,
    "ensemble": EnsemblePolicy,
}


_CHILD_PARAMS = ("a", "b", "base")


def _child(value):
    """A child policy from config: a Policy, a name, or ``{"name": ..., **params}``."""
    if isinstance(value, str):
        return make_policy(value)
    if isinstance(value, dict):
        d = dict(value)
        if "name" not in d:
            raise ValueError(f"child policy {value!r} needs a 'name'")
        return make_policy(d.pop("name"), **d)
    return value


def make_policy(name: str, **params) -> Policy:
    """Build a registered policy; ``ValueError`` listing valid names if unknown.
    Child policies (``a``, ``b``, ``base``, ``policies``) may be given as
    names or ``{"name": ..., **params}`` mappings (as in a YAML config).

    >>> make_policy("ensemble", policies=["reference", {"name": "static", "threshold": 0.9}]).policies[1].threshold
    0.9
    """
    cls = POLICIES.get(name)
    if cls is None:
        raise ValueError(f"unknown policy {name!r}; valid names: {', '.join(sorted(POLICIES))}")
    params = {k: _child(v) if k in _CHILD_PARAMS else v for k, v in params.items()}
    if isinstance(params.get("policies"), (list, tuple)):
        params["policies"] = tuple(_child(v) for v in params["policies"])
    try:
        return cls(**params)
    except TypeError as exc:
        raise ValueError(f"policy {name!r}: bad parameters {params!r}: {exc}") from None


__all__ = ["POLICIES", "make_policy", "Policy", "Proposal", "View", "Outcome"]
