"""One of our own long-running commands (bridge, cloud worker, edge) as a child process.

Used by the demo, the benchmarks and the end-to-end tests so that they exercise exactly the
command lines a deployment runs. "Ready" is a line the command logs once it serves.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from pipeline.local_stack.child_process import ChildProcess


class PipelineService(ChildProcess):
    def __init__(
        self,
        name: str,
        data_dir: Path,
        config_file: Path,
        args: list[str],
        ready_pattern: str,
        *,
        start_timeout_s: float = 120.0,
    ) -> None:
        self.name = name
        self.config_file = config_file
        self.args = args
        self.ready = re.compile(ready_pattern)
        # port 0: these services need no inbound port to be ready (health ports come from settings).
        super().__init__(data_dir, 0, start_timeout_s=start_timeout_s, stop_timeout_s=20.0)
        self._log_offset = 0

    def command(self) -> list[str]:
        return [sys.executable, "-m", "pipeline.cli", "--config", str(self.config_file), *self.args]

    def prepare(self) -> None:
        # Only lines written after this start count as "ready" (restart appends to the same log).
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0

    def probe(self) -> bool:
        try:
            with self.log_path.open("rb") as f:
                f.seek(self._log_offset)
                text = f.read().decode(errors="replace")
        except OSError:
            return False
        return bool(self.ready.search(text))
