"""Threshold recalibration from hard examples: pure functions on constructed datasets."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.hard_examples.thresholds import curve, suggest, suggest_all

pytestmark = pytest.mark.unit


def rec(
    score: float, kind: str, cam: str = "cam-1", rate: float = 0.5, det: str = "m@1", ts: int = 0
) -> dict[str, Any]:
    return {"cam": cam, "kind": kind, "ts": ts, "agreement_rate": rate, "edge": {"score": score, "det": det}}


def test_separable_scores_get_a_threshold_between_the_classes() -> None:
    negatives = [rec(0.1 + 0.01 * i, "contradicted") for i in range(20)]  # 0.10 .. 0.29
    positives = [rec(0.5 + 0.02 * i, "agreement" if i % 2 else "missed_label") for i in range(20)]
    s = suggest("cam-1", "m@1", negatives + positives, min_examples=10)
    assert s.suggested is not None and 0.29 < s.suggested <= 0.5
    assert s.at_suggested is not None and s.at_suggested.precision == 1.0 and s.at_suggested.recall == 1.0
    assert s.at_lowest is not None and s.at_lowest.precision < 0.8


def test_sampled_agreements_weigh_one_over_the_rate() -> None:
    # One low-scoring agreement sampled at 10 % stands for ten verified events: raising the
    # threshold past it would cost more recall than the five contradictions cost precision.
    records = (
        [rec(0.15, "agreement", rate=0.1)] + [rec(0.2, "contradicted")] * 5 + [rec(0.8, "agreement", rate=0.1)] * 5
    )
    weighted = suggest("cam-1", "m@1", records, min_examples=1)
    assert weighted.suggested is None and "already" in weighted.reason
    unweighted = suggest("cam-1", "m@1", [{**r, "agreement_rate": 1.0} for r in records], min_examples=1)
    assert unweighted.suggested == 0.8


def test_cameras_without_evidence_keep_their_threshold() -> None:
    assert suggest("c", "m", [rec(0.5, "agreement")] * 40, min_examples=10).suggested is None
    few = suggest("c", "m", [rec(0.2, "contradicted"), rec(0.6, "agreement")], min_examples=10)
    assert few.suggested is None and "only 2 examples" in few.reason


def test_only_the_latest_model_of_a_camera_counts() -> None:
    old = [rec(0.2, "contradicted", det="m@1", ts=1)] * 30 + [rec(0.7, "agreement", det="m@1", ts=1)] * 30
    new = [rec(0.3, "agreement", det="m@2", ts=2)] * 40
    (s,) = suggest_all(old + new, min_examples=10)
    assert s.model == "m@2" and s.examples == 40 and s.suggested is None


@given(st.lists(st.tuples(st.floats(0.05, 1.0), st.sampled_from(["agreement", "missed_label", "contradicted"])),
                min_size=1, max_size=60))  # fmt: skip
def test_curve_is_monotone_and_starts_with_everything_kept(items: list[tuple[float, str]]) -> None:
    pts = curve([rec(s, k) for s, k in items])
    assert [p.threshold for p in pts] == sorted({round(s, 4) for s, _ in items})
    assert all(a.recall >= b.recall for a, b in itertools.pairwise(pts))
    if any(k != "contradicted" for _, k in items):
        assert pts[0].recall == 1.0
    assert all(0 <= p.precision <= 1 and 0 <= p.f <= 1 for p in pts)


def test_two_sites_cameras_with_one_id_get_their_own_threshold() -> None:
    """Camera ids are unique within a site only: site a's cam-1 sends junk the cloud contradicts,
    site b's cam-1 does not. Keyed by id alone they shared one suggestion."""
    junk = [{**rec(0.1 + 0.01 * i, "contradicted"), "site": "a"} for i in range(20)]
    good = [{**rec(0.5 + 0.02 * i, "agreement"), "site": "a"} for i in range(20)]
    other = [{**rec(0.3 + 0.02 * i, "agreement"), "site": "b"} for i in range(20)]
    by_camera = {s.camera: s for s in suggest_all(junk + good + other, min_examples=10)}
    assert set(by_camera) == {"a/cam-1", "b/cam-1"}
    assert by_camera["a/cam-1"].suggested is not None and by_camera["a/cam-1"].suggested > 0.29
    assert by_camera["b/cam-1"].suggested is None and by_camera["b/cam-1"].examples == 20


def test_recorder_keeps_each_sites_camera_apart(tmp_path: Path) -> None:
    """Two sites' cam-1: their own directories, day caps and report groups; records carry the site."""
    import base64
    from dataclasses import replace

    import cv2
    import numpy as np

    from pipeline.cloud_stage.verification import Verdict
    from pipeline.hard_examples.recorder import HardExampleRecorder
    from pipeline.hard_examples.report import build_report, load_records
    from pipeline.settings import HardExampleSettings
    from tests.bridge.bridge_helpers import make_event

    ok, jpeg = cv2.imencode(".jpg", np.full((64, 32, 3), 128, np.uint8))
    assert ok
    crop = base64.b64encode(jpeg.tobytes()).decode()
    settings = HardExampleSettings(enabled=True, dataset_dir=tmp_path, max_per_camera_day=2, blur="none")
    recorder = HardExampleRecorder(settings)
    verdict = Verdict(cloud_score=0.1, fused_score=0.2, verification="contradicted", model="m@1")
    kept = {
        site: [recorder.consider(replace(make_event("cam-1", n, site=site), crop=crop), verdict)
               for n in range(3)]
        for site in ("a", "b")
    }  # fmt: skip
    assert kept == {"a": ["contradicted", "contradicted", None], "b": ["contradicted", "contradicted", None]}
    assert sorted(p.relative_to(tmp_path).parts[:3] for p in (tmp_path / "labels").rglob("*.jsonl")) == [
        ("labels", "a", "cam-1"), ("labels", "b", "cam-1"),
    ]  # fmt: skip
    records = load_records(tmp_path)
    assert sorted(r["site"] for r in records) == ["a", "a", "b", "b"]
    assert all(
        (tmp_path / r["image"]).is_file() and r["image"].startswith(f"images/{r['site']}/cam-1/") for r in records
    )
    groups = build_report(records)["groups"]
    assert [(g["site"], g["cam"], g["examples"]) for g in groups] == [("a", "cam-1", 2), ("b", "cam-1", 2)]
