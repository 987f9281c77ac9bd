"""One of our own long-running commands (bridge, cloud worker, history, console) as a child process.

Used by the demo, the benchmarks and the end-to-end tests so that they exercise exactly the
command lines a deployment runs. "Ready" is the command's own word for it: the ready file it
writes through :func:`pipeline.readiness.mark_ready` (named in ``PIPELINE_READY_FILE``), not a
log line searched for.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from pipeline.local_stack.child_process import ChildProcess
from pipeline.readiness import READY_FILE_ENV


class PipelineService(ChildProcess):
    def __init__(
        self,
        name: str,
        data_dir: Path,
        config_file: Path,
        args: list[str],
        *,
        start_timeout_s: float = 120.0,
    ) -> None:
        self.name = name
        self.config_file = config_file
        self.args = args
        # port 0: these services need no inbound port to be ready (health ports come from settings).
        super().__init__(data_dir, 0, start_timeout_s=start_timeout_s, stop_timeout_s=20.0)
        self.ready_file = self.data_dir / f"{name}.ready"

    def command(self) -> list[str]:
        return [sys.executable, "-m", "pipeline.cli", "--config", str(self.config_file), *self.args]

    def env(self) -> dict[str, str]:
        return {**os.environ, READY_FILE_ENV: str(self.ready_file)}

    def prepare(self) -> None:
        self.ready_file.unlink(missing_ok=True)  # a restart is ready only when it says so itself

    def probe(self) -> bool:
        # Existence is enough: prepare() removed any earlier one. (Not the pid: a wrapped command,
        # e.g. run in a network namespace, may write it from a process of another id.)
        return self.ready_file.is_file()
