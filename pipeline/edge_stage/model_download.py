"""Model files from the cloud's registry: download (size cap, HTTP Range resume or MQTT chunks)
and sha256 check.

:class:`ModelStore` keeps downloaded files under ``edge.model_dir`` as
``<name>-<version>-<sha256[:16]>.tflite``; a partial download is ``<same>.part`` and is resumed
with ``Range: bytes=<have>-`` (a server that answers 200 instead of 206 restarts it). A file is
renamed into place only after its size and sha256 match the reference, so a file under its
final name has been verified; nothing loads a ``.part``. A reference whose URL is
``mqtt://models/<name>/<version>`` is fetched as retained chunks from the node's broker instead
(:mod:`~pipeline.edge_stage.chunk_download`, part file ``<same>.mqtt.part``), then checked the
same way. Results are values (``Path`` or :class:`~pipeline.operators.schema.Rejected`), never
exceptions.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from pipeline.model_signing import signature_problem
from pipeline.operators.schema import Rejected
from pipeline.settings import EdgeSettings, ModelRef, MqttSettings

log = logging.getLogger(__name__)
CHUNK = 64 * 1024
PART_MAX_AGE_S = 24 * 3600.0


def edge_version() -> str:
    try:
        return metadata.version("edge-vision-pipeline")
    except metadata.PackageNotFoundError:
        return "0.1.0"


def _version_tuple(v: str) -> tuple[int, ...]:
    out = []
    for part in v.split("."):
        digits = "".join(ch for ch in part if ch.isdigit())
        out.append(int(digits) if digits else 0)
    return tuple(out)


def version_at_least(have: str, need: str) -> bool:
    return _version_tuple(have) >= _version_tuple(need)


@dataclass(frozen=True, slots=True)
class Transient:
    """A download attempt that failed in a way another attempt may not (network error, HTTP 5xx).

    A value of its own rather than a ``Rejected`` reason, so the retry loop branches on the type."""

    detail: str


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


class ModelStore:
    """Node-wide download cache; one download per file at a time (cameras may ask together)."""

    def __init__(
        self, edge: EdgeSettings, stop: threading.Event | None = None, *, mqtt: MqttSettings | None = None
    ) -> None:
        self.root = edge.model_dir
        self.mqtt = mqtt  # the node's broker, for mqtt:// references
        self.node_id = edge.node_id
        self.max_bytes = edge.model_max_bytes
        self.timeout_s = edge.model_download_timeout_s
        self.attempts = edge.model_download_attempts
        self.keep = edge.model_keep_versions
        self.signing_key = edge.model_signing_key
        self.stop = stop or threading.Event()
        self._locks: dict[str, threading.Lock] = {}
        self._lock = threading.Lock()
        self._in_use: dict[str, set[Path]] = {}  # camera -> files it has loaded (active, previous)
        self._chunk_stats: Counter[str] = Counter()  # chunks_received|reused|rejected|duplicate, node-wide

    def path_for(self, ref: ModelRef) -> Path:
        return self.root / f"{ref.name}-{ref.version}-{ref.sha256[:16]}.tflite"

    def _file_lock(self, path: Path) -> threading.Lock:
        with self._lock:
            return self._locks.setdefault(path.name, threading.Lock())

    def fetch(self, ref: ModelRef) -> Path | Rejected:
        """The verified file of ``ref``: from disk when it is there, else downloaded."""
        if ref.size > self.max_bytes:
            return Rejected("too_large", f"{ref.size} bytes > edge.model_max_bytes {self.max_bytes}")
        if not version_at_least(edge_version(), ref.min_edge_version):
            return Rejected("edge_too_old", f"needs edge >= {ref.min_edge_version}, this is {edge_version()}")
        problem = signature_problem(ref, self.signing_key)
        if problem is not None:  # before any byte is fetched, let alone loaded
            return Rejected("bad_signature", problem)
        path = self.path_for(ref)
        with self._file_lock(path):
            if path.is_file():
                if path.stat().st_size == ref.size and file_sha256(path) == ref.sha256:
                    return path
                path.unlink()  # damaged on disk: fetch again
            self.root.mkdir(parents=True, exist_ok=True)
            if ref.url.startswith("mqtt://"):
                got = self._download_chunks(ref, path.with_name(path.name + ".mqtt.part"))
            else:
                got = self._download(ref, path.with_name(path.name + ".part"))
            if isinstance(got, Rejected):
                return got
            got.replace(path)
            return path

    def _download(self, ref: ModelRef, part: Path) -> Path | Rejected:
        last = "no attempt"
        for attempt in range(self.attempts):
            if self.stop.is_set():
                return Rejected("stopped", "edge stopping")
            have = part.stat().st_size if part.is_file() else 0
            if have > ref.size:
                part.unlink()
                have = 0
            if have < ref.size:
                result = self._request(ref, part, have)
                if isinstance(result, Transient):  # another attempt may work: keep what arrived
                    last = result.detail
                    log.info("model %s: download attempt %d: %s", ref.tag, attempt + 1, last)
                    self.stop.wait(min(5.0, 0.2 * 2**attempt))
                    continue
                if isinstance(result, Rejected):
                    if result.reason != "stopped":  # stopped: keep the part file, resumed next time
                        part.unlink(missing_ok=True)
                    return result
            size = part.stat().st_size
            if size != ref.size:
                last = f"got {size} of {ref.size} bytes"
                continue
            digest = file_sha256(part)
            if digest != ref.sha256:
                part.unlink()
                return Rejected("checksum_mismatch", f"sha256 {digest[:16]}… is not the published {ref.sha256[:16]}…")
            return part
        part.unlink(missing_ok=True)
        return Rejected("download_failed", f"{self.attempts} attempts: {last}"[:300])

    def _download_chunks(self, ref: ModelRef, part: Path) -> Path | Rejected:
        from pipeline.edge_stage.chunk_download import ChunkDownload

        if self.mqtt is None:
            return Rejected("download_failed", "an mqtt:// model reference, but this store has no MQTT settings")
        return ChunkDownload(
            ref,
            part,
            self.mqtt,
            client_id=f"{self.node_id}-model-{uuid.uuid4().hex[:6]}",
            max_bytes=self.max_bytes,
            timeout_s=self.timeout_s,
            attempts=self.attempts,
            stop=self.stop,
            count=self._count_chunks,
        ).run()

    def _count_chunks(self, key: str, n: int) -> None:
        with self._lock:
            self._chunk_stats[key] += n

    def chunk_stats(self) -> dict[str, int]:
        """Chunks over MQTT since start: received (verified, written), reused (already on disk),
        rejected (bad sha256 or header), duplicate."""
        with self._lock:
            return dict(self._chunk_stats)

    def _request(self, ref: ModelRef, part: Path, have: int) -> Rejected | Transient | None:
        """Append to ``part`` from byte ``have``: None when done, Transient when another attempt
        may succeed (network errors, 5xx), Rejected when it cannot (4xx, size, stopping)."""
        req = urllib.request.Request(ref.url, headers={"Range": f"bytes={have}-"} if have else {})  # noqa: S310
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:  # noqa: S310 (http/https checked by ModelRef)
                if resp.status == 200 and have:
                    have = 0  # no range support: start over
                elif resp.status not in (200, 206):
                    return Rejected("download_failed", f"HTTP {resp.status}")
                declared = resp.headers.get("Content-Length")
                if declared is not None and declared.isdigit() and have + int(declared) > ref.size:
                    return Rejected(
                        "size_mismatch", f"server offers {have + int(declared)} bytes, published {ref.size}"
                    )
                with part.open("r+b" if have else "wb") as f:
                    f.seek(have)
                    f.truncate()
                    total = have
                    while block := resp.read(CHUNK):
                        total += len(block)
                        if total > ref.size:
                            return Rejected("size_mismatch", f"more than the published {ref.size} bytes")
                        f.write(block)
                        if self.stop.is_set():
                            return Rejected("stopped", "edge stopping")
        except urllib.error.HTTPError as exc:
            exc.close()
            if exc.code == 416 and have == ref.size:
                return None
            if 400 <= exc.code < 500:
                return Rejected("download_failed", f"HTTP {exc.code} {ref.url}"[:300])
            return Transient(f"HTTP {exc.code}")
        except (urllib.error.URLError, OSError, TimeoutError) as exc:
            return Transient(f"{type(exc).__name__}: {exc}"[:200])
        return None

    # ------------------------------------------------------------------ disk bound

    def set_in_use(self, cam: str, paths: set[Path]) -> None:
        with self._lock:
            self._in_use[cam] = paths
        self.prune()

    def prune(self) -> None:
        """Keep the files in use and the newest ``keep`` others; delete the rest."""
        with self._lock:
            used = set().union(*self._in_use.values()) if self._in_use else set()
        try:
            files = sorted(self.root.glob("*.tflite"), key=lambda p: p.stat().st_mtime, reverse=True)
        except OSError:
            return
        spare = [p for p in files if p not in used]
        for old in spare[self.keep :]:
            old.unlink(missing_ok=True)
            log.info("model file %s pruned", old.name)
        # Partial downloads are kept so a retry resumes; one untouched for a day was abandoned
        # (its version is no longer wanted) and would otherwise fill the disk over the months.
        cutoff = time.time() - PART_MAX_AGE_S
        for part in [*self.root.glob("*.part")]:
            try:
                if part.stat().st_mtime < cutoff:
                    part.unlink()
                    log.info("abandoned partial download %s removed", part.name)
            except OSError:
                continue
