"""One exception root for stopwise; errors the loop acts on carry data.

>>> err = DecodeError("bad_json", "Expecting value at line 1")
>>> isinstance(err, StopwiseError), err.reason
(True, 'bad_json')
"""

from __future__ import annotations


class StopwiseError(Exception):
    """Root of every error stopwise raises on purpose."""


class ConfigError(StopwiseError):
    """A configuration was refused: which file, which key, which value, why."""

    def __init__(self, file: str, key: str, value: object, why: str) -> None:
        self.file, self.key, self.value, self.why = file, key, value, why
        shown = "" if value is _MISSING else f"{value!r} "
        super().__init__(f"{file}: {key}: {shown}{why}".replace(": : ", ": "))


class _Missing:
    def __repr__(self) -> str:  # pragma: no cover - cosmetic
        return "<missing>"


_MISSING = _Missing()
ConfigError.MISSING = _MISSING  # type: ignore[attr-defined]


class DecodeError(StopwiseError):
    """Bytes that are not a valid record. ``reason`` is a short stable code
    (used as the DLQ header and metric label); ``detail`` is for humans."""

    REASONS = (
        "too_large", "bad_json", "not_object", "missing_field", "unknown_version",
        "invalid_value", "not_finite", "out_of_range", "negative_tokens",
        "checkpoints_not_increasing", "bad_context", "bad_signature",
    )

    def __init__(self, reason: str, detail: str = "") -> None:
        self.reason, self.detail = reason, detail
        super().__init__(f"{reason}: {detail}" if detail else reason)


class SignatureError(StopwiseError):
    """A signed record or snapshot did not verify."""


class BrokerError(StopwiseError):
    """The local Kafka broker could not be assembled, started or reached."""


class TopicsError(StopwiseError):
    """Topics could not be created as configured (e.g. the input topics
    exist with different partition counts, so they are not co-partitioned)."""


class RetryableError(StopwiseError):
    """A transient failure; the loop waits ``retry_after`` seconds and retries."""

    def __init__(self, message: str, retry_after: float = 1.0) -> None:
        self.retry_after = retry_after
        super().__init__(message)


class KafkaUnavailable(RetryableError):
    """A retriable Kafka failure the run loop backs off from (broker down,
    coordinator moving, a rebalance, a commit refused after one): ``where``
    it happened (poll, process, assignment, tick, checkpoint, startup),
    ``cause`` (the client's exception), ``attempt`` (consecutive failures,
    from 1) and ``retry_after`` (the capped, jittered backoff in seconds).

    >>> err = KafkaUnavailable("poll", ConnectionError("refused"), attempt=3, retry_after=0.8)
    >>> isinstance(err, RetryableError), err.where, err.retry_after
    (True, 'poll', 0.8)
    >>> str(err)
    "poll: ConnectionError('refused') (attempt 3, retrying in 0.80s)"
    """

    def __init__(self, where: str, cause: BaseException, attempt: int, retry_after: float) -> None:
        self.where, self.cause, self.attempt = where, cause, attempt
        super().__init__(f"{where}: {cause!r} (attempt {attempt}, retrying in {retry_after:.2f}s)", retry_after)


class FatalKafkaError(StopwiseError):
    """A failure retrying cannot fix (authorization, bad client config, an
    unsupported broker, a topic missing after creation): the run loop logs
    it in one line and exits 1. ``where`` and ``cause`` as for
    :class:`KafkaUnavailable`."""

    def __init__(self, where: str, cause: BaseException) -> None:
        self.where, self.cause = where, cause
        super().__init__(f"{where}: {type(cause).__name__}: {cause}")


class CatchUpTimeout(RetryableError, TimeoutError):
    """A compacted topic could not be read to its end in time (the broker is
    slow or away): ``topic``, ``timeout_s``; retried by the loop."""

    def __init__(self, topic: str, timeout_s: float) -> None:
        self.topic, self.timeout_s = topic, timeout_s
        super().__init__(f"could not read {topic!r} to its end within {timeout_s}s", retry_after=1.0)


class TopicMissing(StopwiseError):
    """A topic the daemon needs does not exist (it is created before the
    daemon starts: ``stopwise topics create``); fatal."""

    def __init__(self, topic: str) -> None:
        self.topic = topic
        super().__init__(f"topic {topic!r} does not exist (no partitions found); "
                         f"create the topics first (`stopwise topics create`)")
