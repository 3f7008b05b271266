"""systemd notify protocol (sd_notify) in a few lines of stdlib.

The socket path comes from ``$NOTIFY_SOCKET``, read at the edge (``main``) and
passed in; ``None``/empty disables every call (they return ``False``). A
leading ``@`` names a socket in the abstract namespace (sent as ``\\0``).

>>> n = Notifier(None)
>>> n.enabled, n.notify(READY=1)
(False, False)
>>> format_message({"READY": 1, "STATUS": "learning 3 contexts"})
b'READY=1\\nSTATUS=learning 3 contexts'
"""

from __future__ import annotations

import socket
import time
from typing import Any, Callable

import structlog

log = structlog.get_logger(__name__)


def format_message(fields: dict[str, Any]) -> bytes:
    """``KEY=value`` lines, newline-separated; newlines in values become spaces."""
    lines = []
    for key, value in fields.items():
        text = str(value).replace("\n", " ")
        lines.append(f"{key}={text}")
    return "\n".join(lines).encode("utf-8")


def _address(path: str) -> str | bytes:
    if path.startswith("@"):
        return b"\0" + path[1:].encode("utf-8")
    return path


class Notifier:
    """Sends sd_notify datagrams to systemd (no-op when disabled)."""

    def __init__(self, socket_path: str | None, clock: Callable[[], float] = time.monotonic) -> None:
        self.socket_path = socket_path or None
        self.enabled: bool = self.socket_path is not None
        self._clock = clock
        self.send_timeout_s = 1.0
        self._failing = False

    def notify(self, **fields: Any) -> bool:
        """Send one message; ``True`` if it was sent. Errors are logged, never raised."""
        if not self.enabled or not fields:
            return False
        assert self.socket_path is not None
        msg = format_message(fields)
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                # a full queue (manager not reading) must not freeze the main loop
                sock.settimeout(self.send_timeout_s)
                sock.sendto(msg, _address(self.socket_path))
            self._failing = False
            return True
        except OSError as exc:
            # warn once per run of failures (the watchdog would repeat it every second)
            (log.debug if self._failing else log.warning)(
                "sd_notify_failed", socket=self.socket_path, error=str(exc), fields=sorted(fields))
            self._failing = True
            return False

    def ready(self, status: str = "") -> None:
        """READY=1 (with STATUS when given): startup finished."""
        if status:
            self.notify(READY=1, STATUS=status)
        else:
            self.notify(READY=1)

    def watchdog(self) -> None:
        """WATCHDOG=1: keep-alive, sent from the main loop."""
        self.notify(WATCHDOG=1)

    def status(self, text: str) -> None:
        """STATUS=<text>: one line shown by ``systemctl status``."""
        self.notify(STATUS=text)

    def stopping(self) -> None:
        """STOPPING=1: shutdown has begun."""
        self.notify(STOPPING=1)

    def reloading(self) -> None:
        """RELOADING=1 with MONOTONIC_USEC (required by Type=notify-reload).

        Send :meth:`ready` when the reload is done (applied or rejected).
        """
        self.notify(RELOADING=1, MONOTONIC_USEC=int(self._clock() * 1_000_000))
