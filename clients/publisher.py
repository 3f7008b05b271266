"""EventPublisher: what apps and inferencers embed to send inference and
feedback events to stopwise without ever blocking on it.

The app thread validates the record (pydantic, ~8 us) and appends it to a
bounded deque; a background sender thread serialises, keys by request_id and
hands batches to a Kafka producer, with at most ``max_inflight`` records
unacknowledged. When the broker is down (or slow) acks stop, the deque fills
and the OLDEST queued record is dropped; drops are counted
(``.dropped`` and the ``stopwise_publisher_dropped_total`` counter) and
logged at most once per ``log_interval_s``.

Validation choice: eager, in the caller. It costs ~8-10 us per call (measured
in bench/bench_clients.py, well under the 20 us target) and turns a malformed
record - a programming error - into a ``ValueError`` at the call site, where
it can be fixed, instead of a silent counter. Validation ends with the
daemon's own decoder run on the encoded bytes, with the same limits
(``max_record_bytes``, ``max_checkpoints``; :func:`publisher_from_config`
takes them from the config): what the publisher accepts the daemon accepts,
and a refusal is a :class:`RecordRejected` carrying the daemon's reason code.
``validate=False`` moves validation to the sender thread (invalid records are
then counted in ``.invalid`` and logged).

Nothing else is ever raised into the caller: broker errors stay in the sender.

>>> pub = EventPublisher("127.0.0.1:1", "inf", "fb", producer_factory=lambda **kw: FakeProducer())
>>> pub.feedback(request_id="r1", ts=1.0, em=1)
>>> pub.flush(timeout=5.0)
0
>>> pub.close(timeout=5.0), pub.sent, pub.dropped
(0, 1, 0)
>>> try:
...     pub.feedback(request_id="", ts=1.0, em=1)
... except ValueError as e:
...     print("refused")
refused
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Any, Callable

import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge
from pydantic import ValidationError

from stopwise.daemon.errors import DecodeError
from stopwise.daemon.records import (DEFAULT_MAX_BYTES, DEFAULT_MAX_CHECKPOINTS, FeedbackEvent, InferenceEvent,
                                     decode_feedback, decode_inference)

log = structlog.get_logger("stopwise.clients.publisher")

_INFERENCE, _FEEDBACK = 0, 1
_KINDS = ("inference", "feedback")
_MODELS = (InferenceEvent, FeedbackEvent)


class RecordRejected(ValueError):
    """A record the daemon would reject; ``reason`` is its DecodeError reason code."""

    def __init__(self, reason: str, detail: str = "") -> None:
        self.reason, self.detail = reason, detail
        super().__init__(f"{reason}: {detail}" if detail else reason)


def check_record(kind: int, rec: Any, max_bytes: int = DEFAULT_MAX_BYTES,
                 max_checkpoints: int = DEFAULT_MAX_CHECKPOINTS) -> InferenceEvent | FeedbackEvent:
    """Build the record (a dict is validated by the model, lax) and run the
    daemon's decoder on its encoded bytes; raise ``ValueError`` (pydantic's
    ``ValidationError`` or :class:`RecordRejected`) if either refuses it."""
    if not isinstance(rec, (InferenceEvent, FeedbackEvent)):
        rec = _MODELS[kind].model_validate(rec)
    try:
        data = rec.to_bytes()
    except Exception as exc:  # noqa: BLE001 - e.g. a lone surrogate pydantic cannot encode
        raise RecordRejected("bad_json", f"cannot encode: {exc}"[:300]) from None
    try:
        if kind == _INFERENCE:
            return decode_inference(data, max_bytes, max_checkpoints)
        return decode_feedback(data, max_bytes)
    except DecodeError as exc:
        raise RecordRejected(exc.reason, exc.detail) from None


class FakeProducer:
    """In-memory stand-in with the KafkaProducer surface used here (doctests, unit tests)."""

    def __init__(self) -> None:
        self.records: list[tuple[str, bytes, bytes]] = []

    def send(self, topic: str, value: bytes, key: bytes):
        self.records.append((topic, key, value))
        return _Done()

    def flush(self, timeout: float | None = None) -> None:
        return None

    def close(self, timeout: float | None = None) -> None:
        return None


class _Done:
    """An already-succeeded future (kafka-python calls ``fn(*args, value)``)."""

    def add_callback(self, fn, *a):
        fn(*a, None)
        return self

    def add_errback(self, fn, *a):
        return self


def _default_producer(**kw: Any):
    from kafka import KafkaProducer

    return KafkaProducer(**kw)


class EventPublisher:
    """Non-blocking, bounded, batching publisher of inference/feedback events.

    ``inference(**fields)`` / ``feedback(**fields)`` (or ``publish(record)``
    with a record model) return immediately. ``flush(timeout)`` and
    ``close(timeout)`` deliver what is queued within the timeout and return
    how many records remain undelivered.
    """

    def __init__(self, bootstrap: str, inference_topic: str, feedback_topic: str, *,
                 queue_size: int = 10_000, batch_size: int = 500, linger_s: float = 0.05,
                 max_inflight: int = 5_000,
                 producer_factory: Callable[..., Any] | None = None,
                 producer_config: dict[str, Any] | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 registry: CollectorRegistry | None = None,
                 validate: bool = True, log_interval_s: float = 10.0,
                 retry_backoff_s: tuple[float, float] = (0.2, 5.0), start: bool = True,
                 max_record_bytes: int = DEFAULT_MAX_BYTES,
                 max_checkpoints: int = DEFAULT_MAX_CHECKPOINTS) -> None:
        if queue_size < 1 or batch_size < 1:
            raise ValueError("queue_size and batch_size must be >= 1")
        self.bootstrap = bootstrap
        self.topics = (inference_topic, feedback_topic)
        self.queue_size, self.batch_size, self.linger_s = queue_size, batch_size, linger_s
        self.max_inflight = max(1, max_inflight)
        self._factory = producer_factory or _default_producer
        self._producer_config = {"bootstrap_servers": bootstrap, "acks": 1, "linger_ms": 20,
                                 "bootstrap_timeout_ms": 3000, "max_block_ms": 2000,
                                 "request_timeout_ms": 10000, "delivery_timeout_ms": 30000,
                                 "retries": 5, "client_id": "stopwise-publisher",
                                 **(producer_config or {})}
        self._clock = clock
        self._validate = validate
        self.max_record_bytes, self.max_checkpoints = max_record_bytes, max_checkpoints
        self._log_interval = log_interval_s
        self._backoff = retry_backoff_s
        self._q: deque = deque()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._producer = None
        self._inflight = 0
        self.dropped = 0
        self.sent = 0
        self.failed = 0
        self.invalid = 0
        self.connected = False
        self._last_log = -1e18
        self._dropped_logged = 0
        reg = registry if registry is not None else CollectorRegistry(auto_describe=True)
        self.registry = reg
        self._m_dropped = Counter("stopwise_publisher_dropped", "Records dropped (queue full, oldest first)", registry=reg)
        self._m_sent = Counter("stopwise_publisher_sent", "Records acknowledged by the broker", ["kind"], registry=reg)
        self._m_failed = Counter("stopwise_publisher_failed", "Records the producer failed to deliver", registry=reg)
        self._m_invalid = Counter("stopwise_publisher_invalid", "Invalid records refused by the sender (validate=False)", registry=reg)
        self._m_queue = Gauge("stopwise_publisher_queue", "Records waiting in the publisher queue", registry=reg)
        self._m_queue.set_function(lambda: len(self._q))
        self._thread = threading.Thread(target=self._run, name="stopwise-publisher", daemon=True)
        if start:
            self._thread.start()

    # ------------------------------------------------------------ app thread
    def inference(self, record: InferenceEvent | None = None, /, **fields: Any) -> None:
        """Queue an inference event. Raises ``ValueError`` (pydantic's
        ``ValidationError`` is one) only if the record is invalid."""
        self._put(_INFERENCE, record if record is not None else fields)

    def feedback(self, record: FeedbackEvent | None = None, /, **fields: Any) -> None:
        """Queue a feedback event. Raises ``ValueError`` only if the record is invalid."""
        self._put(_FEEDBACK, record if record is not None else fields)

    def publish(self, record: InferenceEvent | FeedbackEvent) -> None:
        """Queue an already-built record model."""
        self._put(_INFERENCE if isinstance(record, InferenceEvent) else _FEEDBACK, record)

    def _put(self, kind: int, rec: Any) -> None:
        if self._validate:
            rec = check_record(kind, rec, self.max_record_bytes, self.max_checkpoints)  # raises ValueError
        elif not isinstance(rec, (dict, InferenceEvent, FeedbackEvent)):
            raise ValueError(f"{_KINDS[kind]} record must be a dict or record model, not {type(rec).__name__}")
        q = self._q
        with self._lock:
            if len(q) >= self.queue_size:
                q.popleft()
                self.dropped += 1
                self._m_dropped.inc()
            q.append((kind, rec))
        if len(q) >= self.batch_size:
            self._wake.set()

    @property
    def queued(self) -> int:
        """Records waiting in the queue (not yet handed to the producer)."""
        return len(self._q)

    def pending(self) -> int:
        """Records not yet delivered: queued plus in flight in the producer."""
        return len(self._q) + self._inflight

    def flush(self, timeout: float = 10.0) -> int:
        """Deliver what is queued within ``timeout`` s; return how many remain."""
        deadline = time.monotonic() + timeout
        self._wake.set()
        while self.pending() and time.monotonic() < deadline:
            self._wake.set()
            time.sleep(min(0.01, max(0.0, deadline - time.monotonic())))
        return self.pending()

    def close(self, timeout: float = 10.0) -> int:
        """Flush within ``timeout``, stop the sender, close the producer; return what remains."""
        deadline = time.monotonic() + timeout
        left = self.flush(timeout) if self._thread.is_alive() else self.pending()
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(max(0.1, deadline - time.monotonic()))
        p, self._producer = self._producer, None
        if p is not None:
            try:
                p.close(timeout=max(0.0, deadline - time.monotonic()))
            except Exception as exc:  # noqa: BLE001 - never raise into the app
                log.warning("publisher_close_error", error=str(exc))
        return left

    def __enter__(self) -> "EventPublisher":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --------------------------------------------------------- sender thread
    def _run(self) -> None:
        backoff = self._backoff[0]
        while not self._stop.is_set():
            if self._producer is None:
                try:
                    self._producer = self._factory(**self._producer_config)
                    if backoff > self._backoff[0]:  # only worth a line after a failure
                        log.info("publisher_connected", bootstrap=self.bootstrap)
                    self.connected = True
                    backoff = self._backoff[0]
                except Exception as exc:  # noqa: BLE001 - broker down: retry in the background
                    self.connected = False
                    self._maybe_log("publisher_broker_unavailable", error=f"{type(exc).__name__}: {exc}"[:300])
                    self._stop.wait(backoff)
                    backoff = min(self._backoff[1], backoff * 2)
                    continue
            if not self._q or self._inflight >= self.max_inflight:
                # idle, or the producer is not getting acks (broker gone): hold
                # records here, where the bound and drop-oldest apply
                self._wake.wait(self.linger_s)
                self._wake.clear()
                self._maybe_log(None)
                continue
            try:
                self._send_batch()
            except Exception as exc:  # noqa: BLE001 - the sender thread must survive anything
                log.exception("publisher_sender_error", error=str(exc))
                self._stop.wait(backoff)
            self._maybe_log(None)

    def _send_batch(self) -> None:
        q, batch = self._q, []
        with self._lock:
            for _ in range(min(self.batch_size, len(q), self.max_inflight - self._inflight)):
                batch.append(q.popleft())
            self._inflight += len(batch)
        for kind, rec in batch:
            time.sleep(0)  # yield the GIL between records: app threads never wait behind a whole batch
            try:
                if not self._validate:
                    rec = check_record(kind, rec, self.max_record_bytes, self.max_checkpoints)
            except (ValidationError, ValueError, TypeError) as exc:
                self._done(kind, ok=False, invalid=True, error=str(exc).splitlines()[0])
                continue
            try:
                fut = self._producer.send(self.topics[kind], value=rec.to_bytes(), key=rec.request_id.encode())
                fut.add_callback(self._on_ok, kind)
                fut.add_errback(self._on_err, kind)
            except Exception as exc:  # noqa: BLE001 - e.g. KafkaTimeoutError when metadata is unavailable
                self._done(kind, ok=False, error=f"{type(exc).__name__}: {exc}"[:300])

    # kafka-python calls ``fn(*args, value)``: the bound args come first
    def _on_ok(self, kind: int, _meta: Any) -> None:
        self._done(kind, ok=True)

    def _on_err(self, kind: int, exc: BaseException) -> None:
        self._done(kind, ok=False, error=f"{type(exc).__name__}: {exc}"[:300])

    def _done(self, kind: int, *, ok: bool, invalid: bool = False, error: str = "") -> None:
        with self._lock:
            self._inflight -= 1
            if ok:
                self.sent += 1
            elif invalid:
                self.invalid += 1
            else:
                self.failed += 1
        if ok:
            self._m_sent.labels(_KINDS[kind]).inc()
        elif invalid:
            self._m_invalid.inc()
            self._maybe_log("publisher_invalid_record", kind=_KINDS[kind], error=error)
        else:
            self._m_failed.inc()
            self._maybe_log("publisher_send_failed", kind=_KINDS[kind], error=error)

    def _maybe_log(self, event: str | None, **kw: Any) -> None:
        """At most one warning per ``log_interval_s``: the event, plus drops since the last line."""
        now = self._clock()
        new_drops = self.dropped - self._dropped_logged
        if event is None and not new_drops:
            return
        if now - self._last_log < self._log_interval:
            return
        self._last_log = now
        self._dropped_logged = self.dropped
        log.warning(event or "publisher_dropping", dropped_since_last=new_drops, dropped_total=self.dropped,
                    queued=len(self._q), failed=self.failed, invalid=self.invalid, **kw)
