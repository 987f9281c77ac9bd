"""The zone/line editor's form -> a camera config change, validated before anything is sent.

A shape drawn on the snapshot arrives as normalised points (JSON) with a name, a kind and the
rule's parameters. Cloud rules (line, zone, dwell, count) are checked twice, by the settings
model (:class:`pipeline.settings.RuleSettings`) and by the rule itself
(:class:`pipeline.operators.rules.RuleSpec`: polygon shape, segment, geometry for the kind), and
restricted to the camera they were drawn on; a mask is checked by :class:`CameraSettings`.
Errors come back as a list of sentences for the page, never as an exception.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from pipeline.errors import ConfigError
from pipeline.operators.rules import RuleSpec
from pipeline.settings import CameraSettings, RuleSettings

KINDS = ("line", "zone", "dwell", "count", "mask")


@dataclass(frozen=True, slots=True)
class RuleForm:
    kind: str
    name: str
    cam: str
    points: list[tuple[float, float]]
    params: dict[str, Any]

    @classmethod
    def parse(cls, form: dict[str, str], cam: str) -> RuleForm | list[str]:
        errors: list[str] = []
        kind = form.get("kind", "")
        if kind not in KINDS:
            errors.append(f"kind must be one of {', '.join(KINDS)}")
        name = form.get("name", "").strip()
        if kind != "mask" and not name:
            errors.append("give the rule a name")
        try:
            raw = json.loads(form.get("points", "") or "[]")
            points = [(float(x), float(y)) for x, y in raw]
        except (ValueError, TypeError):
            errors.append("points must be a JSON list of [x, y] pairs")
            points = []
        if kind == "line" and len(points) != 2:
            errors.append(f"a line needs 2 points, got {len(points)}: click its start, then its end")
        if kind in ("zone", "dwell", "count", "mask") and len(points) < 3:
            errors.append(f"a {kind} needs a polygon of at least 3 points, got {len(points)}")
        params: dict[str, Any] = {}
        for key, cast in (("min_score", float), ("dwell_s", float), ("count", int), ("window_s", float),
                          ("cooldown_s", float)):  # fmt: skip
            text = form.get(key, "").strip()
            if text:
                try:
                    params[key] = cast(text)
                except ValueError:
                    errors.append(f"{key} must be a number, got {text!r}")
        if form.get("direction"):
            params["direction"] = form["direction"]
        labels = [s.strip() for s in form.get("labels", "person").split(",") if s.strip()]
        params["labels"] = labels
        return errors if errors else cls(kind, name, cam, points, params)

    def rule(self) -> RuleSettings | list[str]:
        data: dict[str, Any] = {"id": self.name, "kind": self.kind, "cameras": [self.cam], **self.params}
        if self.kind == "line":
            data["line"] = [list(p) for p in self.points]
        else:
            data["zone"] = [list(p) for p in self.points]
        try:
            settings = RuleSettings.model_validate(data)
            RuleSpec.from_settings(settings)
        except ValidationError as exc:
            return [f"{'.'.join(str(x) for x in e['loc'])}: {e['msg']}" for e in exc.errors()]
        except ConfigError as exc:
            return [str(exc)]
        return settings


def drawn(current: dict[str, Any]) -> dict[str, Any]:
    """What the console draws of a camera's config (``rules`` and ``masks``). Every record it
    sends carries both: MQTT retains only a camera's last config record, which is all a restarted
    console sees, so a mask change that left the rules out would make the next rule save drop
    every earlier rule."""
    return {key: current[key] for key in ("rules", "masks") if key in current}


def rules_config(current: dict[str, Any], form: RuleForm) -> dict[str, Any] | list[str]:
    """The camera's new ``rules`` (the drawn one replaces a rule of the same name), masks kept."""
    rule = form.rule()
    if isinstance(rule, list):
        return rule
    kept = [r for r in current.get("rules") or [] if isinstance(r, dict) and r.get("id") != rule.id]
    return {**drawn(current), "rules": [*kept, rule.model_dump(mode="json")]}


def mask_config(current: dict[str, Any], form: RuleForm) -> dict[str, Any]:
    """The camera's masks with the drawn one added, rules kept."""
    masks = [*list(current.get("masks") or []), [list(p) for p in form.points]]
    return {**drawn(current), "masks": masks}


def check_camera_config(cam: str, config: dict[str, Any]) -> list[str]:
    try:
        CameraSettings.model_validate({"id": cam, "source": "validate", **config})
    except ValidationError as exc:
        return [f"{'.'.join(str(x) for x in e['loc'])}: {e['msg']}" for e in exc.errors()]
    return []
