"""Make the repository's ``benchmarks`` package importable (it is not installed with ``pipeline``,
and without this the folder ``tests/benchmarks`` would shadow it as a namespace package)."""

from __future__ import annotations

import sys

from pipeline.settings import REPO_ROOT

if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))
