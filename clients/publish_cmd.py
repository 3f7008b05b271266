"""``stopwise publish``: validate records from a JSONL file (or stdin) and
send them, for backfills and for apps written in other languages.

Every line is decoded with the same decoders the daemon uses (so a line the
daemon would send to its DLQ is refused here, with the same reason code);
blank lines are skipped. The report names each rejected line by number.

>>> from stopwise.clients.publisher import EventPublisher, FakeProducer
>>> fake = FakeProducer()
>>> pub = EventPublisher("x", "inf", "fb", producer_factory=lambda **kw: fake)
>>> rep = publish_lines(['{"request_id": "r1", "ts": 1, "em": 1}', '', '{"request_id": "r2"}', 'nope'], "feedback", pub)
>>> rep.accepted, [(n, r) for n, r, _ in rep.rejected]
(1, [(3, 'missing_field'), (4, 'bad_json')])
>>> pub.close(5.0), len(fake.records)
(0, 1)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

from stopwise.daemon.errors import DecodeError
from stopwise.daemon.records import decode_feedback, decode_inference

from .publisher import EventPublisher

DECODERS = {"inference": decode_inference, "feedback": decode_feedback}


@dataclass
class PublishReport:
    accepted: int = 0
    rejected: list[tuple[int, str, str]] = field(default_factory=list)  # (line number, reason, detail)
    lines: int = 0


def publish_lines(lines: Iterable[str], kind: str, publisher: EventPublisher, *,
                  max_bytes: int | None = None, max_checkpoints: int | None = None,
                  flush_every: int = 5000, flush_timeout: float = 30.0) -> PublishReport:
    """Decode each line as a ``kind`` record and queue the valid ones on
    ``publisher``; flush every ``flush_every`` so a backfill never overflows
    the queue (this is a CLI: waiting is fine here). The limits default to the
    publisher's (from the config with ``publisher_from_config``)."""
    max_bytes = publisher.max_record_bytes if max_bytes is None else max_bytes
    max_cps = publisher.max_checkpoints if max_checkpoints is None else max_checkpoints
    decode = DECODERS[kind]
    if kind == "inference":
        decode = lambda data, mb, _d=decode: _d(data, mb, max_cps)  # noqa: E731
    rep = PublishReport()
    for n, line in enumerate(lines, start=1):
        rep.lines = n
        text = line.strip()
        if not text:
            continue
        try:
            rec = decode(text.encode("utf-8", "surrogatepass"), max_bytes)
        except DecodeError as exc:
            rep.rejected.append((n, exc.reason, exc.detail))
            continue
        publisher.publish(rec)
        rep.accepted += 1
        if publisher.queued >= min(flush_every, publisher.queue_size // 2):
            publisher.flush(flush_timeout)
    return rep
