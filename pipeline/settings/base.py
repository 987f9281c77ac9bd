"""The settings model's common parts: paths, the point type, the strict section base."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict

# pipeline/settings/base.py -> the repository root
REPO_ROOT = Path(__file__).resolve().parent.parent.parent
SAMPLE_CLIP = REPO_ROOT / "samples" / "vtest_clip.mp4"
DEFAULT_RUN_DIR = Path(".pipeline-run")

Point = tuple[float, float]


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
