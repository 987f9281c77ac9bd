"""History-store fixtures: a private PostgreSQL cluster per session, a fresh database per test.

``store_url`` is parametrised over both back ends, so each store test runs against a real
SQLite file and a real PostgreSQL database.
"""

from __future__ import annotations

import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.local_stack.postgres import PostgresProcess


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresProcess]:
    # Not under pytest's tmp dir: its parents are 0700 root, and the server runs as 'postgres'.
    root = Path(tempfile.mkdtemp(prefix="pipeline-pg-"))
    try:
        with PostgresProcess(root) as server:
            yield server
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'history.sqlite3'}"
    server: PostgresProcess = request.getfixturevalue("postgres_server")
    return server.create_database(f"h{uuid.uuid4().hex[:10]}")
