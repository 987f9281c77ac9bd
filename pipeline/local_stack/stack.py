"""The whole local stack: Mosquitto, Tansu and the model server on free loopback ports.

:class:`LocalStack` is a context manager for tests and the demo. :func:`up`, :func:`down` and
:func:`status` back ``pipeline stack up|down|status``: ``up`` leaves the processes running in
their own sessions and records them in ``<run_dir>/stack.json``; other processes use the stack
through ``--config <run_dir>/stack-settings.yaml``.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from pipeline.errors import LocalStackError
from pipeline.local_stack.child_process import ChildProcess
from pipeline.local_stack.kafka_topics import ensure_topics
from pipeline.local_stack.model_server import ModelServerProcess
from pipeline.local_stack.mosquitto import MosquittoProcess
from pipeline.local_stack.ports import port_open
from pipeline.local_stack.tansu import TansuProcess
from pipeline.settings import Settings

log = logging.getLogger(__name__)

STACK_FILE = "stack.json"
SETTINGS_FILE = "stack-settings.yaml"


class LocalStack:
    """Start the brokers (and the model server), create topics, hand out wired settings."""

    def __init__(
        self,
        settings: Settings,
        run_dir: Path | None = None,
        *,
        model_server: bool = True,
        detached: bool = False,
    ) -> None:
        self.base_settings = settings
        self.run_dir = Path(run_dir or settings.local.run_dir).resolve()
        self.detached = detached
        self.mosquitto = MosquittoProcess(
            self.run_dir / "mosquitto", binary=settings.local.mosquitto_bin, detached=detached
        )
        self.tansu = TansuProcess(self.run_dir / "tansu", detached=detached)
        self.model_server: ModelServerProcess | None = (
            ModelServerProcess(self.run_dir / "model-server", settings.model_server.model_base_path, detached=detached)
            if model_server
            else None
        )
        self.settings = self.wired_settings()

    @property
    def processes(self) -> list[ChildProcess]:
        procs: list[ChildProcess] = [self.mosquitto, self.tansu]
        if self.model_server is not None:
            procs.append(self.model_server)
        return procs

    @property
    def stack_file(self) -> Path:
        return self.run_dir / STACK_FILE

    @property
    def settings_file(self) -> Path:
        return self.run_dir / SETTINGS_FILE

    def wired_settings(self) -> Settings:
        """The base settings with every address pointing at this stack."""
        s = self.base_settings
        update: dict[str, Any] = {
            "mqtt": s.mqtt.model_copy(update={"host": self.mosquitto.host, "port": self.mosquitto.port}),
            "kafka": s.kafka.model_copy(update={"bootstrap_servers": self.tansu.bootstrap, "fast_group_join": True}),
            "local": s.local.model_copy(update={"run_dir": self.run_dir}),
        }
        if self.model_server is not None:
            update["model_server"] = s.model_server.model_copy(
                update={"address": self.model_server.address, "model_base_path": self.model_server.model_base_path}
            )
        return s.model_copy(update=update)

    def start(self) -> Settings:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        try:
            for proc in self.processes:
                proc.start()
            ensure_topics(self.settings.kafka)
        except BaseException:
            self.stop()
            raise
        self.settings_file.write_text(self.settings.to_yaml())
        self.stack_file.write_text(json.dumps(self.describe(), indent=2) + "\n")
        return self.settings

    def stop(self) -> None:
        for proc in reversed(self.processes):
            proc.stop()
        self.stack_file.unlink(missing_ok=True)

    def describe(self) -> dict[str, Any]:
        return {
            "v": 1,
            "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "run_dir": str(self.run_dir),
            "settings_file": str(self.settings_file),
            "mqtt": f"{self.mosquitto.host}:{self.mosquitto.port}",
            "kafka_bootstrap": self.tansu.bootstrap,
            "model_server": self.model_server.address if self.model_server else None,
            "processes": {
                p.name: {
                    "pid": p.pid,
                    "host": p.host,
                    "port": p.port,
                    "log": str(p.log_path),
                    "startup_s": round(p.startup_s or 0.0, 3),
                    # Checked by `down` before signalling: never signal a recycled pid.
                    "cmd_hint": p.command()[0],
                }
                for p in self.processes
            },
        }

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


# ------------------------------------------------------------------ detached: stack up/down/status


def up(settings: Settings, *, model_server: bool = True) -> LocalStack:
    """Start the stack detached (it outlives this process) and record it in ``stack.json``."""
    run_dir = Path(settings.local.run_dir).resolve()
    if any(row.alive for row in status_rows(run_dir)):
        raise LocalStackError(f"a stack is already running from {run_dir}; run `pipeline stack down` first")
    stack = LocalStack(settings, run_dir, model_server=model_server, detached=True)
    stack.start()
    return stack


@dataclass(frozen=True)
class StatusRow:
    name: str
    pid: int
    port: int
    alive: bool
    answering: bool


def read_stack_file(run_dir: Path) -> dict[str, Any] | None:
    path = Path(run_dir) / STACK_FILE
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise LocalStackError(f"cannot read {path}: {exc}") from exc
    return data


def _pid_is(pid: int, cmd_hint: str) -> bool:
    """Whether ``pid`` is alive and still runs the program we started (pids get reused)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    # A zombie (state Z) has exited; only its parent has not reaped it yet.
    if stat.rsplit(")", 1)[-1].split()[0] == "Z":
        return False
    return bool(cmdline) and cmdline[0].decode(errors="replace") == cmd_hint


def status_rows(run_dir: Path) -> list[StatusRow]:
    data = read_stack_file(run_dir)
    if data is None:
        return []
    rows = []
    for name, proc in data["processes"].items():
        alive = _pid_is(proc["pid"], proc["cmd_hint"])
        rows.append(StatusRow(name, proc["pid"], proc["port"], alive, port_open(proc["host"], proc["port"])))
    return rows


def format_status(run_dir: Path) -> str:
    rows = status_rows(run_dir)
    if not rows:
        return f"no local stack recorded in {Path(run_dir).resolve() / STACK_FILE}"
    lines = [f"{'process':<14}{'pid':>8}{'port':>8}  {'alive':<7}{'answering':<9}"]
    for r in rows:
        lines.append(
            f"{r.name:<14}{r.pid:>8}{r.port:>8}  {'yes' if r.alive else 'NO':<7}{'yes' if r.answering else 'NO':<9}"
        )
    data = read_stack_file(run_dir) or {}
    lines.append(f"settings: --config {data.get('settings_file')}")
    return "\n".join(lines)


def down(run_dir: Path, timeout_s: float = 10.0) -> list[str]:
    """SIGTERM every recorded process (SIGKILL after ``timeout_s``); returns the names stopped."""
    data = read_stack_file(run_dir)
    if data is None:
        return []
    procs = data["processes"]
    targets = {n: p for n, p in procs.items() if _pid_is(p["pid"], p["cmd_hint"])}
    # Reverse start order: the model server first, Mosquitto last.
    for proc in reversed(list(targets.values())):
        os.kill(proc["pid"], signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    for name, proc in targets.items():
        while _pid_is(proc["pid"], proc["cmd_hint"]):
            if time.monotonic() > deadline:
                log.warning("%s (pid %d) ignored SIGTERM; sending SIGKILL", name, proc["pid"])
                os.kill(proc["pid"], signal.SIGKILL)
                break
            time.sleep(0.05)
    (Path(run_dir) / STACK_FILE).unlink(missing_ok=True)
    return list(targets)
