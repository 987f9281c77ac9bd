"""COCO export of the hard-example dataset: the heavy model's detections as the labels.

``images`` are the stored crops (``file_name`` relative to the dataset), ``annotations`` the
heavy model's detections on them at or above ``min_score`` (``bbox`` = x, y, w, h in crop
pixels, ``category_id`` = COCO-80 index + 1), ``categories`` COCO-80. Each image keeps the
edge's output and the record's kind under ``extra``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pipeline.hard_examples.report import load_records
from pipeline.operators.coco import COCO80


def to_coco(records: list[dict[str, Any]], min_score: float = 0.3) -> dict[str, Any]:
    ids = {name: i + 1 for i, name in enumerate(COCO80)}
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    for img_id, r in enumerate(records, start=1):
        w, h = r["width"], r["height"]
        images.append({"id": img_id, "file_name": r["image"], "width": w, "height": h,
                       "extra": {"event_id": r["id"], "cam": r["cam"], "ts": r["ts"], "kind": r["kind"],
                                 "edge": r["edge"], "cloud_model": r["cloud"]["model"]}})  # fmt: skip
        for d in r["cloud"]["detections"]:
            if d["score"] < min_score or d["label"] not in ids:
                continue
            x1, y1, x2, y2 = d["box"]
            bw, bh = (x2 - x1) * w, (y2 - y1) * h
            annotations.append({"id": len(annotations) + 1, "image_id": img_id, "category_id": ids[d["label"]],
                                "bbox": [round(x1 * w, 1), round(y1 * h, 1), round(bw, 1), round(bh, 1)],
                                "area": round(bw * bh, 1), "iscrowd": 0, "score": d["score"]})  # fmt: skip
    return {
        "info": {"description": "hard examples: edge vs heavy model disagreements", "version": "1"},
        "images": images,
        "annotations": annotations,
        "categories": [{"id": i + 1, "name": n} for i, n in enumerate(COCO80)],
    }


def export_coco(dataset: Path, out: Path, min_score: float = 0.3) -> dict[str, Any]:
    coco = to_coco(load_records(dataset), min_score)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(coco) + "\n")
    return coco
