"""The model registry: a directory of model versions the edges can be told to run.

Layout (one directory per version, written once, never changed)::

    <registry.dir>/<name>/<version>/<file>        the model file (.tflite)
    <registry.dir>/<name>/<version>/meta.json     name, version, file, sha256, size, labels,
                                                  input_size, min_edge_version, added (epoch ms)

:func:`model_ref` turns an entry into the reference the edge gets in its config
(:class:`~pipeline.settings.ModelRef`: name, version, sha256, size, url).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pipeline.errors import ConfigError
from pipeline.settings import ModelRef

META = "meta.json"
ID_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-")


@dataclass(frozen=True, slots=True)
class ModelEntry:
    name: str
    version: str
    file: str
    sha256: str
    size: int
    labels: str
    input_size: tuple[int, int]
    min_edge_version: str
    added: int  # epoch ms

    @property
    def tag(self) -> str:
        return f"{self.name}@{self.version}"

    def url_path(self) -> str:
        return f"/models/{self.name}/{self.version}/{self.file}"


def sha256_of(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _check_id(kind: str, value: str) -> None:
    if not value or len(value) > 64 or set(value) - ID_CHARS or value in {".", ".."}:
        raise ConfigError(f"bad model {kind} {value!r}: use 1-64 of A-Z a-z 0-9 _ . -")


def tflite_input_size(path: Path) -> tuple[int, int] | None:
    """(width, height) of a TFLite model's input, or None when it cannot be read here."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:  # the cloud image has TensorFlow, not ai-edge-litert
        try:
            from tensorflow.lite import Interpreter
        except ImportError:
            return None
    try:
        shape = Interpreter(model_path=str(path)).get_input_details()[0]["shape"]
    except (ValueError, RuntimeError):
        return None
    return (int(shape[2]), int(shape[1])) if len(shape) == 4 else None


class ModelRegistry:
    def __init__(self, root: Path) -> None:
        self.root = root

    def add(
        self,
        file: Path,
        name: str,
        version: str,
        *,
        labels: str = "coco80",
        input_size: tuple[int, int] | None = None,
        min_edge_version: str = "0",
    ) -> ModelEntry:
        """Copy ``file`` in as ``name``/``version`` (refused if that version exists)."""
        _check_id("name", name)
        _check_id("version", version)
        if not file.is_file():
            raise ConfigError(f"model file not found: {file}")
        size_wh = input_size or tflite_input_size(file)
        if size_wh is None:
            raise ConfigError(f"cannot read the input size of {file}; pass --input-size W,H")
        target = self.root / name / version
        if target.exists():
            raise ConfigError(f"{name}@{version} is already in the registry ({target}); versions never change")
        tmp = self.root / name / f".{version}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        shutil.copyfile(file, tmp / file.name)
        entry = ModelEntry(
            name=name,
            version=version,
            file=file.name,
            sha256=sha256_of(tmp / file.name),
            size=(tmp / file.name).stat().st_size,
            labels=labels,
            input_size=(int(size_wh[0]), int(size_wh[1])),
            min_edge_version=min_edge_version,
            added=int(time.time() * 1000),
        )
        (tmp / META).write_text(json.dumps(asdict(entry), indent=2) + "\n")
        tmp.rename(target)  # a version appears complete or not at all
        return entry

    def entries(self) -> list[ModelEntry]:
        out = []
        for meta in sorted(self.root.glob(f"*/*/{META}")):
            entry = self._read(meta)
            if entry is not None:
                out.append(entry)
        return sorted(out, key=lambda e: (e.name, e.added, e.version))

    def get(self, name: str, version: str) -> ModelEntry:
        _check_id("name", name)
        _check_id("version", version)
        entry = self._read(self.root / name / version / META)
        if entry is None:
            known = ", ".join(e.tag for e in self.entries()) or "none"
            raise ConfigError(f"{name}@{version} is not in the registry {self.root} (known: {known})")
        return entry

    def path_of(self, entry: ModelEntry) -> Path:
        return self.root / entry.name / entry.version / entry.file

    @staticmethod
    def _read(meta: Path) -> ModelEntry | None:
        try:
            d: Any = json.loads(meta.read_text())
            d["input_size"] = tuple(d["input_size"])
            return ModelEntry(**d)
        except (OSError, ValueError, TypeError, KeyError):
            return None


def model_ref(entry: ModelEntry, base_url: str) -> ModelRef:
    return ModelRef(
        name=entry.name,
        version=entry.version,
        sha256=entry.sha256,
        size=entry.size,
        url=base_url.rstrip("/") + entry.url_path(),
        labels=entry.labels,
        min_edge_version=entry.min_edge_version,
    )
