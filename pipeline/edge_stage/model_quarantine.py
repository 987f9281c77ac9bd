"""Models this node rolled back after repeated inference errors, remembered across restarts.

An automatic rollback happens on the edge, but the camera's retained config still names the
failed version: without a record on disk a restarted node would download, smoke-test and run
it again, fail again, and roll back again, forever. The record is keyed by name, version and
sha256, so a fixed model published as a new version (or with other bytes) is tried normally.
To retry the very same file, delete its entry from ``<edge.model_dir>/quarantine.json``.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

from pipeline.settings import ModelRef

log = logging.getLogger(__name__)
FILE_NAME = "quarantine.json"
_LOCK = threading.Lock()  # one node process; every camera shares the file


def _key(ref: ModelRef) -> str:
    return f"{ref.name}@{ref.version}#{ref.sha256}"


class Quarantine:
    def __init__(self, model_dir: Path) -> None:
        self.path = model_dir / FILE_NAME

    def _read(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:  # a damaged file must not stop the node; start afresh
            log.warning("model quarantine %s unreadable (%s); ignoring it", self.path, exc)
            return {}
        return data if isinstance(data, dict) else {}

    def reason(self, ref: ModelRef) -> str | None:
        """Why ``ref`` is quarantined, or None when it may be loaded."""
        with _LOCK:
            entry = self._read().get(_key(ref))
        return str(entry.get("reason", "rolled back")) if isinstance(entry, dict) else None

    def add(self, ref: ModelRef, cam: str, reason: str) -> None:
        with _LOCK:
            data = self._read()
            data[_key(ref)] = {"cam": cam, "reason": reason[:300], "at_ms": int(time.time() * 1000)}
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
            os.replace(tmp, self.path)  # atomic: a crash leaves the old or the new file
