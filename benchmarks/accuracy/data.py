"""Ground truth and video for the accuracy benchmark: PETS09-S2L1 (= OpenCV's ``vtest.avi``).

The ground truth is MOTChallenge 2D MOT 2015's public file for frames 1-400, read from a path
(``--gt``; default ``../shared/data/pets09-s2l1/gt-frames-0001-0400.txt`` next to the repository).
It is research-licensed data: never copied into the repository or the wheel. When it is absent
the benchmark reports a skipped row with the reason instead of failing.

Alignment (README next to the file, checked by drawing boxes): GT frame ``n`` is frame index
``n - 1`` of ``vtest.avi``. Boxes are pixels in the 768x576 frame.

The video is Debian ``opencv-doc``'s ``examples/data/vtest.avi`` (BSD, OpenCV sample data). It is
not in the repository either (8 MB); :func:`find_video` takes ``--video``, then a cached copy,
then extracts it from ``apt-get download opencv-doc`` once (as ``scripts/make_sample_clip.sh``
does) into the cache folder.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pipeline.settings import REPO_ROOT

DEFAULT_GT = REPO_ROOT.parent / "shared" / "data" / "pets09-s2l1" / "gt-frames-0001-0400.txt"
CACHE_DIR = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "edge-vision-pipeline"
VIDEO_NAME = "vtest.avi"
FRAME_W, FRAME_H = 768, 576

PxBox = tuple[float, float, float, float]  # x1, y1, x2, y2 pixels


class DataMissing(Exception):
    """Ground truth or video not available: the benchmark skips with this reason."""


@dataclass(frozen=True, slots=True)
class GroundTruth:
    """Boxes by 0-based video frame index: ``frames[i] = [(gt_id, box), ...]``."""

    path: Path
    frames: dict[int, list[tuple[int, PxBox]]]

    @property
    def first(self) -> int:
        return min(self.frames)

    @property
    def last(self) -> int:
        return max(self.frames)

    @property
    def frame_count(self) -> int:
        """Frames covered: ``first..last`` (frames with nobody in them count too)."""
        return self.last - self.first + 1

    @property
    def ids(self) -> set[int]:
        return {gid for boxes in self.frames.values() for gid, _ in boxes}

    def at(self, index: int) -> list[tuple[int, PxBox]]:
        return self.frames.get(index, [])

    def trajectories(self) -> dict[int, list[tuple[int, PxBox]]]:
        """``gt_id -> [(frame index, box), ...]`` in frame order."""
        out: dict[int, list[tuple[int, PxBox]]] = defaultdict(list)
        for idx in sorted(self.frames):
            for gid, box in self.frames[idx]:
                out[gid].append((idx, box))
        return dict(out)


def load_ground_truth(path: Path | None = None) -> GroundTruth:
    """Parse a MOTChallenge ``gt.txt`` (``frame, id, left, top, w, h, conf, x, y, z``).

    Rows with ``conf == 0`` are not evaluated by MOTChallenge and are left out here too.
    Raises :class:`DataMissing` when the file is absent, ``ValueError`` on a malformed line.
    """
    p = Path(path) if path is not None else DEFAULT_GT
    if not p.is_file():
        raise DataMissing(f"ground truth not found at {p} (give --gt PATH; see benchmarks/README.md)")
    frames: dict[int, list[tuple[int, PxBox]]] = defaultdict(list)
    for n, line in enumerate(p.read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split(",")
        if len(parts) < 7:
            raise ValueError(f"{p}:{n}: expected at least 7 comma-separated fields, got {len(parts)}")
        frame, gid = int(float(parts[0])), int(float(parts[1]))
        left, top, w, h, conf = (float(v) for v in parts[2:7])
        if conf == 0:
            continue
        frames[frame - 1].append((gid, (left, top, left + w, top + h)))  # GT frame n = video index n-1
    if not frames:
        raise DataMissing(f"{p} holds no evaluated boxes")
    return GroundTruth(p, dict(frames))


def find_video(explicit: Path | None = None, log: Callable[[str], object] = print) -> Path:
    """``vtest.avi``: ``explicit``, else the cache, else extracted from Debian's ``opencv-doc``."""
    if explicit is not None:
        if not Path(explicit).is_file():
            raise DataMissing(f"video not found at {explicit}")
        return Path(explicit)
    cached = CACHE_DIR / VIDEO_NAME
    if cached.is_file():
        return cached
    if shutil.which("apt-get") is None or shutil.which("dpkg") is None:
        raise DataMissing("vtest.avi not cached and apt-get/dpkg are missing: give --video PATH")
    log(f"fetching {VIDEO_NAME} from Debian's opencv-doc package (once; cached in {CACHE_DIR})")
    with tempfile.TemporaryDirectory() as tmp:
        os.chmod(tmp, 0o755)  # apt's _apt user writes the download here
        dl = subprocess.run(["apt-get", "download", "opencv-doc"], cwd=tmp, capture_output=True, text=True, timeout=300)
        debs = list(Path(tmp).glob("opencv-doc_*.deb"))
        if dl.returncode != 0 or not debs:
            raise DataMissing(f"apt-get download opencv-doc failed: {dl.stderr.strip()[-300:]}")
        subprocess.run(["dpkg", "-x", str(debs[0]), str(Path(tmp) / "x")], check=True, timeout=300)
        src = Path(tmp) / "x" / "usr" / "share" / "doc" / "opencv-doc" / "examples" / "data" / VIDEO_NAME
        if not src.is_file():
            raise DataMissing(f"{debs[0].name} holds no {VIDEO_NAME}")
        CACHE_DIR.mkdir(parents=True, exist_ok=True)
        tmp_dst = cached.with_suffix(".part")
        shutil.copyfile(src, tmp_dst)
        tmp_dst.replace(cached)
    return cached
