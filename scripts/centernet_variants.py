"""Re-export the committed CenterNet at another input size and with a real batch dimension.

    .venv/bin/python scripts/centernet_variants.py [--serving-size 256] [--edge-sizes 320,384]

The TF.js graph the project converts (``scripts/build_models.py``) is frozen for one shape:
[1, 512, 512, 3]. Its three upsampling ``ResizeBilinear`` ops carry constant sizes (32, 64, 128)
and its post-processing reshapes to ``[1, -1]``, ``[16384, 4]`` and ``[1, 100, 4]``, so neither
TF Serving nor TFLite can feed it a batch or a smaller image (XNNPack: "failed to reshape").
This script

1. reads the original graph back from the committed ``models/centernet/1/saved_model.pb``
   (the largest function in its library, input ``tower_0_images``), so it needs no download;
2. keeps the network up to its two heads (class heatmap after the sigmoid, box sizes), with
   the input placeholder set to [N or 1, S, S, 3] and the upsampling sizes set to S/16, S/8, S/4;
3. decodes the heads again in TensorFlow ops written for a batch: 3x3 max-pool peak test,
   top 100 over (y, x, class), boxes = 4 * (x, y) -/+ 16 * wh, exactly what the frozen graph does
   for N = 1 (checked below: at 512 px the output equals version 1's to float precision);
4. writes a TF Serving version ``models/centernet/<version>/`` (signature ``serving_default``:
   ``images`` float32 [N, S, S, 3] -> ``detections`` float32 [N, 100, 6], x1, y1, x2, y2 in S-px
   space, score, class) and edge ``.tflite`` files ``centernet_fp32_<S>.tflite``.

Every output is checked against the original on frames of the sample clip; the script exits
non-zero when a check fails. ``models/SHA256SUMS`` and ``models.json`` are rewritten by
``--write-metadata`` (default on).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "models"
V1 = MODELS / "centernet" / "1"
EDGE_DIR = ROOT / "pipeline" / "edge_stage" / "models"
SAMPLE = ROOT / "samples" / "vtest_clip.mp4"
INPUT = "tower_0_images"
HEAT = "tower_0/Sigmoid:0"  # [N, S/4, S/4, 80] class heatmap after the sigmoid
WH = "tower_0/CenternetHead/centernet_wh_output/BiasAdd/BiasAdd:0"  # [N, S/4, S/4, 4]
RESIZE_NODES = {  # upsampling op -> its output size as a fraction of the input size
    "tower_0/CenternetHead/c5_upsample/up_sampling2d/ResizeBilinear": 16,
    "tower_0/CenternetHead/c4_upsample/up_sampling2d_1/ResizeBilinear": 8,
    "tower_0/CenternetHead/c3_upsample/up_sampling2d_2/ResizeBilinear": 4,
}
TOP_K = 100
CLASSES = 80
STRIDE = 4
WH_SCALE = 16.0


def log(msg: str) -> None:
    print(f"[centernet_variants] {msg}", flush=True)


def original_function_def() -> Any:
    """The converted TF.js graph as a FunctionDef, from version 1's SavedModel."""
    from tensorflow.core.protobuf import saved_model_pb2

    saved = saved_model_pb2.SavedModel()
    saved.ParseFromString((V1 / "saved_model.pb").read_bytes())
    library = saved.meta_graphs[0].graph_def.library.function
    found = [f for f in library if [a.name for a in f.signature.input_arg] == [INPUT]]
    if not found:
        sys.exit(f"no function with input {INPUT} in {V1}")
    return max(found, key=lambda f: len(f.node_def))


def backbone_graph_def(size: int, batch: int | None) -> Any:
    """GraphDef of the network up to its heads, for input [batch, size, size, 3]."""
    import tensorflow as tf
    from tensorflow.python.framework.function_def_to_graph import function_def_to_graph_def

    if size % 32:
        raise ValueError(f"input size {size} must be a multiple of 32 (the backbone's stride)")
    graph_def, _ = function_def_to_graph_def(original_function_def())
    consts = {n.name: n for n in graph_def.node if n.op == "Const"}
    for node in graph_def.node:
        node.attr.pop("_output_shapes", None)  # the frozen shapes of the 512-px graph
        if node.name == INPUT:
            node.attr["shape"].shape.CopyFrom(tf.TensorShape([batch, size, size, 3]).as_proto())
        if node.name in RESIZE_NODES:
            side = size // RESIZE_NODES[node.name]
            const = consts[node.input[1].split(":")[0]]
            const.attr["value"].tensor.CopyFrom(tf.make_tensor_proto([side, side], tf.int32))
    # Drop the frozen post-processing: its constant shapes fail shape inference at other sizes.
    heads = [name.rsplit(":", 1)[0] for name in (HEAT, WH)]
    return tf.compat.v1.graph_util.extract_sub_graph(graph_def, heads)


def decode(heat: Any, wh: Any) -> Any:
    """Heads -> [N, 100, 6] detections, the frozen graph's decoding written for any N."""
    import tensorflow as tf

    n = tf.shape(heat)[0]
    width = tf.shape(heat)[2]
    peaks = tf.cast(tf.equal(heat, tf.nn.max_pool2d(heat, 3, 1, "SAME")), tf.float32)
    scores, index = tf.math.top_k(tf.reshape(heat * peaks, [n, -1]), TOP_K)
    cls = index % CLASSES
    pixel = index // CLASSES
    x = tf.cast(pixel % width, tf.float32) * STRIDE
    y = tf.cast(pixel // width, tf.float32) * STRIDE
    sizes = tf.gather(tf.reshape(wh * WH_SCALE, [n, -1, 4]), pixel, batch_dims=1)  # [N, 100, 4]
    return tf.stack(
        [x - sizes[..., 0], y - sizes[..., 1], x + sizes[..., 2], y + sizes[..., 3], scores, tf.cast(cls, tf.float32)],
        axis=-1,
    )


def build_module(size: int, batch: int | None) -> Any:
    import tensorflow as tf

    graph_def = backbone_graph_def(size, batch)

    # tensorflow ships no type hints (pyproject's mypy override): tf.Module and tf.function are Any.
    class CenterNet(tf.Module):  # type: ignore[misc]
        @tf.function(input_signature=[tf.TensorSpec([batch, size, size, 3], tf.float32, name="images")])  # type: ignore[untyped-decorator]
        def serve(self, images: Any) -> dict[str, Any]:
            heat, wh = tf.graph_util.import_graph_def(
                graph_def, input_map={INPUT: images}, return_elements=[HEAT, WH], name="centernet"
            )
            return {"detections": decode(heat, wh)}

    return CenterNet()


def sample_frames(size: int, count: int = 8, step: int = 10) -> Any:
    """Frames of the sample clip letterboxed (top-left) into size x size, RGB float32."""
    import cv2
    import numpy as np

    cap = cv2.VideoCapture(str(SAMPLE))
    frames: list[npt.NDArray[np.float32]] = []
    i = 0
    while len(frames) < count:
        ok, frame = cap.read()
        if not ok:
            break
        if i % step == 0:
            h, w = frame.shape[:2]
            scale = size / max(h, w)
            small = cv2.resize(frame, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)
            canvas = np.full((size, size, 3), 114, np.uint8)
            canvas[: small.shape[0], : small.shape[1]] = small
            frames.append(canvas[:, :, ::-1].astype(np.float32))
        i += 1
    cap.release()
    return np.stack(frames)


def check_same_as_v1() -> None:
    """At 512 px, batch 1, the re-built model must give version 1's output."""
    import numpy as np
    import tensorflow as tf

    v1 = tf.saved_model.load(str(V1)).signatures["serving_default"]
    module = build_module(512, None)
    frames = sample_frames(512, count=4)
    want = v1(images=tf.constant(frames))["detections"].numpy()
    got = module.serve(tf.constant(frames))["detections"].numpy()
    diff = float(np.abs(want - got).max())
    log(f"512 px rebuilt vs version 1, batch of 4: max |diff| {diff:.2e}")
    if diff > 1e-2:
        sys.exit("rebuilt 512-px model differs from version 1")


def write_serving(size: int, version: int) -> Path:
    import numpy as np
    import tensorflow as tf

    out = MODELS / "centernet" / str(version)
    shutil.rmtree(out, ignore_errors=True)
    module = build_module(size, None)
    tf.saved_model.save(module, str(out), signatures={"serving_default": module.serve})
    loaded = tf.saved_model.load(str(out)).signatures["serving_default"]
    frames = sample_frames(size, count=4)
    batch = loaded(images=tf.constant(frames))["detections"].numpy()
    single = np.stack([loaded(images=tf.constant(f[None]))["detections"].numpy()[0] for f in frames])
    diff = float(np.abs(batch - single).max())
    people = int(((batch[..., 5] == 0) & (batch[..., 4] >= 0.3)).sum())
    log(f"SavedModel {out}: [N,{size},{size},3]; batch 4 vs 4 single calls max |diff| {diff:.2e}; {people} persons")
    if diff > 1e-3 or people < 4:
        sys.exit("serving model check failed")
    return out


def write_tflite(size: int) -> Path:
    import numpy as np
    import tensorflow as tf
    from ai_edge_litert.interpreter import Interpreter

    module = build_module(size, 1)
    conv = tf.lite.TFLiteConverter.from_concrete_functions([module.serve.get_concrete_function()], module)
    path = EDGE_DIR / f"centernet_fp32_{size}.tflite"
    path.write_bytes(conv.convert())
    it = Interpreter(model_path=str(path), num_threads=1)
    run = it.get_signature_runner("serving_default")
    frames = sample_frames(size, count=4)
    got = np.stack([run(images=f[None])["detections"][0] for f in frames])
    want = module.serve(tf.constant(frames[:1]))["detections"].numpy()[0]
    # Near-equal scores may swap places (and rows past the last peak all tie at 0): match each
    # scored TF row to its closest TFLite row.
    scored = want[want[:, 4] > 0.05]
    diff = float(max(np.abs(got[0] - row).max(axis=1).min() for row in scored))
    people = int(((got[..., 5] == 0) & (got[..., 4] >= 0.3)).sum())
    log(f"tflite {path.name}: {path.stat().st_size} bytes, vs TF max |diff| {diff:.2e}; {people} persons in 4 frames")
    if diff > 0.1 or people < 4:  # 0.1 px / 0.1 score: float32 kernels differ a little
        sys.exit(f"tflite {size} check failed")
    return path


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_metadata(sizes: list[int]) -> None:
    """SHA256SUMS over every committed model file; models.json entries for the new tflite sizes."""
    files = sorted(p for p in (MODELS / "centernet").rglob("*") if p.is_file())
    files += sorted(EDGE_DIR.glob("*.tflite"))
    (MODELS / "SHA256SUMS").write_text("".join(f"{sha256(p)}  {p.relative_to(ROOT).as_posix()}\n" for p in files))
    meta_path = EDGE_DIR / "models.json"
    meta = json.loads(meta_path.read_text())
    before = {e["file"]: e for e in meta["models"]}
    entries = [e for e in meta["models"] if not str(e["file"]).startswith("centernet_fp32_")]
    base = next(e for e in entries if e["variant"] == "fp32")
    for size in sizes:
        path = EDGE_DIR / f"centernet_fp32_{size}.tflite"
        entry = json.loads(json.dumps(base))
        entry.update(file=path.name, variant=f"fp32-{size}", sha256=sha256(path), size=path.stat().st_size)
        entry["input_size"] = [size, size]
        entry["input"]["shape"] = [1, size, size, 3]
        entry["output"]["layout"] = f"x1,y1,x2,y2 ({size}-px space), score, class (0-based COCO-80)"
        entry["converter"] += "; scripts/centernet_variants.py (re-sized from models/centernet/1)"
        cal = before.get(path.name, {}).get("score_calibration")
        if cal and cal.get("sha256") == entry["sha256"]:  # the same file: its calibration still holds
            entry["score_calibration"] = cal
        else:
            log(f"{path.name}: re-run scripts/centernet_score_calibration.py (no calibration for this file)")
        entries.append(entry)
    meta["models"] = entries
    meta_path.write_text(json.dumps(meta, indent=2) + "\n")
    log("wrote models/SHA256SUMS and models.json")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--serving-size", type=int, default=256, help="input size of the served model (crops)")
    ap.add_argument("--serving-version", type=int, default=2, help="TF Serving version directory to write")
    ap.add_argument("--edge-sizes", default="320,384", help="comma-separated input sizes of edge .tflite files")
    ap.add_argument("--no-metadata", action="store_true", help="do not rewrite SHA256SUMS / models.json")
    args = ap.parse_args()
    check_same_as_v1()
    if args.serving_size:
        write_serving(args.serving_size, args.serving_version)
    sizes = [int(s) for s in args.edge_sizes.split(",") if s.strip()]
    for size in sizes:
        write_tflite(size)
    if not args.no_metadata:
        write_metadata(sizes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
