"""Run every module's doctests (stopwise.daemon, .policies, .clients, .sim).

Modules are found at run time with pkgutil.walk_packages, so modules others
add are picked up. A module is skipped only when importing it fails because
an optional dependency is missing (the reason is printed)."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

PACKAGES = ["stopwise.daemon", "stopwise.policies", "stopwise.clients", "stopwise.sim"]
NO_RUN = {"stopwise.daemon.cli"}  # import side effects only, no doctests


def _module_names() -> list[str]:
    names: list[str] = []
    for pkg_name in PACKAGES:
        pkg = importlib.import_module(pkg_name)
        names.append(pkg_name)
        for info in pkgutil.walk_packages(pkg.__path__, prefix=pkg_name + "."):
            names.append(info.name)
    return sorted(set(names) - NO_RUN)


@pytest.mark.parametrize("name", _module_names())
def test_doctests(name: str) -> None:
    try:
        module = importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name and not exc.name.startswith("stopwise"):
            print(f"skipping {name}: optional dependency {exc.name!r} is not installed")
            pytest.skip(f"optional dependency {exc.name!r} missing")
        raise
    finder = doctest.DocTestFinder(exclude_empty=True)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    tests = [t for t in finder.find(module, name) if t.examples]
    for test in tests:
        runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{result.failed} doctest example(s) failed in {name} (output above)"
