"""boofuzz against the MQTT side (issue 8): mutated CONNECT, PUBLISH (QoS 0/1, to a camera's events
topic) and SUBSCRIBE packets, MQTT 3.1.1 and 5, at Mosquitto while the bridge consumes the topic.

A CONNECT case sends the mutated CONNECT; a PUBLISH/SUBSCRIBE case a valid authenticated CONNECT,
then the mutated packet. After each case the watchdog checks that Mosquitto and the bridge still
run (else: crash); every ``probe_every`` cases and at the end, that Mosquitto answers CONNECT +
PINGREQ and the bridge's /healthz is ok within ``hang_after_s`` (else: hang). Either becomes a
boofuzz failure; boofuzz calls our restart callback, which restarts what died or hung, and goes on.

The requests themselves (packet layouts, the varint sizer, the sampled mutations) are in
:mod:`pipeline.chaos.boofuzz_packets`; this module runs them: one boofuzz session per message path,
the watchdog's callbacks, a quiet fuzz logger that tallies the broker's answers, and the report.
"""

from __future__ import annotations

import http.client
import itertools
import socket
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from pipeline.chaos.boofuzz_packets import MqttEndpoint, build_requests, fuzz_paths, import_boofuzz
from pipeline.chaos.mqtt_fuzz import PINGREQ, connect
from pipeline.errors import ConfigError

PACKET_TYPES = {2: "CONNACK", 3: "PUBLISH", 4: "PUBACK", 5: "PUBREC", 6: "PUBREL", 7: "PUBCOMP", 9: "SUBACK",
                11: "UNSUBACK", 13: "PINGRESP", 14: "DISCONNECT", 15: "AUTH"}  # fmt: skip


def boofuzz_available() -> bool:
    try:
        import_boofuzz()
    except ConfigError:
        return False
    return True


# ---------------------------------------------------------------------- watchdog


class Watched(Protocol):
    """One of our processes (a :class:`~pipeline.local_stack.child_process.ChildProcess`)."""

    @property
    def running(self) -> bool: ...

    def restart(self) -> object: ...


def broker_answers(ep: MqttEndpoint, timeout_s: float) -> bool:
    """An authenticated CONNECT + PINGREQ gets CONNACK (accepted) and PINGRESP."""
    try:
        with socket.create_connection((ep.host, ep.port), timeout=timeout_s) as s:
            s.sendall(connect(f"{ep.client_id}-probe", ep.username, ep.password, v5=False) + PINGREQ)
            got, deadline = b"", time.monotonic() + timeout_s
            while len(got) < 6 and time.monotonic() < deadline:
                chunk = s.recv(64)
                if not chunk:
                    break
                got += chunk
            return got[:2] == b"\x20\x02" and got[3:4] == b"\x00" and got[4:6] == b"\xd0\x00"
    except OSError:
        return False


def healthz_ok(host: str, port: int, timeout_s: float) -> bool:
    conn = http.client.HTTPConnection(host, port, timeout=timeout_s)
    try:
        conn.request("GET", "/healthz")
        return conn.getresponse().status == 200
    except OSError:
        return False
    finally:
        conn.close()


@dataclass
class BoofuzzReport:
    cases: int = 0  # sum of the boofuzz sessions' num_cases_actually_fuzzed
    cases_by_request: dict[str, int] = field(default_factory=dict)
    mutations_defined: int = 0  # single-field mutations the requests define (a full walk)
    crashes: list[str] = field(default_factory=list)  # one line per process found exited
    hangs: list[str] = field(default_factory=list)  # alive, but no answer within hang_after_s
    probes: int = 0
    answers: dict[str, int] = field(default_factory=dict)  # broker replies to the mutated packet, by type
    errors: list[str] = field(default_factory=list)  # boofuzz swallows callback exceptions: they land here
    bytes_sent: int = 0
    aborted: str | None = None  # boofuzz stopped early (a restart failed)
    wall_s: float = 0.0


class _Watchdog:
    """boofuzz callbacks: liveness after each case, health every ``probe_every``, restarts."""

    def __init__(self, ep: MqttEndpoint, broker: Watched, bridge: Watched, bridge_health: tuple[str, int],
                 report: BoofuzzReport, *, probe_every: int, hang_after_s: float, restart_wait_s: float,
                 after_case: Callable[[int], None] | None) -> None:  # fmt: skip
        self.ep, self.report = ep, report
        self.procs = {"mosquitto": broker, "bridge": bridge}
        self.health = bridge_health
        self.probe_every, self.hang_after_s, self.after_case_hook = probe_every, hang_after_s, after_case
        self.restart_wait_s = restart_wait_s
        self.n = 0
        self.broken: set[str] = set()

    def _until(self, check: Callable[[], bool], within_s: float | None = None) -> bool:
        deadline = time.monotonic() + (self.hang_after_s if within_s is None else within_s)
        while not check():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.2)
        return True

    def check(self, *, full: bool) -> str | None:
        dead = [name for name, p in self.procs.items() if not p.running]
        if not dead and full:
            self.report.probes += 1
            hung = [] if self._until(lambda: broker_answers(self.ep, 2.0)) else ["mosquitto"]
            if not self._until(lambda: healthz_ok(*self.health, 2.0)):
                hung.append("bridge")
            dead = [name for name in hung if not self.procs[name].running]  # died while probed
            for name in set(hung) - set(dead):
                what = "/healthz not ok" if name == "bridge" else "no CONNACK + PINGRESP"
                self.report.hangs.append(f"after case {self.n}: {name}: {what} for {self.hang_after_s:.0f} s")
                self.broken.add(name)
        for name in dead:
            self.report.crashes.append(f"after case {self.n}: {name} exited")
            self.broken.add(name)
        return f"not answering or exited: {sorted(self.broken)}" if self.broken else None

    # The signatures are boofuzz's (CallbackMonitor passes these keywords).
    def after_case(self, target: Any, fuzz_data_logger: Any, session: Any, *args: Any, **kwargs: Any) -> None:
        self.n += 1
        if self.after_case_hook is not None:
            self.after_case_hook(self.n)
        problem = self.check(full=self.n % self.probe_every == 0)
        if problem:
            fuzz_data_logger.log_fail(problem)

    def restart(self, target: Any, fuzz_data_logger: Any, session: Any, *args: Any, **kwargs: Any) -> None:
        if not self.broken:  # boofuzz could not connect: find out why
            self.check(full=True)
        try:
            for name in ("mosquitto", "bridge"):  # the bridge needs the broker
                if name in self.broken:
                    self.procs[name].restart()
            self.broken.clear()
            # paho's reconnect backoff, not a hang: after a broker restart the bridge may take a while.
            if not self._until(lambda: healthz_ok(*self.health, 2.0), self.restart_wait_s):
                raise RuntimeError("bridge not healthy after the restart")  # noqa: TRY301
        except Exception as exc:
            raise import_boofuzz().exception.BoofuzzRestartFailedError(repr(exc)) from exc


class _Tally:
    """A quiet boofuzz fuzz logger: counts cases, bytes and the broker's answers, prints progress."""

    def __init__(self, report: BoofuzzReport, total: int, progress: Callable[[str], None] | None, every: int) -> None:
        self.report, self.total, self.progress, self.every = report, total, progress, every
        self.began = time.monotonic()
        self.seen = 0
        self.fuzzing = False
        self.answers: Counter[str] = Counter()

    def open_test_case(self, test_case_id: Any, name: Any, index: Any, *args: Any, **kwargs: Any) -> None:
        self.seen += 1
        if self.progress and self.seen % self.every == 0:
            r = self.report
            self.progress(f"   boofuzz: {self.seen:,}/{self.total:,} cases, {len(r.crashes)} crashes,"
                          f" {len(r.hangs)} hangs, {time.monotonic() - self.began:.0f} s")  # fmt: skip

    def open_test_step(self, description: str) -> None:
        self.fuzzing = description.startswith("Fuzzing Node")

    def log_send(self, data: bytes) -> None:
        self.report.bytes_sent += len(data)

    def log_recv(self, data: bytes) -> None:
        if self.fuzzing and data:
            self.answers[PACKET_TYPES.get(data[0] >> 4, "other")] += 1

    def log_error(self, description: str) -> None:
        self.report.errors.append(description[-2000:])

    def _ignore(self, *args: Any, **kwargs: Any) -> None:
        return

    log_check = log_pass = log_fail = log_info = close_test_case = close_test = _ignore


def run_campaign(
    ep: MqttEndpoint,
    broker: Watched,
    bridge: Watched,
    bridge_health: tuple[str, int],
    cases: int,
    *,
    work_dir: Path,
    probe_every: int = 100,
    hang_after_s: float = 10.0,
    restart_wait_s: float = 60.0,
    recv_timeout_s: float = 0.02,
    progress: Callable[[str], None] | None = None,
    progress_every: int = 1000,
    after_case: Callable[[int], None] | None = None,
) -> BoofuzzReport:
    """``cases`` boofuzz test cases split evenly over :func:`fuzz_paths`, one boofuzz Session each
    (its ``index_end`` is the share), with the watchdog's callbacks; then a final health check."""
    bf = import_boofuzz()
    report = BoofuzzReport()
    work_dir.mkdir(parents=True, exist_ok=True)
    watch = _Watchdog(ep, broker, bridge, bridge_health, report, probe_every=probe_every, hang_after_s=hang_after_s,
                      restart_wait_s=restart_wait_s, after_case=after_case)  # fmt: skip
    tally = _Tally(report, cases, progress, progress_every)
    paths = fuzz_paths()
    began = time.monotonic()
    for i, path in enumerate(paths):
        share = cases // len(paths) + (1 if i < cases % len(paths) else 0)
        requests = {**build_requests(ep, v5=False), **build_requests(ep, v5=True)}
        fuzzed = requests[path[-1]]
        report.mutations_defined += int(fuzzed.get_num_mutations())
        if not share:
            continue
        fuzzed.quota = share
        session = bf.Session(
            target=bf.Target(connection=bf.TCPSocketConnection(ep.host, ep.port, send_timeout=2.0,
                                                               recv_timeout=recv_timeout_s)),
            web_port=None,
            keep_web_open=False,
            fuzz_loggers=[tally],
            db_filename=str(work_dir / f"boofuzz-{'-'.join(path)}.db"),
            fuzz_db_keep_only_n_pass_cases=1,  # the DB keeps cases around a failure, not all 10,000
            index_end=share,
            receive_data_after_fuzz=True,  # for the tally of answers
            post_test_case_callbacks=[watch.after_case],
            restart_callbacks=[watch.restart],
            restart_threshold=3,
            restart_sleep_time=0,
            # A crash or hang shows up cases after the packet that caused it (the bridge reports
            # unhealthy after 30 s), so boofuzz must not blame and skip the element fuzzed then.
            crash_threshold_request=cases + 1,
            crash_threshold_element=cases + 1,
        )  # fmt: skip
        session.connect(requests[path[0]])
        for src, dst in itertools.pairwise(path):
            session.connect(requests[src], requests[dst])
        try:
            session.fuzz(name="->".join(path))
        except bf.exception.BoofuzzRestartFailedError as exc:
            report.aborted = f"{'->'.join(path)}: restart failed: {exc}"
        report.cases_by_request[path[-1]] = int(session.num_cases_actually_fuzzed)
        report.cases += int(session.num_cases_actually_fuzzed)
        if report.aborted:
            break
    watch.check(full=True)  # the last cases must not have left a hang behind
    report.answers = dict(tally.answers)
    report.wall_s = round(time.monotonic() - began, 1)
    return report
