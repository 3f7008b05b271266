"""``stopwise tail``: the threshold table per context, as a rich table or
JSON lines, once or live (``--follow``); optionally with the inferencer
fleet's token savings and EM drop read from its ``--stats-file``.

>>> from stopwise.daemon.records import ThresholdRecord
>>> rec = ThresholdRecord(context="task=qa", threshold=0.9, explore_rate=0.1, version=2,
...                       issued_at=90.0, expires_at=200.0, policy="reference", n=50, reason="ltt")
>>> row = record_row(rec, now=100.0)
>>> row["context"], row["age_s"], row["expired"]
('task=qa', 10.0, False)
>>> select({"task=qa": rec, "*": rec}, "qa").keys()
dict_keys(['task=qa'])
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable, Mapping

from rich.console import Group
from rich.table import Table

from stopwise.daemon.records import ThresholdRecord

HEADERS = ("context", "thr", "explore", "ver", "age", "loss", "loss ucb", "savings", "n", "reason")


def record_row(rec: ThresholdRecord, now: float) -> dict[str, Any]:
    """One record as a flat row (JSON-friendly)."""
    return {
        "context": rec.context, "threshold": rec.threshold, "explore_rate": rec.explore_rate,
        "version": rec.version, "age_s": round(now - rec.issued_at, 1),
        "expired": rec.expires_at <= now, "est_loss": rec.est_loss, "est_loss_ucb": rec.est_loss_ucb,
        "est_savings": rec.est_savings, "n": rec.n, "reason": rec.reason, "policy": rec.policy,
        "issued_at": rec.issued_at, "expires_at": rec.expires_at,
    }


def select(table: Mapping[str, ThresholdRecord], context: str | None) -> dict[str, ThresholdRecord]:
    """Records whose context key contains ``context`` (all if None), sorted by key."""
    return {k: table[k] for k in sorted(table) if not context or context in k}


def console():
    """A rich Console; at least 150 columns wide when the output is not a terminal (logs, pipes)."""
    import sys

    from rich.console import Console

    return Console() if sys.stdout.isatty() else Console(width=150)


def _fmt(v: Any, digits: int = 3) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def threshold_table(records: Mapping[str, ThresholdRecord], now: float, *, rejected: int = 0) -> Table:
    t = Table(title=f"stopwise thresholds ({len(records)} contexts, {rejected} rejected)", expand=False)
    t.add_column("context", no_wrap=True, min_width=24)
    for col in HEADERS[1:]:
        t.add_column(col, justify="left" if col == "reason" else "right", no_wrap=col == "reason")
    for rec in records.values():
        r = record_row(rec, now)
        age = f"{r['age_s']:.0f}s" + (" EXPIRED" if r["expired"] else "")
        t.add_row(r["context"], _fmt(r["threshold"]), _fmt(r["explore_rate"]), str(r["version"]), age,
                  _fmt(r["est_loss"], 4), _fmt(r["est_loss_ucb"], 4), _fmt(r["est_savings"]),
                  _fmt(r["n"], 0), r["reason"][:32])
    return t


def fleet_table(stats: Mapping[str, Any], context: str | None = None) -> Table:
    """The inferencer fleet's per-context savings and EM drop (from its stats file)."""
    summary = stats.get("summary", {})
    t = Table(title="inferencer fleet: tokens per request and EM vs. full runs", expand=False)
    t.add_column("context", no_wrap=True, min_width=24)
    for col in ("reqs", "expl", "thr", "tokens", "saved", "EM", "EM full", "drop pt"):
        t.add_column(col, justify="right")
    for key, row in summary.items():
        if context and key != "all" and context not in key:
            continue
        t.add_row(key, str(row["requests"]), str(row["explored"]), _fmt(row["last_threshold"]),
                  f"{row['mean_tokens']:.0f}", f"{100 * row['savings']:.1f}%",
                  _fmt(row["em"]), _fmt(row["em_full"]), f"{100 * row['em_drop']:+.2f}")
    return t


def read_stats(path: Path | None) -> dict[str, Any] | None:
    if path is None:
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def view(records: Mapping[str, ThresholdRecord], now: float, *, rejected: int = 0,
         stats: Mapping[str, Any] | None = None, context: str | None = None):
    parts: list[Any] = [threshold_table(records, now, rejected=rejected)]
    if stats:
        parts.append(fleet_table(stats, context))
    return Group(*parts)


def json_lines(records: Mapping[str, ThresholdRecord], now: float) -> list[str]:
    return [json.dumps(record_row(r, now), sort_keys=True) for r in records.values()]


def follow_json(get_table: Callable[[], Mapping[str, ThresholdRecord]], context: str | None,
                emit: Callable[[str], None], *, until: Callable[[], bool], interval_s: float = 0.5,
                clock: Callable[[], float] = time.time) -> int:
    """Emit a JSON line for every (context, version) not emitted before; return the count."""
    seen: dict[str, int] = {}
    n = 0
    while True:
        now = clock()
        for key, rec in select(get_table(), context).items():
            if seen.get(key) != rec.version:
                seen[key] = rec.version
                emit(json.dumps(record_row(rec, now), sort_keys=True))
                n += 1
        if until():
            return n
        time.sleep(interval_s)
