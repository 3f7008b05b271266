"""The `stopwise` command line: help everywhere, check-config, schemas."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import importlib.util

import pytest
import typer
from typer.testing import CliRunner

from stopwise.daemon.cli import app

# the bad-config cases live in test_config.py; load them by path (works in any import mode)
_spec = importlib.util.spec_from_file_location("_stopwise_config_cases", Path(__file__).with_name("test_config.py"))
_cases = importlib.util.module_from_spec(_spec)  # type: ignore[arg-type]
_spec.loader.exec_module(_cases)  # type: ignore[union-attr]
BAD, CONFIG_YAML, write_variant = _cases.BAD, _cases.CONFIG_YAML, _cases.write_variant

runner = CliRunner()


def _commands(group, prefix: tuple[str, ...] = ()):
    for name, cmd in group.commands.items():
        path = (*prefix, name)
        yield path, cmd
        if hasattr(cmd, "commands"):
            yield from _commands(cmd, path)


def test_every_command_has_help_text_and_help_works() -> None:
    root = typer.main.get_command(app)
    cmds = list(_commands(root))  # type: ignore[arg-type]
    names = {" ".join(p) for p, _ in cmds}
    assert {"check-config", "schemas", "broker start", "broker stop", "topics create"} <= names
    for path, cmd in cmds:
        assert (cmd.help or "").strip(), f"`stopwise {' '.join(path)}` has no docstring/help"
        res = runner.invoke(app, [*path, "--help"])
        assert res.exit_code == 0, (path, res.output)
        assert "Usage" in res.output


def test_check_config_wants_a_key_for_the_shipped_config(tmp_path: Path) -> None:
    # secure by default: the shipped file has no key file and does not allow unsigned
    res = runner.invoke(app, ["check-config", str(CONFIG_YAML)], env={})
    assert res.exit_code == 1
    assert f"{CONFIG_YAML}: security.hmac_key_file: a signing key file is required" in res.stderr, res.stderr
    key = tmp_path / "hmac.key"
    key.write_text("0123456789abcdef" * 4 + "\n")
    res = runner.invoke(app, ["check-config", str(CONFIG_YAML)], env={"STOPWISE_SECURITY__HMAC_KEY_FILE": str(key)})
    assert res.exit_code == 0, res.output
    assert res.stdout.strip() == f"ok: {CONFIG_YAML}"
    res = runner.invoke(app, ["check-config", str(CONFIG_YAML)], env={"STOPWISE_SECURITY__ALLOW_UNSIGNED": "true"})
    assert res.exit_code == 0 and "UNSIGNED" in res.stdout, res.output


def _key_cases(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    empty, blank, locked = tmp_path / "empty.key", tmp_path / "blank.key", tmp_path / "locked.key"
    empty.write_bytes(b"")
    blank.write_bytes(b"  \n\t\n")
    locked.write_text("secret\n")
    locked.chmod(0)
    return {"missing": (tmp_path / "absent.key", "key file does not exist"),
            "empty": (empty, "key file is empty (or only whitespace)"),
            "whitespace": (blank, "key file is empty (or only whitespace)"),
            "directory": (tmp_path, "is a directory, not a key file"),
            "unreadable": (locked, "key file cannot be read: Permission denied")}


@pytest.mark.parametrize("case", ["missing", "empty", "whitespace", "directory", "unreadable"])
def test_check_config_refuses_bad_key_files(tmp_path: Path, case: str) -> None:
    """Issue 13, reproduction 5: check-config said ok for all of these."""
    import os

    if case == "unreadable" and os.geteuid() == 0:
        pytest.skip("root reads any file")
    path, why = _key_cases(tmp_path)[case]
    cfg = write_variant(tmp_path, "security.hmac_key_file", str(path))
    res = runner.invoke(app, ["check-config", str(cfg)], env={})
    assert res.exit_code == 1
    assert f"{cfg}: security.hmac_key_file: {str(path)!r} {why}" in res.stderr, res.stderr


@pytest.mark.parametrize("case", ["missing", "empty", "directory"])
def test_run_with_a_bad_key_file_fails_clearly_without_a_traceback(tmp_path: Path, case: str) -> None:
    """Issue 13, reproduction 5: a missing key file passed check-config, then `stopwise run` died with a traceback."""
    path, why = _key_cases(tmp_path)[case]
    cfg = write_variant(tmp_path, "security.hmac_key_file", str(path))
    out = subprocess.run([sys.executable, "-m", "stopwise.daemon.cli", "run", "--config", str(cfg)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2, out.stderr
    assert "Traceback" not in out.stderr and f"security.hmac_key_file: {str(path)!r} {why}" in out.stderr, out.stderr
    # and without any key file (nor allow_unsigned), `run` refuses too
    out = subprocess.run([sys.executable, "-m", "stopwise.daemon.cli", "run", "--config", str(CONFIG_YAML)],
                         capture_output=True, text=True, timeout=60, env={"PATH": "/usr/bin:/bin"})
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "security.hmac_key_file: a signing key file is required" in out.stderr, out.stderr


@pytest.mark.parametrize(("dotted", "value", "why"), BAD[:20], ids=[d for d, _, _ in BAD[:20]])
def test_check_config_rejects_bad_variants(tmp_path: Path, dotted: str, value: object, why: str) -> None:
    path = write_variant(tmp_path, dotted, value)
    res = runner.invoke(app, ["check-config", str(path)])
    assert res.exit_code == 1
    assert f"{path}: {dotted}" in res.stderr and why in res.stderr, res.stderr


def test_check_config_applies_env_overrides() -> None:
    res = runner.invoke(app, ["check-config", str(CONFIG_YAML)], env={"STOPWISE_BUDGET__EM_DROP": "3"})
    assert res.exit_code == 1
    assert "budget.em_drop: 3 is not in [0, 1]" in res.stderr and "STOPWISE_BUDGET__EM_DROP" in res.stderr


def test_schemas_command_prints_all_three() -> None:
    res = runner.invoke(app, ["schemas"])
    assert res.exit_code == 0
    assert sorted(json.loads(res.stdout)) == ["feedback_event", "inference_event", "threshold_record"]


def test_console_script_runs_as_a_process(tmp_path: Path) -> None:
    exe = shutil.which("stopwise", path=str(Path(sys.executable).parent))
    assert exe, "the `stopwise` console script is not installed next to this python"
    good = subprocess.run([exe, "check-config", str(CONFIG_YAML)], capture_output=True, text=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin", "STOPWISE_SECURITY__ALLOW_UNSIGNED": "true"})
    assert good.returncode == 0, good.stderr
    bad = subprocess.run([exe, "check-config", str(write_variant(tmp_path, "budget.em_drop", 1.5))],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1 and "budget.em_drop: 1.5 is not in [0, 1]" in bad.stderr


def test_broker_status_of_an_empty_dir_says_stopped(tmp_path: Path) -> None:
    res = runner.invoke(app, ["broker", "status", "--dir", str(tmp_path)])
    assert res.exit_code == 1 and res.stdout.strip() == "stopped"
