"""``python -m benchmarks [--quick] [--only NAME[,NAME]] [--out DIR]``.

Starts what the benchmarks need (the local stack: Mosquitto, Tansu, the model server; the bridge
and the cloud worker as child processes), runs each benchmark, prints one table (figure, value,
baseline measured in the same run, ratio, target, pass/fail), and writes ``results.json``,
``RESULTS.md`` (the table with machine info) and PNG plots to the output folder.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path

from benchmarks.harness import BenchResult, Context
from benchmarks.table import Row, machine_info, render_markdown, render_text, to_json

# name -> (module, what it measures); run in this order
BENCHMARKS: dict[str, tuple[str, str]] = {
    "accuracy": ("benchmarks.accuracy", "detection, tracking vs reference trackers, counts and alerts vs ground truth"),
    "edge_cost": ("benchmarks.edge_cost", "edge cost per frame by stage, gate on/off, RSS, int8 vs fp32"),
    "bandwidth": ("benchmarks.bandwidth", "bytes published vs video bytes vs a 2 Mbit/s H.264 stream"),
    "inference_batching": ("benchmarks.inference_batching", "micro-batched vs one Predict per event"),
    "bridge_throughput": ("benchmarks.bridge_throughput", "bridge events/s and latency vs a naive loop"),
    "end_to_end": ("benchmarks.end_to_end", "capture -> alert latency on the local stack"),
    "scale": ("benchmarks.scale", "1..16 simulated cameras on one edge process"),
}
DEFAULT_OUT = Path("benchmarks/out")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="benchmarks: " + "; ".join(f"{k} ({v[1]})" for k, v in BENCHMARKS.items()),
    )
    p.add_argument("--quick", action="store_true", help="Short runs, one repeat (under 3 minutes).")
    p.add_argument("--only", metavar="NAME[,NAME]", help=f"Run only these: {', '.join(BENCHMARKS)}.")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"Output folder (default {DEFAULT_OUT}).")
    p.add_argument("--gt", type=Path, help="accuracy: PETS09-S2L1 ground truth file (default: ../shared/data/...).")
    p.add_argument("--video", type=Path, help="accuracy: vtest.avi (default: cached, else from Debian opencv-doc).")
    p.add_argument("--no-pipeline", action="store_true", help="accuracy: skip the run through the local stack.")
    p.add_argument("--keep-work", action="store_true", help="Keep the scratch folder (clips, child logs).")
    args = p.parse_args(argv)
    names = list(BENCHMARKS)
    if args.only:
        names = [n.strip() for n in args.only.split(",") if n.strip()]
        unknown = [n for n in names if n not in BENCHMARKS]
        if unknown:
            p.error(f"unknown benchmark(s) {unknown}; known: {', '.join(BENCHMARKS)}")
    args.names = names
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="bench-", dir=out))
    logging.basicConfig(
        level=logging.INFO,
        filename=str(work / "benchmarks.log"),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    ctx = Context(
        quick=args.quick,
        out_dir=out,
        work_dir=work,
        options={"gt": args.gt, "video": args.video, "no_pipeline": args.no_pipeline},
    )
    ctx.log(f"benchmarks {', '.join(args.names)} ({'quick' if args.quick else 'full'}); scratch {work}")
    rows: list[Row] = []
    series: dict[str, object] = {}
    durations: dict[str, float] = {}
    began = time.monotonic()
    try:
        for name in args.names:
            module, _ = BENCHMARKS[name]
            t0 = time.monotonic()
            ctx.log(f"=== {name} ===")
            try:
                result: BenchResult = importlib.import_module(module).run(ctx)
            except KeyboardInterrupt:
                raise
            except Exception as exc:
                ctx.log(f"{name} FAILED: {exc!r} (traceback in {work / 'benchmarks.log'})")
                logging.getLogger("benchmarks").error("%s failed:\n%s", name, traceback.format_exc())
                result = BenchResult([Row.make(f"{name} did not complete", None, note=f"{exc!r:.200}")])
            group = name.replace("_", " ")
            rows += [r if r.group else r.with_group(group) for r in result.rows]
            series[name] = result.series
            durations[name] = round(time.monotonic() - t0, 1)
            ctx.log(f"{name} done in {durations[name]:.0f} s")
    finally:
        ctx.close()
    total = time.monotonic() - began
    machine = machine_info(mode="quick" if args.quick else "full", wall=f"{total:.0f} s").as_dict()
    table = render_text(rows)
    print()
    print(table)
    print()
    (out / "results.json").write_text(
        to_json(rows, machine, {"series": series, "durations_s": durations, "benchmarks": args.names}) + "\n"
    )
    (out / "RESULTS.md").write_text(render_markdown(rows, machine, title="Benchmark results"))
    try:
        from benchmarks.plots import draw_all

        pngs = draw_all(series, out)
    except Exception as exc:
        logging.getLogger("benchmarks").error("plots failed:\n%s", traceback.format_exc())
        ctx.log(f"plots failed: {exc!r}")
        pngs = []
    ctx.log(f"wrote {out / 'results.json'}, {out / 'RESULTS.md'}" + "".join(f", {p}" for p in pngs))
    failed = [r for r in rows if r.value is None and r.note]
    if args.keep_work or failed:
        ctx.log(f"scratch kept: {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    ctx.log(f"total {total:.0f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
