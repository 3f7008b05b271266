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


def test_check_config_accepts_the_shipped_config() -> None:
    res = runner.invoke(app, ["check-config", str(CONFIG_YAML)], env={})
    assert res.exit_code == 0, res.output
    assert res.stdout.startswith("ok:")


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
    good = subprocess.run([exe, "check-config", str(CONFIG_YAML)], capture_output=True, text=True, timeout=60)
    assert good.returncode == 0, good.stderr
    bad = subprocess.run([exe, "check-config", str(write_variant(tmp_path, "budget.em_drop", 1.5))],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1 and "budget.em_drop: 1.5 is not in [0, 1]" in bad.stderr


def test_broker_status_of_an_empty_dir_says_stopped(tmp_path: Path) -> None:
    res = runner.invoke(app, ["broker", "status", "--dir", str(tmp_path)])
    assert res.exit_code == 1 and res.stdout.strip() == "stopped"
