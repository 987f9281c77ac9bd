"""Edge node install: the wheel carries the edge TFLite models and the edge needs no TensorFlow."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from pipeline.settings import REPO_ROOT

EDGE = REPO_ROOT / "pipeline" / "edge_stage"
TF_IMPORT = re.compile(r"^\s*(import\s+tensorflow\b|from\s+tensorflow\b)", re.M)


@pytest.mark.integration
@pytest.mark.slow
def test_wheel_contains_the_edge_models(tmp_path: Path) -> None:
    # Build from a copy: setuptools writes build/ and *.egg-info next to the sources.
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO_ROOT / name, src / name)
    shutil.copytree(REPO_ROOT / "pipeline", src / "pipeline",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))  # fmt: skip
    out = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", ".", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(tmp_path / "dist")],
        cwd=src, capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    (wheel,) = (tmp_path / "dist").glob("edge_vision_pipeline-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "pipeline/edge_stage/__init__.py" in names
    assert "pipeline/cli.py" in names
    models = sorted(p.relative_to(REPO_ROOT).as_posix() for p in (EDGE / "models").glob("*.tflite"))
    if not models:
        pytest.skip("no pipeline/edge_stage/models/*.tflite in the source tree yet (scripts/build_models.py)")
    missing = [m for m in models if m not in names]
    assert not missing, f"wheel lacks {missing}"
    metadata = next(n for n in names if n.endswith(".dist-info/METADATA"))
    text = zipfile.ZipFile(wheel).read(metadata).decode()
    edge_requires = [ln for ln in text.splitlines() if ln.startswith("Requires-Dist") and 'extra == "edge"' in ln]
    assert edge_requires and not [ln for ln in edge_requires if "tensorflow" in ln.lower()]


@pytest.mark.unit
def test_edge_stage_source_imports_no_tensorflow() -> None:
    offenders = [p.relative_to(REPO_ROOT).as_posix() for p in EDGE.rglob("*.py") if TF_IMPORT.search(p.read_text())]
    assert not offenders, f"the edge must not import TensorFlow: {offenders}"


@pytest.mark.integration
def test_importing_the_edge_stage_loads_no_tensorflow() -> None:
    # Everything `pipeline edge` imports, in a fresh interpreter that has TensorFlow installed.
    code = (
        "import importlib, pkgutil, sys\n"
        "import pipeline.edge_stage as pkg\n"
        "for m in pkgutil.walk_packages(pkg.__path__, 'pipeline.edge_stage.'):\n"
        "    importlib.import_module(m.name)\n"
        "bad = sorted(n for n in sys.modules if n == 'tensorflow' or n.startswith('tensorflow.'))\n"
        "print('TF:', bad[:5])\n"
        "sys.exit(1 if bad else 0)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         cwd=REPO_ROOT, check=False)  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
