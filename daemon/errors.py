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
