"""A second daemon instance with nothing to own (more instances than
partitions) still becomes ready and tells systemd so."""

from __future__ import annotations

from daemon_helpers import wait_until


class RecordingNotifier:
    """Stands in for sdnotify.Notifier: records what the daemon says."""

    enabled = True

    def __init__(self) -> None:
        self.sent: list[str] = []

    def notify(self, **fields) -> bool:
        self.sent.extend(fields)
        return True

    def ready(self, status: str = "") -> None:
        self.sent.append("READY")

    def watchdog(self) -> None:
        self.sent.append("WATCHDOG")

    def status(self, text: str) -> None:
        self.sent.append("STATUS")

    def stopping(self) -> None:
        self.sent.append("STOPPING")

    def reloading(self) -> None:
        self.sent.append("RELOADING")


def test_standby_member_with_no_partitions_sends_ready(make_config, daemon_thread) -> None:
    cfg = make_config(topics={"input_partitions": 1, "examples_partitions": 1})
    first_notes, second_notes = RecordingNotifier(), RecordingNotifier()
    first = daemon_thread(cfg, notifier=first_notes).daemon
    second = daemon_thread(cfg, notifier=second_notes).daemon
    # 3 partitions, range assignment over 2 members: one of them owns nothing
    wait_until(lambda: "READY" in second_notes.sent and "READY" in first_notes.sent, 90, what="READY from both")
    owned = [len(d.consumer.assignment()) for d in (first, second)]
    wait_until(lambda: sorted(len(d.consumer.assignment()) for d in (first, second)) == [0, 3], 90,
               what=f"one member owning all 3 partitions (saw {owned})")


def test_empty_assignment_counts_as_assigned() -> None:
    """The listener itself (no Kafka): an empty assignment makes the member
    ready; a non-empty one waits for the shards to be restored first."""
    from stopwise.daemon.config import Config
    from stopwise.daemon.shell.runner import Daemon

    class Consumer:
        paused: tuple = ()

        def pause(self, *tps):
            self.paused = tps

    idle = Daemon(Config(), lag_monitor=False)
    idle.consumer = Consumer()
    idle._on_assigned([])
    assert idle.assigned_once.is_set()

    busy = Daemon(Config(), lag_monitor=False)
    busy.consumer = Consumer()
    busy._on_assigned([("stopwise.inference", 0)])
    assert not busy.assigned_once.is_set() and busy.consumer.paused == (("stopwise.inference", 0),)
