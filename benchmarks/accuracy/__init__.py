"""Is the alert right? Accuracy on public ground truth (PETS09-S2L1 = vtest.avi, frames 1-400).

``python -m benchmarks --only accuracy [--gt PATH] [--video PATH]``. Parts (``benchmarks/README.md``):

1. detection: person AP@0.5, precision/recall at ``min_score``, per detector variant;
2. tracking: ours as deployed and at every frame vs ByteTrack, SORT, OC-SORT and Norfair (Frigate's
   configuration) on the same detections, scored with py-motmetrics (CLEAR, IDF1) and
   ``trackers.eval`` (HOTA);
3. events and alerts through the real pipeline: tracks and presence alerts per GT person, line
   crossings per direction, zone entries and dwells vs the same figures from the GT;
4. cascade value: the heavy model's ROC AUC on track-start crops, alert precision/recall edge-only
   vs verified;
5. speed next to accuracy: variant x detect_fps -> ms/frame, IDF1, recall;
6. plots: identity timelines (GT vs track ids), precision-recall curves.

Without the ground truth file every part is skipped with the reason in the table.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

from benchmarks.accuracy.data import DataMissing, GroundTruth, find_video, load_ground_truth
from benchmarks.harness import BenchResult, Context
from benchmarks.table import Row, at_most, ratio_at_least

GROUP = "accuracy"
# variant -> edge settings: the detector and its input size (the speed choices of benchmarks/edge_cost.py)
# (each names its input size, so the table does not move when the default does)
VARIANTS: dict[str, dict[str, Any]] = {
    "fp32": {"detector": "centernet", "detector_input_size": 512},
    "int8": {"detector": "centernet-int8", "detector_input_size": 512},
    "fp32-384": {"detector": "centernet", "detector_input_size": 384},
    "fp32-320": {"detector": "centernet", "detector_input_size": 320},
    # the same float file on OpenVINO in bfloat16 (f32 there equals LiteRT to 0.003 px: unit test)
    "ov-bf16": {
        "detector": "centernet", "detector_runtime": "openvino", "detector_precision": "bf16",
        "detector_input_size": 512,
    },
    "ov-bf16-384": {
        "detector": "centernet", "detector_runtime": "openvino", "detector_precision": "bf16",
        "detector_input_size": 384,
    },
}  # fmt: skip


def deployed_variant(edge: Any) -> str:
    """The variant the edge runs with ``edge``'s settings (the first whose every setting matches)."""
    for name, update in VARIANTS.items():
        if all(getattr(edge, k) == v for k, v in update.items()):
            return name
    raise ValueError(f"no accuracy variant matches the edge settings {edge.detector}/{edge.detector_input_size}")


def skipped(reason: str) -> BenchResult:
    return BenchResult([Row.make("accuracy benchmark skipped", None, group=GROUP, note=reason)], {"skipped": reason})


def run(ctx: Context) -> BenchResult:
    try:
        gt = load_ground_truth(ctx.options.get("gt"))
        video = find_video(ctx.options.get("video"), log=ctx.log)
    except DataMissing as exc:
        ctx.log(f"accuracy: skipped: {exc}")
        return skipped(str(exc))
    from benchmarks.accuracy import report
    from benchmarks.accuracy.offline import detection_scores, speed_table, tracking_modes
    from benchmarks.accuracy.replay import detect_every_frame, replay_deployed
    from pipeline.edge_stage.detectors import make_detector
    from pipeline.edge_stage.tracking_setup import make_tracker, prepare_detections, select_detections
    from pipeline.settings import CameraSettings, load_settings

    n = gt.last + 1
    # the edge as the settings make it (defaults, PIPELINE_* variables, PIPELINE_CONFIG), as the
    # run through the pipeline does: EdgeSettings() alone read no environment, so with
    # PIPELINE_EDGE__DETECTOR_INPUT_SIZE=384 the offline part scored 512 px
    edge = load_settings().edge
    camera = CameraSettings(id="pets", source=str(video))
    main = deployed_variant(edge)  # what the edge runs with these settings
    variants = {main: VARIANTS[main]} if ctx.quick else VARIANTS
    ctx.log(f"accuracy: {len(gt.ids)} GT identities on frames {gt.first}-{gt.last} of {video.name}")
    every = {}
    for name, update in variants.items():
        det = make_detector(edge.model_copy(update=update), min_score=0.1)
        ctx.log(f"accuracy: {det.tag} on every GT frame (full frame)")
        every[name] = detect_every_frame(video, n, det, progress=ctx.log)
        if name == main:
            ctx.log(f"accuracy: the edge as deployed ({camera.detect_fps:g} fps, motion gate, {det.tag})")
            deployed = replay_deployed(
                video, n, det, camera, lambda: make_tracker(edge, camera),
                lambda img, dets, cam: prepare_detections(img, dets, cam, edge),
            )  # fmt: skip
        det.close()
    det_scores = detection_scores(every, gt, camera.min_score)
    ctx.log("accuracy: trackers side by side (reference trackers in .venv-ref)")
    select = lambda dets, cam: select_detections(dets, cam, edge)  # noqa: E731
    modes = tracking_modes(
        deployed, every[main], gt, camera, lambda: make_tracker(edge, camera), select, ctx.work_dir, log=ctx.log
    )
    speed = speed_table(every, gt, deployed.fps, (2.5, 5.0, 10.0), camera, lambda: make_tracker(edge, camera), select)
    rows = report.detection_rows(det_scores, gt.frame_count)
    for mode in modes:
        rows += report.tracking_rows(mode)
    md = [report.detection_markdown(det_scores), report.tracking_markdown(modes), report.speed_markdown(speed)]
    series: dict[str, Any] = {
        "detection": {
            k: {f: getattr(v, f) for f in ("ap50", "precision", "recall", "tp", "fp", "gt")}
            for k, v in det_scores.items()
        },
        "tracking": {m.name: {k: s.as_dict() for k, s in m.scores.items()} for m in modes},
        "hota": {m.name: m.hota for m in modes},
        "speed": [vars_of(p) for p in speed],
    }
    plots = ctx.out_dir
    report.plot_detection(det_scores, plots / "accuracy_detection_pr.png")
    dep = modes[0]
    best_name, _ = dep.best_reference()
    report.plot_timeline(
        dep.scores["ours"], f"ours, {dep.name}: who was which track", plots / "accuracy_timeline_ours.png"
    )
    if best_name in dep.scores:
        report.plot_timeline(
            dep.scores[best_name],
            f"{report.NAMES[best_name]}, {dep.name}, same detections",
            plots / "accuracy_timeline_reference.png",
        )
    if not ctx.options.get("no_pipeline"):
        try:
            prow, pmd, pseries = pipeline_part(ctx, video, gt)
        except Exception as exc:  # the offline parts above stand on their own: keep them
            ctx.log(f"accuracy: the run through the pipeline failed: {exc!r}")
            logging.getLogger("benchmarks").exception("accuracy pipeline part failed")
            prow = [Row.make("accuracy through the pipeline did not complete", None, group=GROUP, note=f"{exc!r:.200}")]
            pmd, pseries = "", {"error": repr(exc)}
        rows += prow
        md.append(pmd)
        series["pipeline"] = pseries
    (ctx.out_dir / "accuracy.md").write_text("### Accuracy (PETS09-S2L1 frames 1-400)\n" + "".join(md))
    ctx.log(f"accuracy: wrote {ctx.out_dir / 'accuracy.md'}")
    return BenchResult(rows, series)


def vars_of(p: object) -> dict[str, Any]:
    return {k: getattr(p, k) for k in p.__slots__}  # type: ignore[attr-defined]


def pipeline_part(ctx: Context, video: Path, gt: GroundTruth) -> tuple[list[Row], str, dict[str, Any]]:
    from benchmarks.accuracy.counting import (
        DIRECTIONS,
        DWELL_S,
        LINES,
        gt_counts,
        gt_stay_spans,
        match_dwell_alerts,
    )
    from benchmarks.accuracy.through_pipeline import (
        cascade_value,
        dwell_alerts,
        match_gt,
        presence_coverage,
        run_pipeline,
    )

    runp = run_pipeline(ctx, video, gt)
    people = len(gt.ids)
    starts = [e for e in runp.events if e.type == "track_started" and e.label == "person"]
    by_rule = Counter(a.rule for a in runp.alerts)
    presence = by_rule["person-present"]
    matched = {match_gt(e, runp.frame_of[e.id], gt) for e in starts} - {None}
    covered, on_nobody = presence_coverage(runp, gt)
    rows = [
        Row.make(
            "person tracks started per GT person",
            round(len(starts) / people, 2),
            group=GROUP,
            note=f"{len(starts)} tracks for {people} GT people; {len(matched)} of them matched at start",
        ),
        Row.make(
            "presence alerts per GT person",
            round(presence / people, 2),
            target=at_most(1.15),
            group=GROUP,
            note=f"{presence} alerts, real pipeline (edge, Mosquitto, bridge, Tansu, Faust, model server)",
        ),
        Row.make(
            "GT people with a presence alert",
            covered,
            baseline=people,
            baseline_label="GT people",
            group=GROUP,
            note=f"{on_nobody} presence alerts on no GT person (at the alerting event, else over the track)",
        ),
    ]
    truth = gt_counts(gt.trajectories())
    # dwell at the resolution a 5 fps pipeline has: which GT stays got their alert
    dm = match_dwell_alerts(gt_stay_spans(gt.trajectories()), dwell_alerts(runp, gt), DWELL_S)
    lines_md = [
        "\n#### Lines and zone through the real pipeline vs ground truth\n",
        "GT: what the people did (geometric crossings and stays of the GT feet); the rule on GT"
        " tracks: the product's own rule (hysteresis band included) fed the GT boxes.\n",
        "| rule | GT | the rule on GT tracks | pipeline | abs error | rel error % |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    labels = {f"{n}.{d}": f"{n}.{d}" for n in LINES for d in DIRECTIONS}
    labels |= {"zone-centre": "zone-centre (entries)", "dwell-centre": f"dwell-centre (>= {DWELL_S:g} s)"}
    counts: dict[str, tuple[int, int]] = {}  # label -> (GT, pipeline)
    for rule, label in labels.items():
        want, on_tracks, got = truth.geometric[rule], truth.by_rule[rule], by_rule[rule]
        counts[label] = (want, got)
        rel = 100.0 * abs(got - want) / want if want else float("nan")
        lines_md.append(f"| {label} | {want} | {on_tracks} | {got} | {abs(got - want)} | {rel:.0f} |")
        note = f"pipeline {got}, GT {want}, the rule on GT tracks {on_tracks}"
        if rule == "dwell-centre":
            note += f"; {dm.borderline} GT stays within 0.2 s (one detection step) of {DWELL_S:g} s"
        rows.append(
            Row.make(
                f"count error, {label}",
                round(rel, 1) if want else None,
                "%",
                target=at_most(5.0) if rule.startswith("line") else None,
                group=GROUP,
                note=note,
            )
        )
    rows += [
        Row.make(
            f"GT stays over {DWELL_S + 0.2:g} s with a dwell alert",
            dm.over_alerted,
            baseline=dm.over,
            baseline_label="such GT stays",
            target=ratio_at_least(1.0),
            group=GROUP,
            note=f"stays within 0.2 s (one detection step) of {DWELL_S:g} s: {dm.borderline_alerted} of"
            f" {dm.borderline} alerted (either way is right at 5 fps)",
        ),
        Row.make(
            f"dwell alerts on no GT stay of {DWELL_S - 0.2:g} s or more",
            dm.wrong,
            target=at_most(0),
            group=GROUP,
            note="on a GT stay clearly under the threshold, on no GT person's stay, or a second alert for one stay",
        ),
    ]
    ctx.log("accuracy: heavy model on every track-start crop (cascade value)")
    threshold = next(r.min_score for r in runp.settings.cloud.rules if r.id == "person-present")
    cas = cascade_value(runp, gt, threshold)
    # The same crops through served version 1 (512 px, before issue 18's re-export): the AUC the
    # smaller, batch-aware default (version 2, 256 px) is held to.
    ms_v1 = runp.settings.model_server.model_copy(update={"model_version": 1})
    runp_v1 = replace(runp, settings=runp.settings.model_copy(update={"model_server": ms_v1}))
    cas_v1 = cascade_value(runp_v1, gt, threshold)
    rows += [
        Row.make(
            "cloud verifier ROC AUC on track-start crops",
            round(cas.auc, 3) if cas.auc is not None else None,
            baseline=round(cas_v1.auc, 3) if cas_v1.auc is not None else None,
            baseline_label="model version 1 (512 px)",
            group=GROUP,
            note=f"{cas.true_starts} true / {cas.started - cas.true_starts} false starts (IoU>=0.5); served model"
            f" {runp.settings.model_server.model_version or 'latest'}",
        ),
        Row.make(
            "alert precision, verified (fused)",
            round(100 * cas.verified[0], 1),
            "%",
            baseline=round(100 * cas.edge_only[0], 1),
            baseline_label="edge score only",
            group=GROUP,
        ),
        Row.make(
            "GT people alerted, verified (fused)",
            round(100 * cas.verified[1], 1),
            "%",
            baseline=round(100 * cas.edge_only[1], 1),
            baseline_label="edge score only",
            group=GROUP,
        ),
        Row.make("share of events escalated", round(100 * cas.escalated_share, 1), "%", group=GROUP),
    ]
    auc_text = "-" if cas.auc is None else f"{cas.auc:.3f}"
    md = (
        "\n".join(lines_md)
        + "\n"
        + (
            f"\nTracks started per GT person {len(starts) / people:.2f} ({len(starts)} for {people}); presence alerts"
            f" per GT person {presence / people:.2f}. Cascade: AUC {auc_text}, precision edge-only"
            f" {100 * cas.edge_only[0]:.0f}% vs verified {100 * cas.verified[0]:.0f}%, GT people alerted"
            f" {100 * cas.edge_only[1]:.0f}% vs {100 * cas.verified[1]:.0f}%, events escalated"
            f" {100 * cas.escalated_share:.0f}%. GT people with a presence alert: {covered} of {people}"
            f" ({on_nobody} presence alerts on nobody). Events on a GT box (IoU >= 0.5) at the chosen"
            f" frame alignment: {100 * runp.offset_quality:.0f}%.\n"
        )
    )
    series = {
        "counts": counts,
        "alerts_by_rule": dict(by_rule),
        "tracks_started": len(starts),
        "cascade": {
            "auc": cas.auc,
            "edge_only": cas.edge_only,
            "verified": cas.verified,
            "escalated_share": cas.escalated_share,
            "scores": cas.scores,
        },
    }
    return rows, md, series
