"""HMAC signatures for threshold records and state snapshots.

The signature is HMAC-SHA256 over the record's canonical JSON (sorted keys,
compact separators) without its ``sig`` field, hex-encoded. Without a key
(``security.allow_unsigned: true``) records carry ``"sig": "unsigned"`` and
blobs the tag ``unsigned``, so every reader can see they are not signed.

>>> rec = {"context": "*", "threshold": 0.9, "version": 1}
>>> signed = sign_record(rec, b"k")
>>> verify_record(signed, b"k"), verify_record({**signed, "threshold": 0.5}, b"k")
(True, False)
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any, Mapping

UNSIGNED = "unsigned"
"""The ``sig`` of a record (and the tag of a blob) written without a key."""


def canonical(obj: Mapping[str, Any]) -> bytes:
    body = {k: v for k, v in obj.items() if k != "sig"}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


def signature(data: bytes, key: bytes) -> str:
    return hmac.new(key, data, hashlib.sha256).hexdigest()


def sign_record(obj: Mapping[str, Any], key: bytes | None) -> dict[str, Any]:
    """Return a copy of ``obj`` with ``sig`` set (``"unsigned"`` without a key)."""
    out = dict(obj)
    out["sig"] = signature(canonical(out), key) if key else UNSIGNED
    return out


def verify_record(obj: Mapping[str, Any], key: bytes | None) -> bool:
    """True when no key is configured, or the signature verifies."""
    if not key:
        return True
    sig = obj.get("sig")
    return isinstance(sig, str) and hmac.compare_digest(sig, signature(canonical(obj), key))


def sign_blob(blob: bytes, key: bytes | None) -> bytes:
    """Prefix ``blob`` with its hex HMAC and a newline (``unsigned`` without a key)."""
    tag = signature(blob, key).encode() if key else UNSIGNED.encode()
    return tag + b"\n" + blob


def verify_blob(data: bytes, key: bytes | None) -> bytes:
    """Return the blob if it verifies; raise :class:`SignatureError` if not."""
    from .errors import SignatureError

    tag, sep, blob = data.partition(b"\n")
    if not sep:
        raise SignatureError("snapshot has no signature header")
    if key:
        if tag in (b"-", UNSIGNED.encode()) or not hmac.compare_digest(tag, signature(blob, key).encode()):
            raise SignatureError("snapshot signature does not verify")
    return blob
