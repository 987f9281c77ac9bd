"""Fixtures of the edge stage tests; helpers live in ``edge_helpers``."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pipeline.settings import SAMPLE_CLIP, Settings
from pipeline.testing import cut_clip
from tests.edge_stage.edge_helpers import Collector, MakeEdgeSettings, edge_settings_for


@pytest.fixture(scope="session")
def short_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """4 s (40 frames at 10 fps) of the sample clip, people walking."""
    if not SAMPLE_CLIP.is_file():
        pytest.skip("samples/vtest_clip.mp4 missing")
    return cut_clip(tmp_path_factory.mktemp("clips") / "short.mp4", 0, 40)


@pytest.fixture
def edge_settings(mqtt_broker: Any, tmp_path: Path) -> MakeEdgeSettings:
    def make(cameras: list[dict[str, Any]] | None = None, **edge: Any) -> Settings:
        return edge_settings_for(mqtt_broker.host, mqtt_broker.port, tmp_path, cameras, **edge)

    return make


@pytest.fixture
def collector_for() -> Iterator[Callable[..., Collector]]:
    made: list[Collector] = []

    def make(settings: Settings, ack: bool = False) -> Collector:
        c = Collector(settings, ack=ack).start()
        made.append(c)
        return c

    yield make
    for c in made:
        c.stop()
