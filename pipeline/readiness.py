"""How a long-running command tells the process that started it that it serves: a ready file.

A supervisor (the demo, the tests and the benchmarks, through
:class:`~pipeline.local_stack.pipeline_service.PipelineService`) names a file in
``PIPELINE_READY_FILE``; the command calls :func:`mark_ready` at the moment it serves (the bridge:
subscribed and its downlink assigned; the cloud worker: partitions assigned and tables recovered;
...). Before, supervisors searched the child's log for a line, which broke whenever a log message
was reworded. Without the variable (a deployment) nothing is written. The file holds the pid and
what was ready, written to a temporary name and renamed, so a reader never sees half of it.
"""

from __future__ import annotations

import os
from pathlib import Path

READY_FILE_ENV = "PIPELINE_READY_FILE"


def mark_ready(what: str) -> None:
    """Write ``<pid> <what>`` to the file named in ``PIPELINE_READY_FILE`` (if set)."""
    name = os.environ.get(READY_FILE_ENV)
    if not name:
        return
    path = Path(name)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(f"{os.getpid()} {what}\n")
    os.replace(tmp, path)
