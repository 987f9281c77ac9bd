"""Live model updates of one camera: shadow load, smoke test, atomic swap, rollback.

The camera's config (``CameraSettings.model``, a :class:`~pipeline.settings.ModelRef` or None
for the packaged model) names the model it should run. When it changes, a background thread of
the camera (never the frame loop):

1. gets the file from the :class:`~pipeline.edge_stage.model_download.ModelStore` (size cap,
   resumable download, sha256 checked before anything loads it);
2. loads it in a *shadow* interpreter (a second :class:`CenterNetDetector`);
3. smoke-tests it on the camera's last frame (or a synthetic frame before the first one): the
   output is [100, 6], every value finite, scores within [0, 1], classes within the label set;
4. hands it to the frame loop, which swaps it in between two frames (:meth:`CameraModels.poll`).

Any failure keeps the running model and is reported (``on_report``: the camera's status topic).
The model that was replaced stays loaded and its file stays on disk: a config naming it again
swaps back at once, and ``edge.model_max_failures`` consecutive inference errors of a
downloaded model restore it automatically and quarantine the failed version on disk
(:mod:`~pipeline.edge_stage.model_quarantine`), so a restart does not try it again while the
retained config still names it. Events carry the active model's ``name@version``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.edge_stage.capture import Image
from pipeline.edge_stage.detectors.base import Detector
from pipeline.edge_stage.model_download import ModelStore
from pipeline.edge_stage.model_quarantine import Quarantine
from pipeline.errors import ModelError
from pipeline.operators.coco import COCO80
from pipeline.operators.schema import Rejected
from pipeline.settings import EdgeSettings, ModelRef

log = logging.getLogger(__name__)
# (outcome "active" | "rejected" | "rolled_back", status reason for people, the new active tag or None)
Report = Callable[[str, str, "str | None"], None]


@dataclass(slots=True)
class LoadedModel:
    ref: ModelRef | None  # None: the packaged model (edge.detector)
    detector: Detector
    path: Path | None = None

    @property
    def tag(self) -> str:
        return self.detector.tag


def same_model(a: ModelRef | None, b: ModelRef | None) -> bool:
    if a is None or b is None:
        return a is b
    return (a.name, a.version, a.sha256) == (b.name, b.version, b.sha256)


def synthetic_frame() -> Image:
    """A deterministic 640x480 frame for a smoke test before the camera delivered one."""
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)


def smoke_test(detector: Detector, frame: Image) -> Rejected | None:
    """Run the model once on ``frame``; None when its output is well-formed."""
    raw = getattr(detector, "raw", None)
    try:
        out = raw(frame)[0] if raw is not None else None
        dets = detector.detect(frame) if raw is None else None
    except Exception as exc:
        return Rejected("smoke_test_failed", f"inference raised {exc!r}"[:300])
    if out is None:
        return None if dets is not None else Rejected("smoke_test_failed", "no output")
    arr = np.asarray(out)
    if arr.ndim != 2 or arr.shape[1] != 6 or arr.shape[0] < 1:
        return Rejected("smoke_test_failed", f"output shape {arr.shape}, expected [N, 6]")
    if not np.isfinite(arr).all():
        return Rejected("smoke_test_failed", "non-finite values in the output")
    scores, classes = arr[:, 4], arr[:, 5]
    if scores.min() < -1e-3 or scores.max() > 1 + 1e-3:
        return Rejected("smoke_test_failed", f"scores outside [0, 1]: {scores.min():.3g}..{scores.max():.3g}")
    if classes.min() < 0 or classes.max() >= len(COCO80):
        return Rejected("smoke_test_failed", f"class ids outside 0..{len(COCO80) - 1}")
    return None


class CameraModels:
    """The active model of one camera, the one it replaced, and the update in progress."""

    def __init__(
        self,
        cam: str,
        edge: EdgeSettings,
        store: ModelStore,
        make_default: Callable[[], Detector],
        on_report: Report,
        quarantine: Quarantine | None = None,
    ) -> None:
        self.cam, self.edge, self.store = cam, edge, store
        self.quarantine = quarantine or Quarantine(edge.model_dir)
        self.make_default = make_default
        self.on_report = on_report
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._closed = threading.Event()
        self._desired: tuple[ModelRef | None] | None = None  # latest request not yet handled
        self._pending: LoadedModel | None = None  # ready, waiting for the frame loop
        self.active: LoadedModel | None = None
        self.previous: LoadedModel | None = None
        self.last_frame: Image | None = None
        self.state = "idle"  # idle | fetching | loading | ready | rejected
        self.last_error = ""
        self.failures = 0
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ any thread

    def request(self, ref: ModelRef | None) -> None:
        """Run ``ref`` (None: the packaged model) as soon as it is fetched, loaded and tested."""
        with self._lock:
            self._desired = (ref,)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=f"model-{self.cam}", daemon=True)
                self._thread.start()
        self._wake.set()

    def snapshot(self) -> dict[str, str | int | None]:
        with self._lock:
            return {
                "model_previous": self.previous.tag if self.previous else None,
                "model_update": self.state,
                "model_error": self.last_error or None,
                "model_failures": self.failures,
            }

    # ------------------------------------------------------------------ frame loop (camera thread)

    def start(self, default: Detector) -> Detector:
        with self._lock:
            self.active = LoadedModel(None, default)
        self._publish_in_use()
        return default

    def poll(self) -> Detector | None:
        """The new detector when an update is ready (swapped in now), else None."""
        with self._lock:
            new, self._pending = self._pending, None
            if new is None:
                return None
            old_prev = self.previous
            if new is self.previous:  # back to the previous one: swap the two
                self.previous = self.active
            else:
                self.previous = self.active
                if old_prev is not None and old_prev is not self.active:
                    old_prev.detector.close()
            self.active = new
            self.failures = 0
            self.state = "idle"
            prev_tag = self.previous.tag if self.previous else "none"
        self._publish_in_use()
        log.info("camera %s: model %s active (previous %s)", self.cam, new.tag, prev_tag)
        self.on_report("active", f"model {new.tag} active (previous {prev_tag})", new.tag)
        return new.detector

    def on_success(self) -> None:
        self.failures = 0

    def on_error(self, exc: Exception) -> Detector | None:
        """An inference error of the active model. Returns the restored detector after
        ``edge.model_max_failures`` consecutive errors of a downloaded model; re-raises when the
        packaged model itself fails (nothing to fall back to)."""
        with self._lock:
            active = self.active
            if active is None or active.ref is None:
                raise exc
            self.failures += 1
            n = self.failures
            if n < self.edge.model_max_failures:
                log.warning("camera %s: model %s inference error %d/%d: %r", self.cam, active.tag, n,
                            self.edge.model_max_failures, exc)  # fmt: skip
                return None
            restored = self.previous
            if restored is None:
                raise exc
            self.previous, self.active = active, restored
            self.failures = 0
            self.state = "rejected"
            self.last_error = f"rolled_back: {active.tag} failed {n} times: {exc!r}"[:300]
        assert active.ref is not None
        self.quarantine.add(active.ref, self.cam, f"{n} consecutive inference errors, last {exc!r}")
        log.error("camera %s: model %s failed %d times (%r); restored %s", self.cam, active.tag, n, exc, restored.tag)
        why = f"model {active.tag} rolled back to {restored.tag}: {n} inference errors: {exc!r}"[:300]
        self.on_report("rolled_back", why, restored.tag)
        self._publish_in_use()
        return restored.detector

    def close(self) -> None:
        self._closed.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(10)
        with self._lock:
            for m in {id(x): x for x in (self.active, self.previous, self._pending) if x is not None}.values():
                m.detector.close()
            self.active = self.previous = self._pending = None

    # ------------------------------------------------------------------ background thread

    def _publish_in_use(self) -> None:
        with self._lock:
            paths = {m.path for m in (self.active, self.previous, self._pending) if m is not None and m.path}
        self.store.set_in_use(self.cam, paths)

    def _run(self) -> None:
        while not self._closed.is_set():
            self._wake.wait(0.5)
            self._wake.clear()
            with self._lock:
                desired, self._desired = self._desired, None
            if desired is None:
                continue
            try:
                self._prepare(desired[0])
            except Exception as exc:  # a bug must not kill the update thread silently
                log.exception("camera %s: model update failed", self.cam)
                self._reject(desired[0], Rejected("internal_error", repr(exc)[:200]))

    def _reject(self, ref: ModelRef | None, why: Rejected) -> None:
        tag = ref.tag if ref is not None else "packaged model"
        with self._lock:
            self.state = "rejected"
            self.last_error = f"{why.reason}: {why.detail}"[:300]
        log.warning("camera %s: model %s rejected: %s %s", self.cam, tag, why.reason, why.detail)
        self.on_report("rejected", f"model {tag} rejected: {why.reason}: {why.detail}"[:300], None)

    def _prepare(self, ref: ModelRef | None) -> None:
        with self._lock:
            if self.active is not None and same_model(ref, self.active.ref):
                self._pending = None  # a swap to something else that is not needed any more
                self.state = "idle"
                return
            if self.previous is not None and same_model(ref, self.previous.ref):
                self._pending = self.previous  # rollback: still loaded, its file still on disk
                self.state = "ready"
                return
            self.state = "fetching"
        path: Path | None = None
        if ref is not None:
            quarantined = self.quarantine.reason(ref)
            if quarantined is not None:
                self._reject(ref, Rejected("quarantined", f"rolled back on this node earlier: {quarantined}"))
                return
            if ref.labels != "coco80":
                self._reject(ref, Rejected("unknown_labels", f"label set {ref.labels!r}; this edge knows coco80"))
                return
            got = self.store.fetch(ref)
            if isinstance(got, Rejected):
                self._reject(ref, got)
                return
            path = got
        with self._lock:
            self.state = "loading"
        try:
            detector = self._load(ref, path)
        except ModelError as exc:
            self._reject(ref, Rejected("load_failed", str(exc)[:300]))
            return
        frame = self.last_frame if self.last_frame is not None else synthetic_frame()
        bad = smoke_test(detector, frame)
        if bad is not None:
            detector.close()
            self._reject(ref, bad)
            return
        with self._lock:
            if self._desired is not None:  # superseded while we worked: drop this one
                detector.close()
                return
            self._pending = LoadedModel(ref, detector, path)
            self.state = "ready"
            self.last_error = ""
        self._publish_in_use()

    def _load(self, ref: ModelRef | None, path: Path | None) -> Detector:
        if ref is None or path is None:
            return self.make_default()
        from pipeline.edge_stage.detectors.tflite_centernet import CenterNetDetector

        return CenterNetDetector(
            path,
            name=ref.name,
            version=ref.version,
            num_threads=self.edge.detector_threads,
            runtime=self.edge.detector_runtime,
            precision=self.edge.detector_precision,
        )
