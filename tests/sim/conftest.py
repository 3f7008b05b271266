"""Fixtures for the simulator tests."""

from __future__ import annotations

import pytest

from stopwise.daemon.config import Config, parse_config


@pytest.fixture
def cfg() -> Config:
    """Default config with 1 s publish interval and no default exploration."""
    return parse_config({"publish": {"interval_s": 1.0},
                         "exploration": {"min_rate": 0.0, "initial_rate": 0.0}})
