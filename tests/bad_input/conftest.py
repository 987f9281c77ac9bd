"""A :class:`ChaosEnv` on the session Kafka broker (private Mosquittos per test)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.chaos.rig import ChaosEnv
from pipeline.local_stack.tansu import TansuProcess


@pytest.fixture
def chaos_env(kafka_broker: TansuProcess, tmp_path: Path) -> Iterator[ChaosEnv]:
    with ChaosEnv(tmp_path / "env", kafka=kafka_broker) as env:
        yield env
