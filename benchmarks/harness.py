"""What every benchmark shares: the run context (quick or full, output folder, progress lines),
the local stack started once, settings isolated per benchmark, clips made for a benchmark, and
small statistics helpers.
"""

from __future__ import annotations

import statistics
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from benchmarks.table import Row
from pipeline.settings import SAMPLE_CLIP, Settings


@dataclass
class BenchResult:
    rows: list[Row]
    series: dict[str, Any] = field(default_factory=dict)  # raw data for the plots and results.json


@dataclass
class Context:
    quick: bool
    out_dir: Path
    work_dir: Path  # scratch: clips, outboxes, child logs
    print_fn: Callable[[str], Any] = print
    options: dict[str, Any] = field(default_factory=dict)  # benchmark-specific flags (e.g. --gt)
    _stack: Any = None
    _started: float = field(default_factory=time.monotonic)

    @property
    def repeats(self) -> int:
        return 1 if self.quick else 3

    def log(self, msg: str) -> None:
        self.print_fn(f"[{time.monotonic() - self._started:6.1f}s] {msg}")
        sys.stdout.flush()

    # ------------------------------------------------------------------ stack

    def stack_settings(self) -> Settings:
        """Settings wired to the local stack (Mosquitto, Tansu, model server), started on first use."""
        if self._stack is None:
            from pipeline.local_stack.stack import LocalStack

            self.log("starting the local stack (Mosquitto, Tansu, model server)")
            stack = LocalStack(Settings(), self.work_dir / "stack")
            stack.start()
            self._stack = stack
            self.log(
                f"stack up: MQTT {stack.settings.mqtt.host}:{stack.settings.mqtt.port}"
                f" Kafka {stack.settings.kafka.bootstrap_servers} model {stack.settings.model_server.address}"
            )
        settings: Settings = self._stack.settings
        return settings

    def fresh_settings(self, tag: str, **sections: dict[str, Any]) -> Settings:
        """Stack settings with a unique MQTT prefix, unique Kafka topics (created) and ids."""
        from pipeline.local_stack.kafka_topics import ensure_topics
        from pipeline.local_stack.ports import LOOPBACK, free_port

        base = self.stack_settings()
        prefix = f"b{tag}{uuid.uuid4().hex[:6]}"
        run = self.work_dir / prefix
        run.mkdir(parents=True, exist_ok=True)
        data = base.model_dump()
        wired: dict[str, dict[str, Any]] = {
            "mqtt": {"topic_prefix": prefix},
            "kafka": {
                f"{k}_topic": f"{prefix}.{k.replace('_', '')}" for k in ("events", "alerts", "config", "dead_letter")
            },
            "edge": {"node_id": f"{prefix}-node", "outbox_path": run / "outbox.sqlite", "final_ack_wait_s": 5.0},
            "bridge": {"client_id": f"{prefix}-bridge", "shared_group": f"{prefix}-bridges"},
            "cloud": {"app_id": f"{prefix}-cloud", "data_dir": run / "faust", "web_port": free_port(LOOPBACK)},
            "local": {"run_dir": run},
        }
        for name, update in sections.items():
            wired.setdefault(name, {}).update(update)
        for name, update in wired.items():
            data[name] = {**data[name], **update}
        # secrets are dumped masked by model_dump; the local stack has none
        settings = Settings(**data)
        ensure_topics(settings.kafka)
        return settings

    def close(self) -> None:
        if self._stack is not None:
            self.log("stopping the local stack")
            self._stack.stop()
            self._stack = None


# --------------------------------------------------------------------------- statistics


def median(xs: Iterable[float | None]) -> float | None:
    vals = [x for x in xs if x is not None]
    return statistics.median(vals) if vals else None


def quantile(xs: Sequence[float], q: float) -> float | None:
    """Linear-interpolated quantile (numpy's default); None for no data."""
    if not len(xs):
        return None
    return float(np.quantile(np.asarray(xs, dtype=np.float64), q))


def ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000.0


# --------------------------------------------------------------------------- clips


def clip_info(path: Path = SAMPLE_CLIP) -> tuple[float, int, int, int]:
    """(fps, frames, width, height) of a video file."""
    cap = cv2.VideoCapture(str(path))
    try:
        return (
            cap.get(cv2.CAP_PROP_FPS) or 25.0,
            int(cap.get(cv2.CAP_PROP_FRAME_COUNT)),
            int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)),
            int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)),
        )
    finally:
        cap.release()


def _writer(path: Path, fps: float, w: int, h: int, fourcc: str = "mp4v") -> cv2.VideoWriter:
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*fourcc), fps, (w, h))
    if fourcc == "MJPG":
        writer.set(cv2.VIDEOWRITER_PROP_QUALITY, 95)
    if not writer.isOpened():
        raise RuntimeError(f"cannot write {path}")
    return writer


def still_clip(path: Path, seconds: float, *, noise_sigma: float = 2.0, source: Path = SAMPLE_CLIP) -> Path:
    """A "still scene": the source's first frame repeated, with small Gaussian noise per frame."""
    if path.exists():
        return path
    fps, _, w, h = clip_info(source)
    cap = cv2.VideoCapture(str(source))
    ok, first = cap.read()
    cap.release()
    if not ok:
        raise RuntimeError(f"cannot read {source}")
    rng = np.random.default_rng(7)
    writer = _writer(path, fps, w, h)
    try:
        for _ in range(round(seconds * fps)):
            noisy = first.astype(np.float32) + rng.normal(0.0, noise_sigma, first.shape).astype(np.float32)
            writer.write(np.clip(noisy, 0, 255).astype(np.uint8))
    finally:
        writer.release()
    return path


def cut_clip(
    path: Path, seconds: float, source: Path = SAMPLE_CLIP, *, frames: int | None = None, fourcc: str = "mp4v"
) -> Path:
    """The first ``seconds`` (or ``frames``) of ``source``, re-encoded with ``fourcc`` (MJPG keeps
    detail for accuracy work; mp4v is smaller)."""
    if path.exists():
        return path
    fps, _, w, h = clip_info(source)
    cap = cv2.VideoCapture(str(source))
    writer = _writer(path, fps, w, h, fourcc)
    try:
        for _ in range(frames if frames is not None else round(seconds * fps)):
            ok, frame = cap.read()
            if not ok:
                break
            writer.write(frame)
    finally:
        writer.release()
        cap.release()
    return path


# --------------------------------------------------------------------------- pipeline services

# what the commands log once they serve (pipeline/bridge/service.py, pipeline/cloud_stage/app.py)
BRIDGE_READY = r"bridge \S+ ready"
CLOUD_READY = r"cloud (stage|worker) ready"


def bridge_and_cloud(settings: Settings) -> tuple[Any, Any, Path]:
    """``pipeline bridge`` and ``pipeline cloud`` as child processes on ``settings`` (written to the
    run folder), not started: use them as context managers. Returns them and the run folder."""
    from pipeline.local_stack.pipeline_service import PipelineService

    run = Path(settings.local.run_dir)
    cfg = run / "settings.yaml"
    cfg.write_text(settings.to_yaml())
    bridge = PipelineService("bridge", run, cfg, ["bridge"], BRIDGE_READY, start_timeout_s=90)
    cloud = PipelineService("cloud", run, cfg, ["cloud"], CLOUD_READY, start_timeout_s=180)
    return bridge, cloud, run
