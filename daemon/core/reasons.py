"""Bounded reason codes for a threshold publication.

A published record's ``reason`` is free text for humans (a policy writes its
bound, budget and ratios into it). Metrics labels must come from a small
fixed set, so :func:`reason_code` maps a reason to one of :data:`REASON_CODES`:

- ``kill_switch`` / ``circuit_breaker`` / ``min_evidence``: a guardrail forced
  the threshold (see :mod:`.guardrails`);
- ``drift``: the policy reacted to a realized loss over budget;
- ``step`` / ``clamp``: the policy's proposal, limited by the max-step or the
  clamp guardrail;
- ``initial``: the first record of a context (no previous threshold);
- ``update``: any other policy proposal;
- ``other``: an empty reason.

>>> reason_code("kill_switch")
'kill_switch'
>>> reason_code("ltt: ucb 0.0100 <= budget 0.0200 (ratio 0.50); explore 0.050; step", 0.9)
'step'
>>> reason_code("ab[b]: drift: realized loss over budget; ltt: ...", 0.5)
'drift'
>>> reason_code("ltt: ucb 0.0100 <= budget 0.0200", None), reason_code("naive: hold", 0.4), reason_code("")
('initial', 'update', 'other')
"""

from __future__ import annotations

REASON_CODES = ("kill_switch", "circuit_breaker", "min_evidence", "drift", "step", "clamp",
                "initial", "update", "other")
_FORCED = ("kill_switch", "circuit_breaker", "min_evidence")


def reason_code(reason: str, previous_threshold: float | None = 0.0) -> str:
    """The code of ``reason`` (one of :data:`REASON_CODES`, see the module doc).

    ``previous_threshold`` is the threshold the publication replaces (``None``
    for the first record of a context).
    """
    text = (reason or "").strip()
    if not text:
        return "other"
    if text in _FORCED:
        return text
    if "drift:" in text:
        return "drift"
    last = text.rsplit(";", 1)[-1].strip()
    if last in ("step", "clamp"):
        return last
    return "initial" if previous_threshold is None else "update"
