"""Fixtures of the deployment tests (helpers: deploy_helpers.py)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.deploy.deploy_helpers import load_compose, read_env_file


@pytest.fixture(scope="session")
def compose() -> dict[str, Any]:
    return load_compose()


@pytest.fixture(scope="session")
def env_example() -> dict[str, str]:
    return read_env_file()
