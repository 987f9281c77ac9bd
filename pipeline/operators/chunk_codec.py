"""Model files as chunks over MQTT: the manifest and chunk codec shared by registry and edge.

Topics (:class:`~pipeline.topics.Topics`): ``<prefix>/models/<name>/<version>/manifest`` and
``<prefix>/models/<name>/<version>/<index>``, all retained, QoS 1. A model reference points at
them with the URL ``mqtt://models/<name>/<version>`` (relative to the edge's own broker and
topic prefix, so nothing in it can reach another broker or a wildcard).

- Manifest (JSON): ``{"v":1,"name","version","size","sha256","chunk_size","chunks",
  "chunk_sha256":[hex, ...]}``. Every chunk but the last is ``chunk_size`` bytes.
- Chunk (binary): a 44-byte header ``b"PMC1"``, index (u32 BE), chunk count (u32 BE), the raw
  sha256 of the whole file (32 bytes), then the data. The header ties a chunk to one file, so a
  stale retained chunk of another build under the same topic is refused before it is hashed.

Bounds: ``MIN_CHUNK_BYTES`` <= chunk_size <= ``MAX_CHUNK_BYTES`` (1 MiB, far under Mosquitto's
default limits: ``message_size_limit`` 0 = none, the protocol's 256 MB), at most ``MAX_CHUNKS``
chunks, a manifest of at most ``MAX_MANIFEST_BYTES``. Results are values, never exceptions.
"""

from __future__ import annotations

import hashlib
import json
import re
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

from pipeline.operators.schema import Rejected, decode_json_object

MIN_CHUNK_BYTES = 16 * 1024
MAX_CHUNK_BYTES = 1024 * 1024
DEFAULT_CHUNK_BYTES = 128 * 1024
MAX_CHUNKS = 4096
# 4096 hex digests at 67 bytes each stay under this
MAX_MANIFEST_BYTES = 512 * 1024
MAGIC = b"PMC1"
HEADER = struct.Struct(">4sII32s")

_ID = r"[A-Za-z0-9_.-]{1,64}"
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_ID_RE = re.compile(rf"^{_ID}$")
MQTT_URL_PATTERN = rf"mqtt://models/{_ID}/{_ID}"
_MQTT_URL = re.compile(rf"^mqtt://models/({_ID})/({_ID})$")


def mqtt_url(name: str, version: str) -> str:
    return f"mqtt://models/{name}/{version}"


def parse_mqtt_url(url: str) -> tuple[str, str] | None:
    """``(name, version)`` of the chunk topics an ``mqtt://`` model URL names, else None."""
    m = _MQTT_URL.match(url)
    return (m.group(1), m.group(2)) if m else None


@dataclass(frozen=True, slots=True)
class Manifest:
    name: str
    version: str
    size: int
    sha256: str
    chunk_size: int
    chunk_sha256: tuple[str, ...]

    @property
    def chunks(self) -> int:
        return len(self.chunk_sha256)

    def span(self, index: int) -> tuple[int, int]:
        """``(offset, length)`` of chunk ``index`` in the file."""
        offset = index * self.chunk_size
        return offset, min(self.chunk_size, self.size - offset)


@dataclass(frozen=True, slots=True)
class Chunk:
    index: int
    data: memoryview  # a view into the received payload: no copy of up to 1 MiB


def chunk_count(size: int, chunk_size: int) -> int:
    return -(-size // chunk_size)


def check_chunk_size(chunk_size: int) -> str | None:
    if not MIN_CHUNK_BYTES <= chunk_size <= MAX_CHUNK_BYTES:
        return f"chunk size {chunk_size} outside {MIN_CHUNK_BYTES}..{MAX_CHUNK_BYTES} bytes"
    return None


def manifest_of(name: str, version: str, f: BinaryIO, chunk_size: int) -> Manifest:
    """Hash ``f`` chunk by chunk (one chunk in memory) into its manifest."""
    whole = hashlib.sha256()
    digests, size = [], 0
    while block := f.read(chunk_size):
        whole.update(block)
        digests.append(hashlib.sha256(block).hexdigest())
        size += len(block)
    return Manifest(name, version, size, whole.hexdigest(), chunk_size, tuple(digests))


def encode_manifest(m: Manifest) -> bytes:
    obj = {"v": 1, "name": m.name, "version": m.version, "size": m.size, "sha256": m.sha256,
           "chunk_size": m.chunk_size, "chunks": m.chunks, "chunk_sha256": list(m.chunk_sha256)}  # fmt: skip
    return json.dumps(obj, separators=(",", ":")).encode()


def _int(obj: dict[str, object], key: str) -> int | None:
    v = obj.get(key)
    return v if type(v) is int else None


def decode_manifest(raw: bytes) -> Manifest | Rejected:
    obj = decode_json_object(raw, max_bytes=MAX_MANIFEST_BYTES)
    if isinstance(obj, Rejected):
        return obj
    keys = {"v", "name", "version", "size", "sha256", "chunk_size", "chunks", "chunk_sha256"}
    if set(obj) != keys:
        return Rejected("bad_manifest", f"keys {sorted(set(obj) ^ keys)} missing or unknown"[:200])
    name, version, sha = obj["name"], obj["version"], obj["sha256"]
    if not isinstance(name, str) or not _ID_RE.match(name) or not isinstance(version, str) or not _ID_RE.match(version):
        return Rejected("bad_manifest", "name/version")
    if not isinstance(sha, str) or not _HEX64.match(sha):
        return Rejected("bad_manifest", "sha256")
    size, chunk_size, chunks = _int(obj, "size"), _int(obj, "chunk_size"), _int(obj, "chunks")
    if size is None or size < 1 or chunk_size is None or chunks is None:
        return Rejected("bad_manifest", "size, chunk_size and chunks must be positive integers")
    if (problem := check_chunk_size(chunk_size)) is not None:
        return Rejected("bad_manifest", problem)
    if not 1 <= chunks <= MAX_CHUNKS or chunks != chunk_count(size, chunk_size):
        return Rejected("bad_manifest", f"{chunks} chunks for {size} bytes of {chunk_size} (at most {MAX_CHUNKS})")
    digests = obj["chunk_sha256"]
    if not isinstance(digests, list) or len(digests) != chunks:
        return Rejected("bad_manifest", "chunk_sha256 must list one digest per chunk")
    if not all(isinstance(d, str) and _HEX64.match(d) for d in digests):
        return Rejected("bad_manifest", "chunk_sha256 entries must be sha256 hex digests")
    return Manifest(name, version, size, sha, chunk_size, tuple(digests))


def encode_chunk(index: int, chunks: int, file_sha256: str, data: bytes) -> bytes:
    return HEADER.pack(MAGIC, index, chunks, bytes.fromhex(file_sha256)) + data


def decode_chunk(raw: bytes, manifest: Manifest) -> Chunk | Rejected:
    """The chunk in ``raw`` if it belongs to ``manifest``'s file and its bytes hash right."""
    if len(raw) < HEADER.size:
        return Rejected("bad_chunk", f"{len(raw)} bytes, shorter than the header")
    magic, index, chunks, file_sha = HEADER.unpack_from(raw)
    if magic != MAGIC:
        return Rejected("bad_chunk", "not a model chunk")
    if chunks != manifest.chunks or file_sha.hex() != manifest.sha256:
        return Rejected("bad_chunk", "belongs to another file than the manifest")
    if index >= manifest.chunks:
        return Rejected("bad_chunk", f"index {index} >= {manifest.chunks}")
    data = memoryview(raw)[HEADER.size :]
    expected = manifest.span(index)[1]
    if len(data) != expected:
        return Rejected("bad_chunk", f"chunk {index}: {len(data)} bytes, manifest says {expected}")
    digest = hashlib.sha256(data).hexdigest()
    if digest != manifest.chunk_sha256[index]:
        return Rejected("chunk_mismatch", f"chunk {index}: sha256 {digest[:16]}… is not the manifest's"
                                          f" {manifest.chunk_sha256[index][:16]}…")  # fmt: skip
    return Chunk(index, data)


def iter_chunks(f: BinaryIO, manifest: Manifest) -> Iterator[tuple[int, bytes]]:
    """``(index, payload)`` of each chunk of ``f``, read one at a time."""
    for index in range(manifest.chunks):
        data = f.read(manifest.chunk_size)
        yield index, encode_chunk(index, manifest.chunks, manifest.sha256, data)
