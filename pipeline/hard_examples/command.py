"""``pipeline report hard-examples`` and ``pipeline report coco`` (the hard-example dataset)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from pipeline.errors import ConfigError
from pipeline.settings import Settings


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("report", help="Reports on the hard-example dataset (edge vs cloud disagreements).")
    sub = p.add_subparsers(dest="report_command", metavar="REPORT")
    sub.required = True
    he = sub.add_parser(
        "hard-examples",
        help="Disagreement rate over time, most confused classes, per camera and model version (+ PNG).",
        description="Reads <dataset>/labels/<cam>/<day>.jsonl (written by `pipeline cloud` with"
        " hard_examples.enabled) and writes report.json, report.md and hard_examples.png to --out.",
    )
    he.add_argument("--dataset", type=Path, help="Dataset directory (default hard_examples.dataset_dir).")
    he.add_argument("--out", type=Path, required=True, help="Output directory.")
    he.add_argument("--bucket", choices=["day", "hour"], default="day", help="Time bucket of the rate series.")
    he.set_defaults(func=_run_report)
    coco = sub.add_parser("coco", help="Export the hard-example dataset as one COCO annotations JSON.")
    coco.add_argument("--dataset", type=Path, help="Dataset directory (default hard_examples.dataset_dir).")
    coco.add_argument("--out", type=Path, required=True, help="Output JSON file.")
    coco.add_argument("--min-score", type=float, default=0.3, help="Heavy-model detections kept as labels.")
    coco.set_defaults(func=_run_coco)


def _dataset(args: argparse.Namespace, settings: Settings) -> Path:
    dataset: Path = args.dataset or settings.hard_examples.dataset_dir
    if not (dataset / "labels").is_dir():
        raise ConfigError(f"{dataset} is not a hard-example dataset (no labels/ directory)")
    return dataset


def _run_report(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline.hard_examples.report import write_report

    rep = write_report(_dataset(args, settings), args.out, args.bucket)
    for g in rep["groups"]:
        print(f"{g['cam']:16s} {g['model']:40s} examples={g['examples']} {g['by_kind']}")
    print(f"wrote {args.out / 'report.json'}, report.md, hard_examples.png ({rep['examples']} records)")
    return 0


def _run_coco(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline.hard_examples.coco_export import export_coco

    coco = export_coco(_dataset(args, settings), args.out, args.min_score)
    print(f"wrote {args.out}: {len(coco['images'])} images, {len(coco['annotations'])} annotations")
    return 0
