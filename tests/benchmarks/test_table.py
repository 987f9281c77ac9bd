"""The benchmark results table: ratios, pass/fail, and the text, JSON and Markdown renderings.

The benchmarks themselves never run in the test suite (no timing asserts here).
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime

import pytest

from benchmarks.__main__ import BENCHMARKS, parse_args
from benchmarks.edge_cost import matched_pairs
from benchmarks.harness import median, quantile
from benchmarks.table import (
    Row,
    Target,
    at_least,
    at_most,
    cpu_model,
    machine_info,
    ratio_at_least,
    ratio_at_most,
    ratio_of,
    render_markdown,
    render_text,
    rows_from_json,
    to_json,
)
from pipeline.operators.tracking import Detection

pytestmark = pytest.mark.unit


def test_ratio_is_value_over_baseline() -> None:
    assert ratio_of(30.0, 10.0) == 3.0
    assert ratio_of(None, 10.0) is None
    assert ratio_of(1.0, None) is None
    assert ratio_of(1.0, 0.0) is None
    assert ratio_of(math.nan, 1.0) is None


@pytest.mark.parametrize(
    ("target", "value", "baseline", "passed"),
    [
        (at_least(4), 4.0, None, True),
        (at_least(4), 3.99, None, False),
        (at_most(2.0), 1.5, None, True),
        (at_most(2.0), 2.5, None, False),
        (ratio_at_least(10), 25_000.0, 2_000.0, True),  # 12.5x
        (ratio_at_least(10), 15_000.0, 2_000.0, False),  # 7.5x
        (ratio_at_most(1.0), 90.0, 100.0, True),  # p99 no worse than the baseline
        (ratio_at_most(1.0), 110.0, 100.0, False),
        (ratio_at_least(3), 10.0, None, None),  # no baseline: not judged
        (at_least(4), None, None, None),  # no value: not judged
    ],
)
def test_pass_fail(target: Target, value: float | None, baseline: float | None, passed: bool | None) -> None:
    row = Row.make("x", value, "u", baseline=baseline, target=target)
    assert row.passed is passed


def test_row_without_target_is_informational() -> None:
    row = Row.make("events per track", 6.2)
    assert row.passed is None
    assert row.target == ""
    assert row.ratio is None


def test_target_text() -> None:
    assert at_least(20_000).text("ev/s") == ">= 20,000 ev/s"
    assert at_most(2).text("ms") == "<= 2 ms"
    assert ratio_at_least(3).text() == "ratio >= 3x"
    assert ratio_at_most(0.001).text("B/min") == "ratio <= 0.001x"


def _rows() -> list[Row]:
    return [
        Row.make("bridge events/s", 25_000.0, "ev/s", baseline=2_000.0, baseline_label="naive loop",
                 target=ratio_at_least(10), group="bridge", note="2 feeders"),
        Row.make("gated-off frame p50", 0.8, "ms", target=at_most(2.0), group="edge cost"),
        Row.make("events per track", 6.19, group="bandwidth"),
        Row.make("a | pipe", None, group="bandwidth", note="did not complete"),
    ]  # fmt: skip


def test_render_text_has_one_line_per_row_and_group_headers() -> None:
    text = render_text(_rows())
    lines = text.splitlines()
    assert lines[0].split()[:2] == ["figure", "value"]
    assert "[bridge]" in lines and "[edge cost]" in lines and "[bandwidth]" in lines
    bridge = next(line for line in lines if line.startswith("bridge events/s"))
    assert "25,000 ev/s" in bridge and "2,000 (naive loop)" in bridge and "12.5x" in bridge
    assert bridge.rstrip().endswith("PASS")
    assert next(line for line in lines if line.startswith("gated-off")).rstrip().endswith("PASS")
    assert next(line for line in lines if line.startswith("events per track")).rstrip().endswith("-")


def test_json_round_trip() -> None:
    rows = _rows()
    doc = json.loads(to_json(rows, {"cores": 2}, {"series": {"x": [1, 2]}}))
    assert doc["machine"] == {"cores": 2}
    assert doc["series"] == {"x": [1, 2]}
    assert doc["rows"][0]["ratio"] == 12.5 and doc["rows"][0]["passed"] is True
    assert rows_from_json(to_json(rows)) == rows


def test_json_rejects_nan() -> None:
    with pytest.raises(ValueError, match="Out of range"):
        to_json([Row(figure="x", value=math.nan)])


def test_markdown_has_machine_info_table_and_notes() -> None:
    machine = machine_info(datetime(2026, 1, 2, 3, 4, tzinfo=UTC), mode="quick").as_dict()
    md = render_markdown(_rows(), machine, title="Benchmark results")
    lines = md.splitlines()
    assert lines[0] == "# Benchmark results"
    assert "- date: 2026-01-02 03:04 UTC" in lines
    assert "- mode: quick" in lines
    assert any(line.startswith("- cores: ") for line in lines)
    header = next(i for i, line in enumerate(lines) if line.startswith("| benchmark |"))
    assert lines[header + 1].startswith("|---|")
    table = [line for line in lines[header + 2 :] if line.startswith("| ")]
    assert len(table) == 4
    assert all(line.count(" | ") == 6 for line in table[:3])  # 7 cells
    assert "a \\| pipe" in md  # pipes escaped
    assert "- bridge events/s: 2 feeders" in lines


def test_cpu_model_from_cpuinfo() -> None:
    assert cpu_model("processor\t: 0\nmodel name\t: AMD EPYC 7B13\n") == "AMD EPYC 7B13"


def test_helpers() -> None:
    assert median([3.0, None, 1.0, 2.0]) == 2.0
    assert median([]) is None
    assert quantile([], 0.5) is None
    assert quantile([1.0, 2.0, 3.0, 4.0], 0.5) == 2.5


def test_iou_matching_is_one_to_one() -> None:
    a = [Detection((0.0, 0.0, 0.2, 0.4), 0.9, "person"), Detection((0.5, 0.5, 0.7, 0.9), 0.8, "person")]
    b = [Detection((0.01, 0.0, 0.2, 0.41), 0.7, "person"), Detection((0.0, 0.0, 0.2, 0.4), 0.6, "person")]
    assert matched_pairs(a, b) == 1  # two candidates for the first box, none for the second
    assert matched_pairs(a, a) == 2
    assert matched_pairs(a, []) == 0


def test_cli_selects_benchmarks() -> None:
    assert parse_args([]).names == list(BENCHMARKS)
    args = parse_args(["--quick", "--only", "bandwidth,edge_cost", "--out", "/tmp/x"])
    assert args.quick and args.names == ["bandwidth", "edge_cost"] and str(args.out) == "/tmp/x"
    with pytest.raises(SystemExit):
        parse_args(["--only", "nope"])
