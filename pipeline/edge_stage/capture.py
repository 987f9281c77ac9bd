"""Frame sources: first step of the edge data path (capture -> motion gate -> detector -> ...).

A camera's ``source`` is a video file, a V4L2 device index (``"0"``) or an rtsp/http URL. Each is
read through :class:`Capture`, which

- samples frames at the camera's ``detect_fps``. Files that are not realtime are sampled by their
  own timestamps (every frame is decoded or grabbed, none waits on the wall clock), so a 20 s clip
  gives ``20 * detect_fps`` frames however fast this machine is;
- for live sources (and realtime files) runs a reader thread that keeps only the newest frame in a
  one-slot buffer; frames overwritten before they were taken are counted as dropped;
- checks every frame: ``None``/empty/non-BGR frames and frames whose size differs from the first
  one are counted as corrupt and skipped;
- reopens a failed source with exponential backoff and jitter, reporting ``reconnecting`` (and
  ``failed`` after ``reopen_attempts`` consecutive failures when that is set).

The OpenCV object is hidden behind :class:`VideoReader` so tests can inject sources that yield
garbage (see ``opener`` in :class:`Capture`).
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import cv2
import numpy as np
import numpy.typing as npt

from pipeline.errors import PipelineError, SourceError
from pipeline.metrics import Registry

log = logging.getLogger(__name__)

Image = npt.NDArray[Any]  # a BGR uint8 frame, H x W x 3 (OpenCV's stubs type pixels loosely)


class VideoReader(Protocol):
    """The part of ``cv2.VideoCapture`` this module uses."""

    def isOpened(self) -> bool: ...
    def read(self) -> tuple[bool, Any]: ...
    def grab(self) -> bool: ...
    # retrieve() (decode the grabbed frame to BGR) is used when the reader has it (cv2 does)
    def get(self, prop: int) -> float: ...
    def release(self) -> None: ...


Opener = Callable[[str, float], VideoReader]  # (source, network timeout in seconds)


# FFmpeg decoder threads per camera. FFmpeg's default is one per core, each with frame buffers of
# its own: measured with 4 cameras on the 768x576 sample clip, peak RSS 260 MB -> 216 MB with one
# (benchmarks/RESULTS.md, issue 18 session 4). A node runs more cameras than cores, so the cameras
# already keep the cores busy; threads inside one decoder only add memory and contention.
DECODE_THREADS = 1


def open_cv(source: str, timeout_s: float = 10.0) -> VideoReader:
    """Open a source with OpenCV: a digit string is a V4L2 index, anything else a path or URL.

    URLs get FFmpeg open and read timeouts: without them a server that accepts the connection
    and never answers holds the camera thread for FFmpeg's own ~30 s per attempt, and a stream
    that stalls mid-way blocks ``read()`` until TCP gives up."""
    if source.isdigit():
        return cv2.VideoCapture(int(source))
    threads = [cv2.CAP_PROP_N_THREADS, DECODE_THREADS]
    if "://" in source:
        ms = int(timeout_s * 1000)
        params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, ms, *threads]
        return cv2.VideoCapture(source, cv2.CAP_FFMPEG, params)
    cap = cv2.VideoCapture(source, cv2.CAP_FFMPEG, threads)
    # not FFmpeg's (an image sequence OpenCV reads itself): whatever backend takes it
    return cap if cap.isOpened() else cv2.VideoCapture(source)


def is_file_source(source: str) -> bool:
    """A video file (it ends; a missing one on the command line is a typo), not a camera index
    ("0"), a device node (``/dev/video0``: a V4L2 camera that is unplugged comes back, so it is
    retried like a stream) or a URL."""
    return not source.isdigit() and "://" not in source and not source.startswith("/dev/")


@dataclass(frozen=True, slots=True)
class Frame:
    image: Image  # BGR uint8, H x W x 3
    index: int  # frames read from this source so far (0-based, across reopens)
    pos_ms: float  # media time: position in the file, or wall time since start for live sources
    ts_ms: int  # capture time, epoch milliseconds


SourceStateName = Literal["online", "reconnecting", "failed", "ended"]


@dataclass(frozen=True, slots=True)
class SourceState:
    """A change of the source's health, reported through ``Capture.on_state``."""

    state: SourceStateName
    reason: str = ""


class Backoff:
    """Exponential backoff with full jitter: ``uniform(0, min(cap, base * 2**n))``, at least base/2."""

    def __init__(self, base_s: float = 0.5, cap_s: float = 10.0, rng: random.Random | None = None) -> None:
        self.base_s, self.cap_s, self.failures = base_s, cap_s, 0
        self._rng = rng or random.Random()  # noqa: S311 (jitter, not crypto)

    def next_delay(self) -> float:
        ceiling = min(self.cap_s, self.base_s * 2**self.failures)
        self.failures += 1
        return max(self.base_s / 2, self._rng.uniform(0, ceiling))

    def reset(self) -> None:
        self.failures = 0


def frame_problem(image: Image | None, expected: tuple[int, int] | None) -> str | None:
    """Why a decoded frame cannot be used, or None if it can. ``expected`` is (width, height)."""
    if image is None or not isinstance(image, np.ndarray):
        return "none"
    if image.size == 0 or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        return "malformed"
    if expected is not None and (image.shape[1], image.shape[0]) != expected:
        return "size_changed"
    return None


class Capture:
    """Sampled frames of one camera source; call :meth:`next` until it returns None (ended/stopped)."""

    def __init__(
        self,
        cam: str,
        source: str,
        *,
        detect_fps: Callable[[], float],
        loop: bool = False,
        realtime: bool | None = None,
        stop: threading.Event,
        metrics: Registry,
        on_state: Callable[[SourceState], None] = lambda s: None,
        opener: Opener = open_cv,
        reopen_attempts: int | None = None,
        stream_timeout_s: float = 10.0,
        backoff: Backoff | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.cam, self.source, self.loop = cam, source, loop
        self.is_file = is_file_source(source)
        self.realtime = (not self.is_file) if realtime is None else realtime
        self._detect_fps = detect_fps
        self._stop = stop
        self._metrics = metrics
        self._on_state = on_state
        self._opener = opener
        self._reopen_attempts = reopen_attempts
        self._stream_timeout_s = stream_timeout_s
        self._backoff = backoff or Backoff()
        self._clock = clock
        self._reader: VideoReader | None = None
        self._size: tuple[int, int] | None = None
        self._index = 0
        self._start_wall_ms = clock() * 1000.0
        self._pos_offset_ms = 0.0  # media time of earlier passes of a looping file
        self._last_pos_ms = 0.0
        self._next_due_ms = 0.0
        self._due_mono: float | None = None  # live pacing: monotonic time the next frame is due
        self._state = ""
        self.bytes_read = 0  # file bytes consumed (file size share of the frames read)
        self._file_size = 0
        self._frame_count = 0.0
        # live sources: newest frame in a one-slot buffer filled by a reader thread
        self._slot: Frame | None = None
        self._slot_cond = threading.Condition()
        self._reader_thread: threading.Thread | None = None
        self._reader_done = False

    # ------------------------------------------------------------------ state

    def _set_state(self, state: SourceStateName, reason: str = "") -> None:
        if state != self._state:
            self._state = state
            self._on_state(SourceState(state, reason))

    def _count(self, name: str, help: str = "", **labels: str) -> None:
        self._metrics.inc(name, 1.0, help, cam=self.cam, **labels)

    # ------------------------------------------------------------------ open / reopen

    def _open_once(self) -> VideoReader:
        if self.is_file and not Path(self.source).is_file():
            raise SourceError(f"file not found: {self.source}")
        reader = self._opener(self.source, self._stream_timeout_s)
        if not reader.isOpened():
            reader.release()
            raise SourceError(f"cannot open source {self.source}")
        if self.is_file:
            self._file_size = os.path.getsize(self.source)
            self._frame_count = max(0.0, reader.get(cv2.CAP_PROP_FRAME_COUNT))
        return reader

    def _open(self) -> bool:
        """Open (or reopen) with backoff until it works, ``stop`` is set, or attempts run out."""
        attempts = 0
        while not self._stop.is_set():
            try:
                self._reader = self._open_once()
            except PipelineError as exc:  # SourceError is retriable: a camera may come back
                attempts += 1
                self._count("source_open_failures_total", "Failed attempts to open a camera source.")
                out_of_attempts = self._reopen_attempts is not None and attempts >= self._reopen_attempts
                if not exc.retriable or out_of_attempts:
                    self._set_state("failed", str(exc))
                    return False
                self._set_state("reconnecting", str(exc))
                delay = self._backoff.next_delay()
                log.warning("camera %s: %s; retry in %.1f s", self.cam, exc, delay)
                self._stop.wait(delay)
                continue
            self._backoff.reset()
            self._set_state("online")
            return True
        return False

    def _close_reader(self) -> None:
        if self._reader is not None:
            self._reader.release()
            self._reader = None

    # ------------------------------------------------------------------ reading

    def _grab_unless_due(self) -> tuple[str, Frame | None] | None:
        """Files read at full speed: grab the next frame and decode it to BGR only when it is due.

        ``grab()`` demuxes and decodes, ``retrieve()`` converts to BGR and copies: a frame that
        will not be sampled (5 of 10 fps on the sample clip) skips the second part, measured
        1.48 -> 1.08 ms CPU per skipped 768x576 frame here. None: the reader cannot split them.
        """
        reader = self._reader
        retrieve = getattr(reader, "retrieve", None)
        if reader is None or retrieve is None or not self._next_due_ms:
            return None
        if not reader.grab():
            return "end", None
        pos = self._pos_offset_ms + float(reader.get(cv2.CAP_PROP_POS_MSEC))
        if pos > 0 and pos + 1e-3 < self._next_due_ms:
            self._count("frames_read_total", "Frames decoded from camera sources.")
            self._count("frames_not_converted_total", "Frames grabbed but never converted: not due for sampling.")
            self._index += 1
            if self._frame_count > 0 and self._file_size:
                self.bytes_read += int(self._file_size / self._frame_count)
            self._last_pos_ms = pos - self._pos_offset_ms
            return "skipped", None
        ok, image = retrieve()
        return self._accept(ok, image)

    def _read_raw(self) -> tuple[str, Frame | None]:
        """One frame from the open reader: ("ok", frame), ("corrupt", None) or ("end", None)."""
        assert self._reader is not None
        ok, image = self._reader.read()
        return self._accept(ok, image)

    def _accept(self, ok: bool, image: Any) -> tuple[str, Frame | None]:
        assert self._reader is not None
        if not ok:
            return "end", None
        self._count("frames_read_total", "Frames decoded from camera sources.")
        problem = frame_problem(image, self._size)
        if problem is not None:
            self._count("frames_corrupt_total", "Empty, malformed or resized frames skipped.", why=problem)
            return "corrupt", None
        assert image is not None
        if self._size is None:
            self._size = (image.shape[1], image.shape[0])
        self._index += 1
        if self.is_file:
            if self._frame_count > 0 and self._file_size:
                self.bytes_read += int(self._file_size / self._frame_count)
            pos = float(self._reader.get(cv2.CAP_PROP_POS_MSEC))
            if pos <= 0 and self._index > 1:  # some containers report 0; fall back to fps
                fps = self._reader.get(cv2.CAP_PROP_FPS) or 25.0
                pos = self._last_pos_ms + 1000.0 / fps
            pos_ms = self._pos_offset_ms + pos
            ts_ms = int(self._start_wall_ms + pos_ms) if not self.realtime else int(self._clock() * 1000)
        else:
            ts_ms = int(self._clock() * 1000)
            pos_ms = ts_ms - self._start_wall_ms
        self._last_pos_ms = pos_ms - self._pos_offset_ms
        return "ok", Frame(image, self._index - 1, pos_ms, ts_ms)

    def _after_end(self) -> bool:
        """The reader stopped giving frames: reopen (loop/live) or end. True = keep going."""
        self._close_reader()
        if self._stop.is_set():
            return False
        if self.is_file and not self.loop:
            self._set_state("ended", "end of file")
            return False
        if self.is_file:
            self._pos_offset_ms += self._last_pos_ms + 1.0
            self._last_pos_ms = 0.0
        else:
            self._count("source_reconnects_total", "Camera sources reopened after a failure.")
            self._set_state("reconnecting", "stream stopped")
        return self._open()

    def _next_unpaced(self) -> Frame | None:
        """File at full speed: every frame is read, frames before the next due time are skipped."""
        while not self._stop.is_set():
            if self._reader is None and not self._open():
                return None
            kind, frame = self._grab_unless_due() or self._read_raw()
            if kind == "end":
                if not self._after_end():
                    return None
                continue
            if frame is None:
                continue
            if frame.pos_ms + 1e-3 < self._next_due_ms:
                continue
            period = 1000.0 / self._detect_fps()
            self._next_due_ms = (self._next_due_ms or frame.pos_ms) + period
            if self._next_due_ms <= frame.pos_ms:  # fell behind (e.g. detect_fps raised live)
                self._next_due_ms = frame.pos_ms + period
            return frame
        return None

    # ---- live: reader thread + one-slot buffer

    def _reader_loop(self) -> None:
        fps = 0.0
        try:
            while not self._stop.is_set():
                if self._reader is None and not self._open():
                    return
                assert self._reader is not None
                if self.is_file and not fps:
                    fps = self._reader.get(cv2.CAP_PROP_FPS) or 25.0
                t0 = time.monotonic()
                kind, frame = self._read_raw()
                if kind == "end":
                    fps = 0.0
                    if not self._after_end():
                        return
                    continue
                if frame is None:
                    continue
                with self._slot_cond:
                    if self._slot is not None:
                        self._count("frames_dropped_total", "Frames overwritten before the detector took them.")
                    self._slot = frame
                    self._slot_cond.notify_all()
                if self.is_file:  # a realtime file is paced at its own fps
                    self._stop.wait(max(0.0, 1.0 / fps - (time.monotonic() - t0)))
        finally:
            with self._slot_cond:
                self._reader_done = True
                self._slot_cond.notify_all()

    def _next_live(self) -> Frame | None:
        if self._reader_thread is None:
            self._reader_thread = threading.Thread(target=self._reader_loop, name=f"capture-{self.cam}", daemon=True)
            self._reader_thread.start()
        period_s = 1.0 / self._detect_fps()
        now = time.monotonic()
        # Step the deadline from the previous due time, not from "now": otherwise the time spent
        # detecting adds to every period and 5 fps becomes 1 / (0.2 s + detect time). A consumer
        # that fell more than a period behind restarts from now instead of bursting to catch up.
        due = now if self._due_mono is None else self._due_mono + period_s
        if due < now - period_s:
            due = now
        self._due_mono = due
        self._stop.wait(max(0.0, due - now))
        with self._slot_cond:
            while self._slot is None and not self._reader_done and not self._stop.is_set():
                self._slot_cond.wait(0.2)
            frame, self._slot = self._slot, None
        return frame

    def next(self) -> Frame | None:
        """The next sampled frame, or None when the source ended, failed for good, or stop is set."""
        if self._stop.is_set():
            return None
        return self._next_live() if self.realtime else self._next_unpaced()

    def close(self) -> None:
        if self._reader_thread is not None:
            self._reader_thread.join(timeout=5)
        self._close_reader()

    @property
    def state(self) -> str:
        return self._state
