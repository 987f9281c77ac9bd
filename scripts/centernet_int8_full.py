"""Full-integer int8 CenterNet, calibrated on real frames, measured against the float model.

    .venv/bin/python scripts/centernet_int8_full.py [--size 384] [--out /tmp/centernet_int8full_384.tflite]

Why this exists (issue 18): the first full-integer conversion returned only zero scores. The cause
was the graph's last tensor: [1, 100, 6] holds box corners (0-512) and scores (0-1) together, and
one int8 scale for both rounds every score to 0. This script quantises only the network up to its
two heads (heatmap after the sigmoid, box sizes: ``scripts/centernet_variants.py``), calibrated on
87 frames of ``vtest.avi`` outside the ground-truth range (frames 450-794), keeps float input and
output, and decodes the heads as the OpenVINO path does (``decode_heads``).

Measured 2026-12-06 on the 2-core build machine (LiteRT 2.3.0, XNNPack, 1 thread, 384 px):
the int8 model finds people (persons >= 0.35 on 20 GT-range frames: 96 vs 114 float, F1 0.857
at IoU 0.5) but runs *slower* than float (28.6 vs 23.5 ms/frame): XNNPack takes the quantised
graph in 4 delegate partitions (the float graph in 1), so some int8 ops run on LiteRT's reference
kernels between them. On OpenVINO the int8 file runs 14-15 ms against bf16's 9 ms.
So int8 is not shipped: OpenVINO bf16 (``edge.detector_runtime``) is the faster float path.
The script prints the same figures so a later runtime can be re-judged.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

CALIBRATION = range(450, 795, 4)  # vtest.avi frames past the GT's 0-399: not the frames it is judged on
CHECK = range(0, 400, 20)


def letterboxed(video: Path, frames: range, size: int) -> list[Any]:
    import cv2
    import numpy as np

    from pipeline.edge_stage.detectors.base import letterbox

    cap = cv2.VideoCapture(str(video))
    out, i = [], 0
    while i < frames.stop:
        ok, frame = cap.read()
        if not ok:
            break
        if i in frames:
            out.append(letterbox(frame, None, size).image[:, :, ::-1].astype(np.float32)[None])
        i += 1
    cap.release()
    return out


def convert(size: int, calibration: list[Any]) -> bytes:
    import centernet_variants as cv  # scripts/: the network up to its heads
    import tensorflow as tf

    graph_def = cv.backbone_graph_def(size, 1)

    # tensorflow ships no type hints (pyproject's mypy override): tf.Module and tf.function are Any.
    class Heads(tf.Module):  # type: ignore[misc]
        @tf.function(input_signature=[tf.TensorSpec([1, size, size, 3], tf.float32, name="images")])  # type: ignore[untyped-decorator]
        def serve(self, images: Any) -> dict[str, Any]:
            heat, wh = tf.graph_util.import_graph_def(
                graph_def, input_map={cv.INPUT: images}, return_elements=[cv.HEAT, cv.WH], name="centernet"
            )
            return {"heat": heat, "wh": wh}

    module = Heads()
    conv = tf.lite.TFLiteConverter.from_concrete_functions([module.serve.get_concrete_function()], module)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = lambda: ([x] for x in calibration)
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    data: bytes = conv.convert()
    return data


def compare(path: Path, size: int, frames: list[Any], min_score: float = 0.35) -> None:
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter

    from pipeline.edge_stage.detectors.openvino_centernet import decode_heads
    from pipeline.edge_stage.detectors.tflite_centernet import MODELS_DIR, LiteRtRunner
    from pipeline.operators.tracking import iou

    float_runner = LiteRtRunner(MODELS_DIR / f"centernet_fp32{'' if size == 512 else f'_{size}'}.tflite", 1)
    int8 = Interpreter(model_path=str(path), num_threads=1).get_signature_runner("serving_default")
    n_float = n_int8 = matched = 0
    t_float, t_int8 = [], []
    for x in frames:
        t = time.perf_counter()
        want = float_runner.run(x, min_score)
        t_float.append(time.perf_counter() - t)
        t = time.perf_counter()
        out = int8(images=x)
        t_int8.append(time.perf_counter() - t)
        heat = np.ascontiguousarray(np.moveaxis(out["heat"][0], -1, 0))
        got = decode_heads(heat, (out["wh"][0] * 16.0).reshape(-1, 4), size, min_score)
        want = want[(want[:, 4] >= min_score) & (want[:, 5] == 0)]
        got = got[got[:, 5] == 0]
        n_float, n_int8 = n_float + len(want), n_int8 + len(got)
        free = list(range(len(got)))
        for row in want:
            best = max(free, key=lambda j: iou(row, got[j]), default=None)
            if best is not None and iou(row, got[best]) >= 0.5:
                matched += 1
                free.remove(best)
    f1 = 2 * matched / (n_float + n_int8) if n_float + n_int8 else 0.0
    print(f"persons >= {min_score}: float {n_float}, int8 {n_int8}, matched {matched} (F1 {f1:.3f})")
    print(f"ms/frame (median, 1 thread): float {1000 * np.median(t_float):.1f}, int8 {1000 * np.median(t_int8):.1f}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=384, choices=(320, 384, 512), help="input side in px")
    ap.add_argument("--out", type=Path, help="where to write the int8 .tflite (default: a temp dir)")
    args = ap.parse_args()
    from benchmarks.accuracy.data import find_video

    video = find_video()
    out = args.out or Path(os.environ.get("TMPDIR", "/tmp")) / f"centernet_int8full_{args.size}.tflite"
    print(f"calibrating on {len(CALIBRATION)} frames of {video.name} ({CALIBRATION.start}-{CALIBRATION.stop - 1})")
    out.write_bytes(convert(args.size, letterboxed(video, CALIBRATION, args.size)))
    print(f"wrote {out} ({out.stat().st_size} bytes)")
    compare(out, args.size, letterboxed(video, CHECK, args.size))
    return 0


if __name__ == "__main__":
    sys.exit(main())
