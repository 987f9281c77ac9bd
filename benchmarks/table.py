"""The results table: one :class:`Row` per figure, with its baseline, ratio, target and verdict.

Pure: no clocks, no I/O beyond what the render functions return as strings. A row's ``ratio`` is
``value / baseline`` when both exist. A :class:`Target` checks either the value or the ratio
against a bound; a row without a target is informational (``passed`` is None, shown as "-").
"""

from __future__ import annotations

import json
import math
import os
import platform
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

Op = Literal[">=", "<="]
On = Literal["value", "ratio"]


@dataclass(frozen=True, slots=True)
class Target:
    """``value >= bound`` (or ``<=``), or the same on the ratio to the baseline."""

    op: Op
    bound: float
    on: On = "value"

    def check(self, value: float | None, ratio: float | None) -> bool | None:
        x = value if self.on == "value" else ratio
        if x is None or math.isnan(x):
            return None
        return x >= self.bound if self.op == ">=" else x <= self.bound

    def text(self, unit: str = "") -> str:
        bound = _num(self.bound)
        if self.on == "ratio":
            return f"ratio {self.op} {bound}x"
        return f"{self.op} {bound}{(' ' + unit) if unit else ''}"


def at_least(bound: float) -> Target:
    return Target(">=", bound)


def at_most(bound: float) -> Target:
    return Target("<=", bound)


def ratio_at_least(bound: float) -> Target:
    return Target(">=", bound, "ratio")


def ratio_at_most(bound: float) -> Target:
    return Target("<=", bound, "ratio")


def ratio_of(value: float | None, baseline: float | None) -> float | None:
    if value is None or baseline is None or baseline == 0 or math.isnan(value) or math.isnan(baseline):
        return None
    return value / baseline


@dataclass(frozen=True, slots=True)
class Row:
    figure: str
    value: float | None
    unit: str = ""
    baseline: float | None = None
    baseline_label: str = ""  # what the baseline is, e.g. "naive loop"
    ratio: float | None = None
    target: str = ""
    passed: bool | None = None
    note: str = ""
    group: str = ""  # the benchmark that produced it

    @classmethod
    def make(
        cls,
        figure: str,
        value: float | None,
        unit: str = "",
        *,
        baseline: float | None = None,
        baseline_label: str = "",
        target: Target | None = None,
        note: str = "",
        group: str = "",
    ) -> Row:
        ratio = ratio_of(value, baseline)
        return cls(
            figure=figure,
            value=value,
            unit=unit,
            baseline=baseline,
            baseline_label=baseline_label,
            ratio=ratio,
            target=target.text(unit) if target else "",
            passed=target.check(value, ratio) if target else None,
            note=note,
            group=group,
        )

    def with_group(self, group: str) -> Row:
        return Row(**{**asdict(self), "group": group})


def _num(x: float | None, digits: int = 3) -> str:
    """Compact number: 3 significant digits, thousands separators for big ones."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    if math.isinf(x):
        return "inf"
    ax = abs(x)
    if ax >= 1000:
        return f"{x:,.0f}"
    if ax >= 100 or float(x).is_integer():
        return f"{x:.0f}"
    if ax >= 10:
        return f"{x:.1f}"
    if ax >= 1:
        return f"{x:.2f}"
    return f"{x:.{digits}g}"


def verdict(passed: bool | None) -> str:
    return "-" if passed is None else ("PASS" if passed else "FAIL")


def cells(row: Row) -> list[str]:
    value = _num(row.value) + (f" {row.unit}" if row.unit and row.value is not None else "")
    base = _num(row.baseline)
    if row.baseline is not None and row.baseline_label:
        base = f"{base} ({row.baseline_label})"
    ratio = "-" if row.ratio is None else f"{_num(row.ratio)}x"
    return [row.figure, value, base, ratio, row.target or "-", verdict(row.passed)]


HEADER = ["figure", "value", "baseline (same run)", "ratio", "target", "pass"]


def render_text(rows: Sequence[Row]) -> str:
    """A fixed-width table for the terminal, one block per benchmark group."""
    body = [cells(r) for r in rows]
    widths = [max(len(h), *(len(c[i]) for c in body)) if body else len(h) for i, h in enumerate(HEADER)]

    def line(cs: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(cs, widths, strict=True)).rstrip()

    out = [line(HEADER), line(["-" * w for w in widths])]
    group = None
    for r, cs in zip(rows, body, strict=True):
        if r.group != group and r.group:
            out.append(f"[{r.group}]")
            group = r.group
        out.append(line(cs))
    return "\n".join(out)


def _md_escape(s: str) -> str:
    return s.replace("|", "\\|")


def render_markdown(rows: Sequence[Row], machine: Mapping[str, Any] | None = None, title: str = "Results") -> str:
    lines = [f"# {title}", ""]
    if machine:
        lines += [f"- {k}: {v}" for k, v in machine.items()]
        lines.append("")
    lines.append("| " + " | ".join(["benchmark", *HEADER]) + " |")
    lines.append("|" + "---|" * (len(HEADER) + 1))
    for r in rows:
        lines.append("| " + " | ".join(_md_escape(c) for c in [r.group, *cells(r)]) + " |")
    notes = [(r.figure, r.note) for r in rows if r.note]
    if notes:
        lines += ["", "Notes:", ""]
        lines += [f"- {_md_escape(f)}: {_md_escape(n)}" for f, n in notes]
    return "\n".join(lines) + "\n"


def to_json(
    rows: Iterable[Row], machine: Mapping[str, Any] | None = None, extra: Mapping[str, Any] | None = None
) -> str:
    doc: dict[str, Any] = {"v": 1, "machine": dict(machine or {}), "rows": [asdict(r) for r in rows]}
    if extra:
        doc.update(extra)
    return json.dumps(doc, indent=2, default=_json_default, allow_nan=False)


def _json_default(o: Any) -> Any:
    if isinstance(o, Path):
        return str(o)
    if hasattr(o, "item"):  # numpy scalars
        return o.item()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def rows_from_json(text: str) -> list[Row]:
    return [Row(**r) for r in json.loads(text)["rows"]]


@dataclass(frozen=True, slots=True)
class MachineInfo:
    cpu_model: str
    cores: int
    date: str
    python: str
    platform: str
    extra: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        d = {
            "cpu": self.cpu_model,
            "cores": self.cores,
            "date": self.date,
            "python": self.python,
            "platform": self.platform,
        }
        d.update(self.extra)
        return d


def cpu_model(cpuinfo: str | None = None) -> str:
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return platform.processor() or "unknown"
    for line in cpuinfo.splitlines():
        if line.lower().startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def machine_info(now: datetime | None = None, **extra: str) -> MachineInfo:
    return MachineInfo(
        cpu_model=cpu_model(),
        cores=os.cpu_count() or 1,
        date=(now or datetime.now(UTC)).strftime("%Y-%m-%d %H:%M UTC"),
        python=platform.python_version(),
        platform=platform.platform(terse=True),
        extra=dict(extra),
    )
