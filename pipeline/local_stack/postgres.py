"""A private PostgreSQL cluster (Debian's ``postgresql`` package) as a child process.

For the history store's tests and local runs: ``initdb`` into a fresh directory, then the
``postgres`` server itself as our child on a free loopback port (no ``pg_ctl`` daemon, so a
stop or a crash of the test run cannot leave it behind). PostgreSQL refuses to run as root:
when we are root, the cluster directory is handed to the ``postgres`` system user and both
programs run as that user. Authentication is ``trust`` on 127.0.0.1 (a throwaway cluster).
Start-up measured here: initdb ~1.5 s, server ready ~0.3 s.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import subprocess
from pathlib import Path

from pipeline.errors import LocalStackError
from pipeline.local_stack.child_process import ChildProcess

SUPERUSER = "pipeline"


def find_pg_bin(program: str) -> str:
    """Debian keeps the server programs in /usr/lib/postgresql/<major>/bin (not on PATH)."""
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{program}"), reverse=True)
    path = found[0] if found else shutil.which(program)
    if not path:
        raise LocalStackError(f"{program} not found: install Debian's postgresql package (./dev setup does)")
    return path


class PostgresProcess(ChildProcess):
    name = "postgres"

    def __init__(self, data_dir: Path, port: int | None = None) -> None:
        super().__init__(data_dir, port, start_timeout_s=60.0, stop_timeout_s=20.0)
        self._user = "postgres" if os.geteuid() == 0 else None
        self.pgdata = self.data_dir / "pgdata"

    def run_as(self) -> str | None:
        return self._user

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}@{self.host}:{self.port}/{database}"

    def prepare(self) -> None:
        if self._user is not None:
            entry = pwd.getpwnam(self._user)
            os.chown(self.data_dir, entry.pw_uid, entry.pw_gid)
            os.chmod(self.data_dir, 0o755)  # noqa: S103 (the server user must enter it)
            if self.log_path.exists():
                os.chown(self.log_path, entry.pw_uid, entry.pw_gid)
        if (self.pgdata / "PG_VERSION").exists():
            return
        cmd = [find_pg_bin("initdb"), "-D", str(self.pgdata), "-U", SUPERUSER, "-A", "trust", "-E", "UTF8",
               "--no-sync", "--no-locale"]  # fmt: skip
        done = subprocess.run(cmd, capture_output=True, text=True, user=self._user, check=False, timeout=120)
        if done.returncode != 0:
            raise LocalStackError(f"initdb failed ({done.returncode}): {done.stderr[-2000:]}")

    def command(self) -> list[str]:
        return [
            find_pg_bin("postgres"), "-D", str(self.pgdata), "-p", str(self.port), "-k", str(self.data_dir),
            "-c", f"listen_addresses={self.host}", "-c", "max_connections=50",
        ]  # fmt: skip

    def stop(self, timeout_s: float | None = None) -> int | None:
        # SIGTERM is PostgreSQL's "smart" shutdown, which waits for every client to leave;
        # SIGINT is its "fast" one (rolls back open transactions, then a clean checkpoint).
        if self.running and self.pid is not None:
            os.kill(self.pid, signal.SIGINT)
        return super().stop(timeout_s)

    def probe(self) -> bool:
        import psycopg

        try:
            with psycopg.connect(self.url(), connect_timeout=1):
                return True
        except psycopg.OperationalError:
            return False

    def create_database(self, name: str) -> str:
        """A new empty database; returns its URL."""
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)
