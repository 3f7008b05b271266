"""A real Apache Kafka broker for tests and the demo, assembled from Maven Central.

:class:`LocalBroker` fetches ``org.apache.kafka:kafka_2.13`` (pinned
:data:`KAFKA_VERSION`) plus a log4j2 SLF4J binding through a tiny pom and
``mvn dependency:copy-dependencies`` into a cache folder, formats KRaft storage
in its work dir, starts one combined broker+controller on free loopback ports,
waits until a metadata request succeeds and stops cleanly. The ports and the
data live in the work dir, so a restart with the same work dir keeps both
(clients reconnect to the same address).

>>> b = LocalBroker(Path("/tmp/stopwise-doctest-broker"), cache_dir=Path("/tmp/cache"))
>>> b.libs_dir.as_posix(), b.is_running()
('/tmp/cache/libs', False)

Command line: ``stopwise broker fetch|start|stop|status`` (see :func:`register`).
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import fcntl
import json
import os
import shutil
import signal
import socket
import string
import subprocess
import sys
import threading
import time
import uuid
from importlib import resources
from pathlib import Path
from typing import Mapping

import structlog

from .errors import BrokerError

KAFKA_VERSION = "4.1.1"
LOG4J_VERSION = "2.25.3"
JVM_FLAGS = ("-Xms64m", "-Xmx512m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
             "-XX:-UsePerfData", "-Djava.awt.headless=true")
_MARKER = ".complete"

log = structlog.get_logger(__name__)
_LIVE: "set[LocalBroker]" = set()


def default_cache_dir(version: str = KAFKA_VERSION, env: Mapping[str, str] | None = None) -> Path:
    """``${XDG_CACHE_HOME:-~/.cache}/stopwise/kafka-<version>``.

    >>> default_cache_dir("4.1.1", {"XDG_CACHE_HOME": "/c"}).as_posix()
    '/c/stopwise/kafka-4.1.1'
    """
    env = os.environ if env is None else env
    base = Path(env.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "stopwise" / f"kafka-{version}"


def default_state_dir(env: Mapping[str, str] | None = None) -> Path:
    """``${XDG_STATE_HOME:-~/.local/state}/stopwise/broker``: the CLI's default work dir.

    >>> default_state_dir({"XDG_STATE_HOME": "/s"}).as_posix()
    '/s/stopwise/broker'
    """
    env = os.environ if env is None else env
    base = Path(env.get("XDG_STATE_HOME") or Path.home() / ".local" / "state")
    return base / "stopwise" / "broker"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_in_use(port: int) -> bool:
    """Whether something accepts connections on 127.0.0.1:``port``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _need(tool: str, hint: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise BrokerError(f"`{tool}` was not found on PATH; {hint}")
    return path


def _tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"(no log at {path})"
    return "\n".join(text.splitlines()[-lines:])


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie child is not alive
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        return state != "Z"
    except (OSError, IndexError):
        return True


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _pdeathsig() -> None:  # pragma: no cover - runs in the child
    """Ask the kernel to SIGTERM the JVM if its parent dies (no stray JVMs)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:
        pass


class LocalBroker:
    """One combined KRaft broker+controller on 127.0.0.1 living in ``workdir``.

    Files in ``workdir``: ``ports.json`` (ports and cluster id, reused on
    restart), ``server.properties``, ``log4j2.xml``, ``data/``, ``broker.log``,
    ``broker.out`` (JVM stdout/stderr), ``broker.pid`` and ``bootstrap`` while
    running. ``overrides`` are extra server properties.
    """

    def __init__(self, workdir: Path, cache_dir: Path | None = None, version: str = KAFKA_VERSION,
                 overrides: Mapping[str, object] | None = None, jvm_flags: tuple[str, ...] = JVM_FLAGS) -> None:
        self.workdir = Path(workdir).expanduser().resolve()
        self.version = version
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir(version)
        self.overrides = dict(overrides or {})
        self.jvm_flags = tuple(jvm_flags)
        self._proc: subprocess.Popen | None = None

    # ----------------------------------------------------------- files
    @property
    def libs_dir(self) -> Path:
        return self.cache_dir / "libs"

    @property
    def pid_file(self) -> Path:
        return self.workdir / "broker.pid"

    @property
    def log_file(self) -> Path:
        return self.workdir / "broker.log"

    @property
    def bootstrap(self) -> str:
        """``127.0.0.1:PORT`` (ports are chosen on first start and kept)."""
        return f"127.0.0.1:{self._ports()['broker_port']}"

    def _ports(self) -> dict:
        path = self.workdir / "ports.json"
        if path.exists():
            return json.loads(path.read_text())
        self.workdir.mkdir(parents=True, exist_ok=True)
        broker = free_port()
        controller = free_port()
        while controller == broker:
            controller = free_port()
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        info = {"broker_port": broker, "controller_port": controller, "cluster_id": cluster_id}
        path.write_text(json.dumps(info))
        return info

    # ----------------------------------------------------------- fetch
    def fetch(self) -> Path:
        """Download Kafka's jars into the cache (once) and return the jars dir."""
        libs = self.libs_dir
        if (self.cache_dir / _MARKER).exists() and any(libs.glob("kafka_2.13-*.jar")):
            return libs
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        with open(self.cache_dir / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # a concurrent fetch waits, then finds the marker
            if (self.cache_dir / _MARKER).exists() and any(libs.glob("kafka_2.13-*.jar")):
                return libs
            mvn = _need("mvn", "install Maven (e.g. `apt-get install maven`) to assemble the Kafka broker")
            pom = self.cache_dir / "pom.xml"
            pom.write_text(resources.files("stopwise.daemon").joinpath("broker", "pom.xml").read_text())
            tmp = self.cache_dir / "libs.partial"
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.rmtree(libs, ignore_errors=True)
            cmd = [mvn, "-q", "-B", "-f", str(pom), "dependency:copy-dependencies",
                   f"-DoutputDirectory={tmp}", "-DincludeScope=runtime",
                   f"-Dkafka.version={self.version}", f"-Dlog4j.version={LOG4J_VERSION}"]
            log.info("broker.fetch", version=self.version, into=str(libs))
            started = time.monotonic()
            res = subprocess.run(cmd, capture_output=True, text=True, cwd=self.cache_dir)
            if res.returncode != 0 or not any(tmp.glob(f"kafka_2.13-{self.version}.jar")):
                out = (res.stdout + res.stderr).strip().splitlines()[-30:]
                raise BrokerError(f"fetching Kafka {self.version} with Maven failed (exit {res.returncode}):\n"
                                  + "\n".join(out))
            tmp.rename(libs)
            jars = sorted(p.name for p in libs.glob("*.jar"))
            (self.cache_dir / _MARKER).write_text("\n".join(jars) + "\n")
            log.info("broker.fetched", jars=len(jars), seconds=round(time.monotonic() - started, 1))
        return libs

    # ----------------------------------------------------------- start
    def _java(self) -> str:
        return _need("java", "install a Java 17+ runtime (e.g. `apt-get install openjdk-17-jre-headless`)")

    def _render(self) -> Path:
        ports = self._ports()
        data_dir = self.workdir / "data"
        tpl = resources.files("stopwise.daemon").joinpath("broker", "server.properties").read_text()
        text = string.Template(tpl).substitute(data_dir=str(data_dir), **ports)
        if self.overrides:
            text += "\n# overrides\n" + "".join(f"{k}={v}\n" for k, v in self.overrides.items())
        props = self.workdir / "server.properties"
        props.write_text(text)
        (self.workdir / "log4j2.xml").write_text(
            resources.files("stopwise.daemon").joinpath("broker", "log4j2.xml").read_text())
        return props

    def _jvm(self, java: str, main: str, *args: str) -> list[str]:
        return [java, *self.jvm_flags, f"-Dlog4j2.configurationFile={self.workdir / 'log4j2.xml'}",
                f"-Dstopwise.broker.log={self.log_file}", f"-Dkafka.logs.dir={self.workdir}",
                "-cp", f"{self.libs_dir}/*", main, *args]

    def _format(self, java: str, props: Path) -> None:
        if (self.workdir / "data" / "meta.properties").exists():
            return
        cmd = self._jvm(java, "kafka.tools.StorageTool", "format", "-t", self._ports()["cluster_id"],
                        "-c", str(props), "--ignore-formatted")
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if res.returncode != 0:
            raise BrokerError(f"formatting KRaft storage in {self.workdir / 'data'} failed:\n"
                              + (res.stdout + res.stderr)[-3000:])

    def start(self, timeout: float = 120, detach: bool = False) -> str:
        """Start the broker (fetching jars first if needed) and wait until it
        answers a metadata request; return the bootstrap address.

        ``detach=True`` starts the JVM in its own session so it outlives this
        process (the ``broker start`` command); otherwise it is stopped at exit.
        """
        if self.is_running():
            self._wait_ready(timeout)
            return self.bootstrap
        java = self._java()
        self.fetch()
        props = self._render()
        ports = self._ports()
        for name in ("broker_port", "controller_port"):
            if port_in_use(ports[name]):
                raise BrokerError(f"port {ports[name]} ({name}) of {self.workdir} is taken by another process; "
                                  f"stop it or use another work dir")
        self._format(java, props)
        out = open(self.workdir / "broker.out", "ab")
        in_main = threading.current_thread() is threading.main_thread()
        self._proc = subprocess.Popen(
            self._jvm(java, "kafka.Kafka", str(props)), cwd=self.workdir, stdin=subprocess.DEVNULL,
            stdout=out, stderr=subprocess.STDOUT, start_new_session=detach,
            preexec_fn=None if detach or not in_main else _pdeathsig)
        out.close()
        self.pid_file.write_text(str(self._proc.pid))
        if not detach:
            _LIVE.add(self)
        log.info("broker.starting", pid=self._proc.pid, bootstrap=self.bootstrap, workdir=str(self.workdir))
        try:
            self._wait_ready(timeout)
        except BrokerError:
            self.stop(timeout=10)
            raise
        if detach:
            self._proc = None  # no longer ours to reap; stop() uses the pid file
        (self.workdir / "bootstrap").write_text(self.bootstrap + "\n")
        log.info("broker.ready", bootstrap=self.bootstrap)
        return self.bootstrap

    def _wait_ready(self, timeout: float) -> None:
        from kafka import KafkaAdminClient

        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            if not self.is_running():
                raise BrokerError(f"the broker exited during start-up; tail of {self.log_file}:\n"
                                  f"{_tail(self.log_file)}\n--- {self.workdir / 'broker.out'}:\n"
                                  f"{_tail(self.workdir / 'broker.out', 15)}")
            if port_in_use(self._ports()["broker_port"]):
                left_ms = int(max(1.0, min(10.0, deadline - time.monotonic())) * 1000)
                try:
                    admin = KafkaAdminClient(bootstrap_servers=self.bootstrap, client_id="stopwise-broker-probe",
                                             request_timeout_ms=left_ms, bootstrap_timeout_ms=left_ms)
                    try:
                        admin.describe_cluster()
                        admin.list_topics()
                        return
                    finally:
                        admin.close()
                except Exception as exc:  # not ready yet: any client error means "retry"
                    last = exc
            time.sleep(0.3)
        raise BrokerError(f"the broker at {self.bootstrap} did not answer a metadata request within "
                          f"{timeout:g}s (last error: {last!r}); tail of {self.log_file}:\n{_tail(self.log_file)}")

    # ----------------------------------------------------------- stop/status
    def _pid(self) -> int | None:
        if self._proc is not None:
            return self._proc.pid
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        # guard against a recycled pid: it must be our broker's JVM
        return pid if str(self.workdir / "server.properties") in _cmdline(pid) else None

    def is_running(self) -> bool:
        """Whether the broker JVM of this work dir is alive."""
        if self._proc is not None:
            return self._proc.poll() is None
        pid = self._pid()
        return pid is not None and _pid_alive(pid)

    def stop(self, timeout: float = 30) -> None:
        """SIGTERM (controlled shutdown), wait up to ``timeout``, then SIGKILL."""
        pid = self._pid()
        if pid is not None and _pid_alive(pid):
            log.info("broker.stopping", pid=pid)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            if not self._wait_exit(pid, timeout):
                log.warning("broker.kill", pid=pid, after_s=timeout)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                self._wait_exit(pid, 10)
        if self._proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(timeout=5)
            self._proc = None
        _LIVE.discard(self)
        for f in (self.pid_file, self.workdir / "bootstrap"):
            with contextlib.suppress(OSError):
                f.unlink()

    def _wait_exit(self, pid: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.pid == pid:
                if self._proc.poll() is not None:
                    return True
            elif not _pid_alive(pid):
                return True
            time.sleep(0.1)
        return False

    def __enter__(self) -> "LocalBroker":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"LocalBroker({str(self.workdir)!r}, running={self.is_running()})"


@atexit.register
def _stop_all() -> None:  # pragma: no cover - exit hook
    for b in list(_LIVE):
        with contextlib.suppress(Exception):
            b.stop(timeout=15)


# ------------------------------------------------------------------ CLI
def register(app) -> None:
    """Add ``stopwise broker fetch|start|stop|status``."""
    import typer

    from .logs import cli_logging_to_stderr

    broker_app = typer.Typer(help="A local Apache Kafka broker (KRaft, loopback) for tests and the demo.",
                             no_args_is_help=True)
    dir_opt = typer.Option(None, "--dir", help="work dir (default ${XDG_STATE_HOME:-~/.local/state}/stopwise/broker)")

    def _broker(d: Path | None) -> LocalBroker:
        return LocalBroker(d or default_state_dir())

    @broker_app.command("fetch")
    def fetch_cmd() -> None:
        """Download Kafka's jars from Maven Central into the cache; print the jars dir."""
        cli_logging_to_stderr()
        try:
            typer.echo(str(LocalBroker(Path(".")).fetch()))
        except BrokerError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(1) from None

    @broker_app.command("start")
    def start_cmd(dir: Path = dir_opt,
                  foreground: bool = typer.Option(False, "--foreground", help="stay attached; Ctrl-C stops the broker"),
                  timeout: float = typer.Option(120.0, help="seconds to wait for the broker to answer")) -> None:
        """Start the broker (detached unless --foreground); print its bootstrap address."""
        cli_logging_to_stderr()
        broker = _broker(dir)
        try:
            bootstrap = broker.start(timeout=timeout, detach=not foreground)
        except BrokerError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(1) from None
        typer.echo(bootstrap)
        if foreground:
            stop = threading.Event()
            for sig in (signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, lambda *_: stop.set())
            while not stop.is_set() and broker.is_running():
                stop.wait(0.5)
            broker.stop()

    @broker_app.command("stop")
    def stop_cmd(dir: Path = dir_opt,
                 timeout: float = typer.Option(30.0, help="seconds before SIGKILL")) -> None:
        """Stop the broker of a work dir (SIGTERM, then SIGKILL after --timeout)."""
        cli_logging_to_stderr()
        broker = _broker(dir)
        was = broker.is_running()
        broker.stop(timeout=timeout)
        typer.echo("stopped" if was else "not running")

    @broker_app.command("status")
    def status_cmd(dir: Path = dir_opt) -> None:
        """Print `running <bootstrap>` (exit 0) or `stopped` (exit 1)."""
        broker = _broker(dir)
        if broker.is_running():
            typer.echo(f"running {broker.bootstrap}")
        else:
            typer.echo("stopped")
            raise typer.Exit(1)

    app.add_typer(broker_app, name="broker")


def main(argv: list[str] | None = None) -> None:
    """``python -m stopwise.daemon.kafka_broker start|stop|status|fetch ...``."""
    import typer

    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    register(app)
    app(args=["broker", *(sys.argv[1:] if argv is None else argv)], prog_name="kafka")


__all__ = ["KAFKA_VERSION", "LocalBroker", "BrokerError", "register",
           "default_cache_dir", "default_state_dir", "free_port"]

if __name__ == "__main__":  # pragma: no cover
    main()
