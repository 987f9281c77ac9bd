"""A broker or server run as a child process: start, wait until it answers, stop, kill, restart.

Subclasses say how to start (:meth:`ChildProcess.command`), what to write first
(:meth:`ChildProcess.prepare`) and what "ready" means (:meth:`ChildProcess.probe`). Output goes
to ``<data_dir>/<name>.log`` so a failed start can quote the log tail in its error.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import time
from pathlib import Path
from types import TracebackType
from typing import Self

from pipeline.errors import LocalStackError
from pipeline.local_stack.ports import LOOPBACK, free_port, wait_port_closed

log = logging.getLogger(__name__)


class ChildProcess:
    name = "child"

    def __init__(
        self,
        data_dir: Path,
        port: int | None,
        *,
        host: str = LOOPBACK,
        start_timeout_s: float = 30.0,
        stop_timeout_s: float = 10.0,
        detached: bool = False,
    ) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.host = host
        self.port = port if port is not None else free_port(host)  # None: any free loopback port
        self.start_timeout_s = start_timeout_s
        self.stop_timeout_s = stop_timeout_s
        # Detached children get their own session: `pipeline stack up` exits and leaves them
        # running, and a Ctrl-C in the terminal that started them does not reach them.
        self.detached = detached
        self.log_path = self.data_dir / f"{self.name}.log"
        self.startup_s: float | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    # ---- what subclasses provide
    def command(self) -> list[str]:
        raise NotImplementedError

    def prepare(self) -> None:
        """Write config files before each start (restart rewrites them too)."""

    def probe(self) -> bool:
        """One readiness check; True once the process serves requests."""
        raise NotImplementedError

    def env(self) -> dict[str, str] | None:
        return None

    def run_as(self) -> str | None:
        """User to run the child as (the process starts as that user: signals reach it directly)."""
        return None

    # ---- lifecycle
    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> Self:
        if self.running:
            raise LocalStackError(f"{self.name} already running (pid {self.pid})")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.prepare()
        cmd = self.command()
        began = time.monotonic()
        with self.log_path.open("ab") as log_file:
            # The child holds its own copy of the log descriptor; ours closes here.
            log_file.write(f"--- {self.name} start: {' '.join(cmd)}\n".encode())
            log_file.flush()
            try:
                self._proc = subprocess.Popen(
                    cmd,
                    stdin=subprocess.DEVNULL,
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                    env=self.env(),
                    start_new_session=self.detached,
                    user=self.run_as(),
                )
            except OSError as exc:
                raise LocalStackError(f"cannot start {self.name} ({cmd[0]}): {exc}") from exc
        try:
            self._wait_ready(began + self.start_timeout_s)
        except BaseException:
            self.kill()
            raise
        self.startup_s = time.monotonic() - began
        log.info("%s ready on %s:%d in %.2f s (pid %d)", self.name, self.host, self.port, self.startup_s, self.pid)
        return self

    def _wait_ready(self, deadline: float) -> None:
        assert self._proc is not None
        while True:
            code = self._proc.poll()
            if code is not None:
                self._proc = None
                raise LocalStackError(f"{self.name} exited with code {code} while starting:\n{self.log_tail()}")
            if self.probe():
                return
            if time.monotonic() > deadline:
                raise LocalStackError(
                    f"{self.name} did not answer on {self.host}:{self.port} within "
                    f"{self.start_timeout_s:.0f} s:\n{self.log_tail()}"
                )
            time.sleep(0.05)

    def stop(self, timeout_s: float | None = None) -> int | None:
        """SIGTERM (a clean exit: Mosquitto saves its persistence file), SIGKILL after the timeout."""
        proc = self._proc
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            # A suspended (SIGSTOP) child would hold the SIGTERM pending until the timeout.
            proc.send_signal(signal.SIGCONT)
            try:
                proc.wait(timeout_s if timeout_s is not None else self.stop_timeout_s)
            except subprocess.TimeoutExpired:
                log.warning("%s ignored SIGTERM; sending SIGKILL", self.name)
                proc.kill()
                proc.wait()
        self._proc = None
        return proc.returncode

    def kill(self) -> None:
        """SIGKILL without warning: for fault tests (what a crash or power loss leaves behind)."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        self._proc = None

    def restart(self) -> Self:
        """Stop if running, then start again on the same port with the same data dir."""
        self.stop()
        wait_port_closed(self.host, self.port, self.stop_timeout_s)
        return self.start()

    def suspend(self) -> None:
        """SIGSTOP: the process keeps its sockets but answers nothing (a hung broker)."""
        if self._proc is not None:
            os.kill(self._proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        if self._proc is not None:
            os.kill(self._proc.pid, signal.SIGCONT)

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def __enter__(self) -> Self:
        if not self.running:
            self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.host}:{self.port}, pid={self.pid}, dir={self.data_dir})"
