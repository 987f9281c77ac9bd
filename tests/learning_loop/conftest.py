"""Fixtures of the learning-loop tests (helpers in loop_helpers.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.settings import SAMPLE_CLIP
from pipeline.testing import cut_clip


@pytest.fixture(scope="session")
def loop_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """4 s (40 frames at 10 fps) of the sample clip, people walking."""
    if not SAMPLE_CLIP.is_file():
        pytest.skip("samples/vtest_clip.mp4 missing")
    return cut_clip(tmp_path_factory.mktemp("loop-clips") / "short.mp4", 0, 40)
