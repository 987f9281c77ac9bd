"""``pipeline report hard-examples``, ``coco`` and ``thresholds`` (the hard-example dataset)."""

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
        description="Reads <dataset>/labels/<site>/<cam>/<day>.jsonl (written by `pipeline cloud` with"
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
    th = sub.add_parser(
        "thresholds",
        help="Suggest per-camera edge min_score from the cloud's verdicts (optionally publish it as config).",
        description="Treats the heavy model as the reference: for each camera (records of the model version it"
        " reported last) computes weighted precision/recall of the edge at every threshold and suggests the one"
        " with the best F-beta. It can only RAISE a threshold: the dataset holds only events the edge reported."
        " Writes thresholds.json and thresholds.png to --out; --publish sends min_score to the cameras through"
        " the config path (Kafka config topic -> bridge -> retained MQTT config), like `pipeline config set`.",
    )
    th.add_argument("--dataset", type=Path, help="Dataset directory (default hard_examples.dataset_dir).")
    th.add_argument("--out", type=Path, required=True, help="Output directory.")
    th.add_argument("--beta", type=float, default=1.0, help="F-beta: >1 weighs recall more, <1 precision.")
    th.add_argument("--min-examples", type=int, default=30, help="Cameras with fewer examples are left alone.")
    th.add_argument("--publish", action="store_true", help="Send the suggested min_score as camera config.")
    th.add_argument(
        "--site",
        help="Only the cameras of this site (records carry their site; older datasets without one need it to publish).",
    )
    th.set_defaults(func=_run_thresholds)


def _dataset(args: argparse.Namespace, settings: Settings) -> Path:
    dataset: Path = args.dataset or settings.hard_examples.dataset_dir
    if not (dataset / "labels").is_dir():
        raise ConfigError(f"{dataset} is not a hard-example dataset (no labels/ directory)")
    return dataset


def _run_report(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline.hard_examples.report import camera_name, write_report

    rep = write_report(_dataset(args, settings), args.out, args.bucket)
    for g in rep["groups"]:
        print(f"{camera_name(g):24s} {g['model']:40s} examples={g['examples']} {g['by_kind']}")
    print(f"wrote {args.out / 'report.json'}, report.md, hard_examples.png ({rep['examples']} records)")
    return 0


def _run_coco(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline.hard_examples.coco_export import export_coco

    coco = export_coco(_dataset(args, settings), args.out, args.min_score)
    print(f"wrote {args.out}: {len(coco['images'])} images, {len(coco['annotations'])} annotations")
    return 0


def _run_thresholds(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline.hard_examples.report import load_records
    from pipeline.hard_examples.thresholds import suggest_all, write_outputs

    records = load_records(_dataset(args, settings))
    if args.site:
        records = [r for r in records if r.get("site", args.site) == args.site]
    suggestions = suggest_all(records, beta=args.beta, min_examples=args.min_examples)
    write_outputs(suggestions, args.out)
    changes = []
    for s in suggestions:
        now = f"{s.at_lowest.precision:.2f}/{s.at_lowest.recall:.2f}" if s.at_lowest else "-"
        new = f"{s.at_suggested.precision:.2f}/{s.at_suggested.recall:.2f}" if s.at_suggested else "-"
        target = f"{s.suggested:.3f}" if s.suggested is not None else "keep"
        print(f"{s.camera:24s} {s.model:40s} n={s.examples:<5d} lowest={s.lowest_score:.3f} -> {target:6s}"
              f" P/R {now} -> {new}  ({s.reason})")  # fmt: skip
        if s.suggested is not None:
            changes.append(s)
    print(f"wrote {args.out / 'thresholds.json'} and thresholds.png")
    if args.publish and changes:
        from pipeline.cloud_stage.command import config_record, produce_configs

        unsited = [s.cam for s in changes if not (s.site or args.site)]
        if unsited:
            raise ConfigError(f"records of {', '.join(unsited)} carry no site: publish them with --site")
        configs = [(s.cam, config_record(s.site or args.site, s.cam, {"min_score": s.suggested})) for s in changes]
        for line in produce_configs(settings, configs):
            print(line)
    elif args.publish:
        print("nothing to publish: every camera keeps its threshold")
    return 0
