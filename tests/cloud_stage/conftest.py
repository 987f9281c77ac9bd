"""Fixtures of the cloud-stage tests (helpers in cloud_stage_helpers.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.local_stack.model_server import ModelServerProcess
from tests.cloud_stage.cloud_stage_helpers import CloudWorker, Crops, find_crops


@pytest.fixture(scope="session")
def crops(model_server: ModelServerProcess) -> Crops:
    """Person crops cut from samples/vtest_clip.mp4 around people the heavy model finds."""
    return asyncio.run(find_crops(model_server.address))


@pytest.fixture
def cloud_worker(tmp_path: Path) -> Iterator[list[CloudWorker]]:
    """Workers appended here are stopped after the test."""
    workers: list[CloudWorker] = []
    yield workers
    for w in workers:
        w.stop()
