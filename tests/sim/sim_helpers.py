"""Helpers for the simulator tests: hand-built worlds and a scripted core."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from stopwise.daemon.records import ThresholdRecord
from stopwise.sim.world import WorldRequest


def row(rid: str, ts: float, cps: list, gold: str | None = "y", *, ctx: dict | None = None,
        present: bool = True, delay: float = 0.0, override: int | None = None) -> dict:
    fb: dict[str, Any] = {"present": present, "delay_s": delay}
    if override is not None:
        fb["em_override"] = override
    return {"request_id": rid, "ts": ts, "context": ctx if ctx is not None else {"task": "qa"},
            "features": {"f": 1.0}, "checkpoints": cps, "gold_answer_hash": gold, "feedback": fb}


def world(rows: list[dict]) -> list[WorldRequest]:
    """The rows as validated world requests."""
    return [WorldRequest.model_validate(r) for r in rows]


@dataclass(frozen=True)
class FakeDecision:
    record: ThresholdRecord


class ScriptedCore:
    """Stands in for :class:`Core` to test the simulator's own mechanics:
    records every call and publishes scripted records at given tick times."""

    def __init__(self, script: dict[float, list[dict]]) -> None:
        self.script = dict(script)
        self.inferences: list[tuple[Any, float]] = []
        self.feedbacks: list[tuple[Any, float]] = []
        self.ticks: list[float] = []
        self.version: dict[str, int] = {}

    def on_inference(self, ev, now):
        self.inferences.append((ev, now))
        return []

    def on_feedback(self, ev, now):
        self.feedbacks.append((ev, now))
        return []

    def tick(self, now):
        self.ticks.append(now)
        out = []
        for spec in self.script.pop(now, []):
            ctx = spec["context"]
            self.version[ctx] = self.version.get(ctx, 0) + 1
            out.append(FakeDecision(ThresholdRecord(
                context=ctx, threshold=spec["threshold"], explore_rate=spec.get("explore_rate", 0.0),
                version=self.version[ctx], issued_at=now, expires_at=spec.get("expires_at", now + 3600.0),
                policy="scripted")))
        return out


