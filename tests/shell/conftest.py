"""Fixtures for the daemon tests: ``daemon_thread`` runs a Daemon in a thread
of the test process (``daemon_process``, `stopwise run` as a subprocess, is in
tests/conftest.py). The helpers they use, and the tests import, are in
tests/daemon_helpers.py."""

from __future__ import annotations

from typing import Any

import pytest

from stopwise.daemon.config import Config

from daemon_helpers import DaemonThread


@pytest.fixture
def daemon_thread():
    started: list[DaemonThread] = []

    def factory(cfg: Config, **kwargs: Any) -> DaemonThread:
        d = DaemonThread(cfg, **kwargs)
        started.append(d)
        return d.start()

    yield factory
    for d in started:
        if d.thread.is_alive():
            d.stop_event.set()
            d.thread.join(60)
