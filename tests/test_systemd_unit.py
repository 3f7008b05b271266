"""systemd/stopwise.service: required directives, env overrides that the
Config accepts, and `systemd-analyze verify` / `security --offline` when
systemd-analyze is installed."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from stopwise.daemon.config import parse_config

UNIT = Path(__file__).resolve().parents[1] / "systemd" / "stopwise.service"


def parse_unit(text: str) -> dict[str, list[tuple[str, str]]]:
    """systemd unit syntax: [Section], Key=Value, repeated keys, # ; comments,
    backslash continuation lines."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] | None = None
    pending = ""
    for raw in text.splitlines():
        line = pending + raw.strip()
        pending = ""
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], [])
            continue
        assert current is not None, f"directive outside a section: {line!r}"
        key, sep, value = line.partition("=")
        assert sep, f"not Key=Value: {line!r}"
        current.append((key.strip(), value.strip()))
    return sections


@pytest.fixture(scope="module")
def unit() -> dict[str, list[tuple[str, str]]]:
    return parse_unit(UNIT.read_text())


def values(unit: dict, section: str, key: str) -> list[str]:
    return [v for k, v in unit.get(section, []) if k == key]


def one(unit: dict, section: str, key: str) -> str:
    found = values(unit, section, key)
    assert len(found) == 1, f"[{section}] {key}= expected once, found {found}"
    return found[0]


def env(unit: dict) -> dict[str, str]:
    out = {}
    for v in values(unit, "Service", "Environment"):
        name, _, val = v.partition("=")
        out[name] = val
    return out


def test_lifecycle(unit) -> None:
    assert set(unit) == {"Unit", "Service", "Install"}
    assert one(unit, "Service", "Type") == "notify-reload"
    assert one(unit, "Service", "ExecStart") == "/usr/bin/stopwise run --config /etc/stopwise/config.yaml"
    assert one(unit, "Service", "WatchdogSec") == "30"
    assert one(unit, "Service", "Restart") == "on-failure"
    assert int(one(unit, "Service", "RestartSec")) > 0
    assert int(one(unit, "Service", "TimeoutStopSec")) >= 30
    assert one(unit, "Service", "NotifyAccess") == "main"
    assert one(unit, "Install", "WantedBy") == "multi-user.target"
    assert "network-online.target" in one(unit, "Unit", "After")
    # the fallback for systemd < 253 is documented next to Type=
    text = UNIT.read_text()
    assert "#Type=notify\n#ExecReload=/bin/kill -HUP $MAINPID" in text


def test_identity_state_and_credentials(unit) -> None:
    assert one(unit, "Service", "DynamicUser") == "yes"
    assert one(unit, "Service", "StateDirectory") == "stopwise"
    assert one(unit, "Service", "LoadCredential") == "hmac.key:/etc/stopwise/hmac.key"
    e = env(unit)
    assert e["STOPWISE_SECURITY__HMAC_KEY_FILE"] == "%d/hmac.key"
    assert e["STOPWISE_LOGGING__FORMAT"] == "json"


def test_environment_overrides_are_valid_config_keys(unit, tmp_path: Path) -> None:
    # what systemd hands the daemon after expanding %d (here: a credentials dir with the key file)
    (tmp_path / "hmac.key").write_text("k" * 64 + "\n")
    expanded = {k: v.replace("%d", str(tmp_path))
                for k, v in env(unit).items() if k.startswith("STOPWISE_")}
    cfg = parse_config({}, file="<unit>", env=expanded)
    assert cfg.logging.format == "json"
    assert str(cfg.security.hmac_key_file) == str(tmp_path / "hmac.key")
    assert cfg.security.hmac_key() == b"k" * 64


HARDENING = {
    "NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes", "PrivateTmp": "yes",
    "PrivateDevices": "yes", "ProtectKernelTunables": "yes", "ProtectKernelModules": "yes",
    "ProtectKernelLogs": "yes", "ProtectControlGroups": "yes", "ProtectClock": "yes",
    "ProtectHostname": "yes", "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6",
    "RestrictNamespaces": "yes", "RestrictRealtime": "yes", "RestrictSUIDSGID": "yes",
    "LockPersonality": "yes", "MemoryDenyWriteExecute": "yes", "SystemCallArchitectures": "native",
    "CapabilityBoundingSet": "", "AmbientCapabilities": "", "UMask": "0077",
}


def test_hardening(unit) -> None:
    for key, want in HARDENING.items():
        assert one(unit, "Service", key) == want, key
    assert values(unit, "Service", "SystemCallFilter") == ["@system-service", "~@privileged @resources"]
    # the brokers must stay reachable: no IP deny list
    assert values(unit, "Service", "IPAddressDeny") == []
    assert values(unit, "Service", "PrivateNetwork") == []


def test_exec_start_command_exists_in_the_cli() -> None:
    from stopwise.daemon.cli import app

    result = CliRunner().invoke(app, ["run", "--help"])
    assert result.exit_code == 0, result.output
    assert "--config" in result.output


def _systemd_version() -> int:
    out = subprocess.run(["systemd-analyze", "--version"], capture_output=True, text=True, timeout=30).stdout
    m = re.search(r"systemd (\d+)", out)
    return int(m.group(1)) if m else 0


def _verify(path: Path) -> list[str]:
    proc = subprocess.run(["systemd-analyze", "verify", str(path)], capture_output=True, text=True, timeout=60)
    lines = [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
    assert proc.returncode == 0 or lines, "verify failed without saying why"
    return lines if proc.returncode == 0 else lines + [f"exit status {proc.returncode}"]


def _local_copy(tmp_path: Path, text: str) -> Path:
    # verify checks that ExecStart's binary exists: point it at this venv's stopwise
    exe = Path(sys.executable).parent / "stopwise"
    if not exe.exists():
        pytest.skip(f"no stopwise executable next to {sys.executable}")
    path = tmp_path / "stopwise.service"
    path.write_text(text.replace("ExecStart=/usr/bin/stopwise ", f"ExecStart={exe} "))
    return path


needs_analyze = pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                                   reason="systemd-analyze is not installed")


@needs_analyze
def test_systemd_analyze_verify(tmp_path: Path) -> None:
    text = UNIT.read_text()
    problems = _verify(_local_copy(tmp_path, text))
    if _systemd_version() >= 253:
        assert problems == []
    else:  # only Type=notify-reload is unknown to old systemd
        assert all("notify-reload" in p for p in problems), problems
        fallback = text.replace("\nType=notify-reload\n", "\nType=notify\nExecReload=/bin/kill -HUP $MAINPID\n")
        (tmp_path / "fallback").mkdir()
        assert _verify(_local_copy(tmp_path / "fallback", fallback)) == []


@needs_analyze
def test_verify_catches_a_typo(tmp_path: Path) -> None:
    text = UNIT.read_text().replace("ProtectClock=yes", "ProtectClok=yes")
    problems = _verify(_local_copy(tmp_path, text))
    assert any("ProtectClok" in p for p in problems), problems


@needs_analyze
def test_security_exposure_is_low(tmp_path: Path) -> None:
    text = UNIT.read_text().replace("\nType=notify-reload\n", "\nType=notify\n")
    path = _local_copy(tmp_path, text)
    proc = subprocess.run(["systemd-analyze", "security", "--offline=true", "--no-pager", str(path)],
                          capture_output=True, text=True, timeout=60)
    m = re.search(r"Overall exposure level for stopwise.service: ([0-9.]+)", proc.stdout + proc.stderr)
    if m is None:
        pytest.skip(f"systemd-analyze security --offline unsupported here: {proc.stderr.strip()[:200]}")
    assert float(m.group(1)) <= 2.0, proc.stdout[-2000:]
