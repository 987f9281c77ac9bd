"""A network namespace joined to the host by a veth pair, with packet loss set by nftables inside it.

The edge runs in the namespace and reaches the brokers on the host end of the veth; only its
traffic crosses the pair, so only its traffic suffers the loss. This kernel has no ``tc netem``:
an nftables ``numgen random mod 100 < N drop`` rule on each direction of the namespace's veth
end drops N % of packets, and ``N = 100`` is a blackhole (both sockets stay open, nothing moves,
only keep-alives can tell). The loss can be changed while traffic flows (one nft transaction).

    with LossyNetns() as link:               # needs root (CAP_NET_ADMIN), `ip` and `nft`
        broker = MosquittoProcess(dir, host=link.host_addr)
        subprocess.Popen([*link.exec_prefix(), "python", "-m", ...])   # runs inside
        link.set_loss(15)
        link.set_loss(100)                   # blackhole
        link.set_loss(0)

Names carry the creating pid and a random token, so parallel runs never clash, and namespaces
left behind by a killed run (its pid gone) are removed by the next one. Setup failures undo what
was already made. ``ip netns`` is used where it works; otherwise the namespace is held by an
``unshare --net`` child and entered with ``nsenter``.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import os
import random
import re
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import TracebackType

from pipeline.errors import LocalStackError

log = logging.getLogger(__name__)

NS_PREFIX = "plnet"
# 10.213.0.0/16: private, unlikely to be routed on a build machine; one /30 per namespace.
POOL = ipaddress.IPv4Network("10.213.0.0/16")
TABLE = "pipeline_loss"
_EXTRA_PATH = ("/usr/sbin", "/sbin")  # where `ip` and `nft` live when PATH is a user's


class NetnsUnavailable(LocalStackError):
    """This machine or user cannot make namespaces or nft rules (not root, tool or kernel
    support missing); tests skip with ``str(exc)`` as the reason. Not retriable."""


class NetnsError(LocalStackError):
    """A namespace command failed for another reason (the message quotes it and its stderr)."""


def _which(name: str) -> str | None:
    path = os.pathsep.join([os.environ.get("PATH", ""), *_EXTRA_PATH])
    return shutil.which(name, path=path)


def tools() -> dict[str, str]:
    """Absolute paths of ``ip`` and ``nft``; :class:`NetnsUnavailable` if not root or one is missing."""
    if os.geteuid() != 0:
        raise NetnsUnavailable("network namespaces with a veth pair need root (CAP_NET_ADMIN)")
    found = {name: _which(name) for name in ("ip", "nft")}
    missing = [name for name, path in found.items() if path is None]
    if missing:
        raise NetnsUnavailable(f"{' and '.join(missing)} not found (packages iproute2, nftables)")
    return {name: path for name, path in found.items() if path is not None}


def _run(cmd: Sequence[str], *, stdin: str | None = None) -> str:
    try:
        res = subprocess.run(list(cmd), input=stdin, capture_output=True, text=True, check=False, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise NetnsError(f"{' '.join(cmd)}: {exc}") from exc
    if res.returncode != 0:
        err = res.stderr.strip() or res.stdout.strip()
        # A root without CAP_NET_ADMIN (a default container) or a kernel without nf_tables.
        kind = NetnsUnavailable if re.search(r"not permitted|Permission denied|not supported", err) else NetnsError
        raise kind(f"{' '.join(cmd)} failed ({res.returncode}): {err}")
    return res.stdout


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass(frozen=True)
class LinkCounters:
    """Packets seen and dropped by the loss rules since the last reset, per direction."""

    out_packets: int
    out_dropped: int
    in_packets: int
    in_dropped: int

    @property
    def loss(self) -> float:
        total = self.out_packets + self.in_packets
        return (self.out_dropped + self.in_dropped) / total if total else 0.0


class LossyNetns:
    """A namespace, a veth pair (``host_addr`` on the host, ``ns_addr`` inside) and loss rules."""

    def __init__(self) -> None:
        self.tools = tools()
        token = uuid.uuid4().hex[:8]
        self.name = f"{NS_PREFIX}-{os.getpid()}-{token}"
        self.host_if, self.ns_if = f"plh{token}", f"pln{token}"  # interface names: 15 chars at most
        self.host_addr = self.ns_addr = ""
        self.loss_pct = 0
        self._holder: subprocess.Popen[bytes] | None = None  # the unshare backend's namespace holder
        self._undo: list[Callable[[], object]] = []

    # ------------------------------------------------------------------ setup / teardown

    def start(self) -> LossyNetns:
        self.remove_stale()
        try:
            self._make_namespace()
            self._make_veth()
            self._make_rules()
        except BaseException:
            self.close()
            raise
        log.info("netns %s up: host %s <-> %s inside", self.name, self.host_addr, self.ns_addr)
        return self

    def _make_namespace(self) -> None:
        ip = self.tools["ip"]
        try:
            _run([ip, "netns", "add", self.name])
        except NetnsError as exc:
            log.info("ip netns add failed (%s); holding a namespace with unshare instead", exc)
            self._start_holder()
            return
        self._undo.append(lambda: _run([ip, "netns", "delete", self.name]))

    def _start_holder(self) -> None:
        unshare, nsenter = _which("unshare"), _which("nsenter")
        if unshare is None or nsenter is None:
            raise NetnsUnavailable("`ip netns add` failed and unshare/nsenter (util-linux) are missing")
        # unshare execs sleep inside the new namespace: the namespace lives as long as it does.
        self._holder = subprocess.Popen([unshare, "--net", "--", "sleep", "infinity"])
        self._undo.append(self._stop_holder)
        self.tools["nsenter"] = nsenter
        # Until unshare has run, the holder's pid still names the host's namespace.
        mine = os.readlink("/proc/self/ns/net")
        deadline = time.monotonic() + 5
        while os.readlink(f"/proc/{self._holder.pid}/ns/net") == mine:
            if self._holder.poll() is not None or time.monotonic() > deadline:
                raise NetnsUnavailable("cannot create a network namespace (unshare --net failed)")
            time.sleep(0.01)

    def _stop_holder(self) -> None:
        if self._holder is not None:
            self._holder.kill()
            self._holder.wait()
            self._holder = None

    def _make_veth(self) -> None:
        ip = self.tools["ip"]
        _run([ip, "link", "add", self.host_if, "type", "veth", "peer", "name", self.ns_if])
        # Deleting one end deletes both; the kernel frees a deleted namespace's devices lazily,
        # so the host end is deleted explicitly rather than left to the namespace's removal.
        self._undo.append(lambda: _run([ip, "link", "delete", self.host_if]))
        target = self.name if self._holder is None else str(self._holder.pid)
        _run([ip, "link", "set", self.ns_if, "netns", target])
        net = self._free_subnet()
        host, inside = list(net.hosts())
        self.host_addr, self.ns_addr = str(host), str(inside)
        _run([ip, "addr", "add", f"{host}/{net.prefixlen}", "dev", self.host_if])
        _run([ip, "link", "set", self.host_if, "up"])
        self.run([ip, "addr", "add", f"{inside}/{net.prefixlen}", "dev", self.ns_if])
        self.run([ip, "link", "set", self.ns_if, "up"])
        self.run([ip, "link", "set", "lo", "up"])

    def _free_subnet(self) -> ipaddress.IPv4Network:
        """A /30 of :data:`POOL` that no host address or route overlaps (random: parallel runs)."""
        ip = self.tools["ip"]
        used: list[ipaddress.IPv4Network] = []
        for line in (_run([ip, "-4", "-o", "addr", "show"]) + _run([ip, "-4", "route", "show"])).splitlines():
            for word in line.split():
                with contextlib.suppress(ValueError):
                    if "." in word and word[0].isdigit():
                        used.append(ipaddress.IPv4Network(word, strict=False))
        blocks = POOL.num_addresses // 4
        for _ in range(64):
            net = ipaddress.IPv4Network((int(POOL.network_address) + 4 * random.randrange(blocks), 30))  # noqa: S311
            if not any(net.overlaps(u) for u in used):
                return net
        raise NetnsError(f"no free /30 in {POOL}")

    def _make_rules(self) -> None:
        v = self.ns_if
        self.nft(f"""
            table inet {TABLE} {{
                counter out_packets {{}}
                counter out_dropped {{}}
                counter in_packets {{}}
                counter in_dropped {{}}
                chain egress_loss {{}}
                chain ingress_loss {{}}
                chain egress {{
                    type filter hook output priority 0; policy accept;
                    oifname "{v}" counter name out_packets jump egress_loss
                }}
                chain ingress {{
                    type filter hook input priority 0; policy accept;
                    iifname "{v}" counter name in_packets jump ingress_loss
                }}
            }}
        """)

    def remove_stale(self) -> None:
        """Delete namespaces this module made in runs whose process is gone (SIGKILLed runs)."""
        try:
            listing = _run([self.tools["ip"], "netns", "list"])
        except NetnsError:
            return
        for line in listing.splitlines():
            m = re.match(rf"({NS_PREFIX}-(\d+)-[0-9a-f]+)\b", line)
            if m and not _pid_alive(int(m.group(2))):
                log.info("removing stale namespace %s", m.group(1))
                with contextlib.suppress(NetnsError):
                    _run([self.tools["ip"], "netns", "delete", m.group(1)])

    def close(self) -> None:
        """Undo every step that succeeded, last first; a failing step does not stop the others."""
        while self._undo:
            step = self._undo.pop()
            try:
                step()
            except (NetnsError, OSError) as exc:
                log.warning("netns %s teardown step failed: %s", self.name, exc)

    def __enter__(self) -> LossyNetns:
        return self.start()

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    # ------------------------------------------------------------------ use

    def exec_prefix(self) -> list[str]:
        """Put this before a command line to run it inside the namespace (it execs: same pid)."""
        if self._holder is not None:
            return [self.tools["nsenter"], f"--net=/proc/{self._holder.pid}/ns/net", "--"]
        return [self.tools["ip"], "netns", "exec", self.name]

    def run(self, cmd: Sequence[str], *, stdin: str | None = None) -> str:
        """Run a command inside the namespace, wait for it; its stdout (NetnsError on failure)."""
        return _run([*self.exec_prefix(), *cmd], stdin=stdin)

    def nft(self, script: str) -> str:
        """One nft transaction inside the namespace (all of it applies, or none)."""
        return self.run([self.tools["nft"], "-f", "-"], stdin=script)

    def set_loss(self, pct: int) -> None:
        """Drop ``pct`` % of packets each way at random (0: none; 100: a blackhole), at once."""
        if not 0 <= pct <= 100:
            raise ValueError(f"loss must be 0..100 %, not {pct}")
        match = "" if pct >= 100 else f"numgen random mod 100 < {pct} "
        lines = [f"flush chain inet {TABLE} egress_loss", f"flush chain inet {TABLE} ingress_loss"]
        if pct > 0:
            lines += [f"add rule inet {TABLE} egress_loss {match}counter name out_dropped drop",
                      f"add rule inet {TABLE} ingress_loss {match}counter name in_dropped drop"]  # fmt: skip
        self.nft("\n".join(lines) + "\n")
        self.loss_pct = pct
        log.info("netns %s: loss %d %%", self.name, pct)

    def counters(self, *, reset: bool = False) -> LinkCounters:
        """Packets through the namespace's veth end and dropped by the rules (``reset``: zero them)."""
        verb = "reset" if reset else "list"
        data = json.loads(self.run([self.tools["nft"], "-j", verb, "counters", "table", "inet", TABLE]))
        values = {c["counter"]["name"]: int(c["counter"]["packets"]) for c in data["nftables"] if "counter" in c}
        return LinkCounters(values.get("out_packets", 0), values.get("out_dropped", 0),
                            values.get("in_packets", 0), values.get("in_dropped", 0))  # fmt: skip
