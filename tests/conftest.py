"""Shared fixtures: a real Kafka broker, per-test configs with fresh topics,
the hypothesis profile.

- ``kafka_bootstrap`` (session): ``STOPWISE_BOOTSTRAP`` if set, else a
  :class:`LocalBroker` started once in a temp dir and stopped at the end.
- ``make_config`` (function): ``make_config(**sections) -> Config`` with unique
  topic names and group id, test-friendly intervals, topics already created.
- ``broker_factory`` (function): ``broker_factory() -> LocalBroker`` (not
  started) in a fresh temp dir; stopped at teardown. For stop/restart tests.

Every test using one of these is marked ``kafka`` automatically.

- ``daemon_process`` (function): ``daemon_process(config_file, env=None) ->
  DaemonProcess``, `stopwise run` started as a subprocess (helpers in
  tests/daemon_helpers.py); killed at teardown if still running.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import pytest
from hypothesis import HealthCheck, settings

from stopwise.daemon.config import Config, parse_config

from daemon_helpers import DaemonProcess

settings.register_profile(
    "ci", deadline=None, max_examples=60, suppress_health_check=[HealthCheck.too_slow], print_blob=True)
settings.register_profile("dev", deadline=None, max_examples=20)
settings.register_profile("thorough", deadline=None, max_examples=1000)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

KAFKA_FIXTURES = {"kafka_bootstrap", "make_config", "broker_factory"}


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test that needs a broker with ``kafka`` (so ``-m 'not kafka'`` skips it)."""
    for item in items:
        if KAFKA_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.kafka)


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Bootstrap address of a real broker for the whole session."""
    existing = os.environ.get("STOPWISE_BOOTSTRAP", "").strip()
    if existing:
        yield existing
        return
    from stopwise.daemon.kafka_broker import LocalBroker

    broker = LocalBroker(tmp_path_factory.mktemp("kafka"))
    try:
        yield broker.start(timeout=180)
    finally:
        broker.stop()


TEST_SECTIONS: dict[str, dict[str, Any]] = {
    "kafka": {"session_timeout_ms": 6000, "poll_timeout_ms": 100, "request_timeout_ms": 15000},
    "topics": {"input_partitions": 2, "examples_partitions": 2, "compaction_dirty_ratio": 0.01,
               "compaction_segment_ms": 500, "compaction_lag_ms": 0, "tombstone_retention_ms": 1000},
    "publish": {"interval_s": 0.2},
    "snapshot": {"interval_s": 1.0},
    "metrics": {"port": 0},
    # tests that sign set security.hmac_key_file; the rest run unsigned on purpose
    "security": {"allow_unsigned": True},
}


def build_test_config(bootstrap: str, **sections: dict[str, Any]) -> Config:
    """A test Config: unique topic prefix and group id, test-friendly
    intervals, ``sections`` merged per section on top. No I/O."""
    suffix = uuid.uuid4().hex[:8]
    base = {k: dict(v) for k, v in TEST_SECTIONS.items()}
    base["kafka"].update(bootstrap=bootstrap, group_id=f"g{suffix}", client_id=f"c{suffix}")
    base["topics"].update({name: f"t{suffix}.{name}" for name in
                           ("inference", "feedback", "examples", "thresholds", "decisions", "state", "dlq")})
    for section, values in sections.items():
        if not isinstance(values, dict):
            raise TypeError(f"make_config({section}=...) takes a dict of keys, got {values!r}")
        base.setdefault(section, {}).update(values)
    return parse_config(base, file="<make_config>")


@pytest.fixture
def make_config(kafka_bootstrap: str) -> Iterator[Callable[..., Config]]:
    """Factory ``make_config(create=True, **sections) -> Config``; topics are
    created before it returns (unless ``create=False``) and deleted after the test."""
    from stopwise.daemon.shell.topics import admin_client, create_topics

    made: list[Config] = []

    def factory(create: bool = True, **sections: dict[str, Any]) -> Config:
        cfg = build_test_config(kafka_bootstrap, **sections)
        made.append(cfg)
        if create:
            create_topics(cfg)
        return cfg

    yield factory
    if not made:
        return
    try:
        admin = admin_client(made[0])
    except Exception:  # broker gone (a test stopped it): nothing to clean
        return
    try:
        present = set(admin.list_topics())
        ours = [t for cfg in made for t in cfg.topics.model_dump().values()
                if isinstance(t, str) and t in present]
        if ours:
            admin.delete_topics(ours, raise_errors=False)
    except Exception:
        pass
    finally:
        admin.close()


@pytest.fixture
def broker_factory(tmp_path: Path) -> Iterator[Callable[[], Any]]:
    """``broker_factory() -> LocalBroker`` in a fresh dir (call ``.start()``);
    every broker made is stopped at teardown."""
    from stopwise.daemon.kafka_broker import LocalBroker

    brokers: list[LocalBroker] = []

    def factory(**kwargs: Any) -> LocalBroker:
        b = LocalBroker(tmp_path / f"broker{len(brokers)}", **kwargs)
        brokers.append(b)
        return b

    yield factory
    for b in brokers:
        b.stop()


@pytest.fixture
def daemon_process(tmp_path: Path) -> Iterator[Callable[..., DaemonProcess]]:
    """``daemon_process(config_file, env=None) -> DaemonProcess`` (started,
    logging to a file in ``tmp_path``); every one still running is killed at teardown."""
    procs: list[DaemonProcess] = []

    def factory(config_file: Path, env: Mapping[str, str] | None = None) -> DaemonProcess:
        p = DaemonProcess(config_file, tmp_path / f"daemon{len(procs)}.log", env)
        procs.append(p)
        return p.start()

    yield factory
    for p in procs:
        p.kill()
