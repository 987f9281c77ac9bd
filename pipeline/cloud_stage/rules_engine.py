"""Apply the configured rules (``cloud.rules``) to one verified event.

The rules themselves are the pure state machines of :mod:`pipeline.operators.rules`
(presence / zone / dwell / line / count, camera + label filters, schedule). This module feeds
them each event with its *fused* score and keeps their state in a changelogged Faust table,
one key per :func:`~pipeline.operators.rules.state_key` (``rule|site/cam|track``, or
``rule|site/cam|zone`` for count rules), so a restarted worker resumes where the last one committed.

State writes are staged (:class:`StagedState`) and committed only after any alert the event
caused has been acknowledged by Kafka: a crash in between re-derives the same hit on replay.
"""

from __future__ import annotations

from collections.abc import Callable, MutableMapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from pipeline.operators.person_links import resolve
from pipeline.operators.rules import (
    Observation,
    RuleHit,
    RuleSpec,
    camera_key,
    evaluate,
    rewind_line_state,
    state_key,
)
from pipeline.operators.schema import Event
from pipeline.settings import RuleSettings

_DELETE = object()


@dataclass(frozen=True, slots=True)
class Firing:
    rule: RuleSpec
    hit: RuleHit

    @property
    def incident_key(self) -> str:
        return self.hit.incident_key


class StagedState:
    """Reads through to the table, buffers writes (None = delete) until :meth:`commit`."""

    def __init__(self, table: MutableMapping[str, Any]) -> None:
        self.table = table
        self.pending: dict[str, Any] = {}

    def get(self, key: str) -> Any:
        if key in self.pending:
            value = self.pending[key]
            return None if value is _DELETE else value
        return self.table.get(key)

    def put(self, key: str, value: dict[str, Any] | None) -> None:
        self.pending[key] = _DELETE if value is None else value

    def commit(self) -> None:
        for key, value in self.pending.items():
            if value is _DELETE:
                if key in self.table:
                    del self.table[key]
            else:
                self.table[key] = value
        self.pending.clear()


class RulesEngine:
    """Evaluates every rule (validated at start-up: a bad zone or schedule is a ConfigError)."""

    def __init__(
        self,
        rules: Sequence[RuleSettings],
        live: Callable[[str], list[RuleSpec]] | None = None,
        *,
        link_window_ms: int = 0,
    ) -> None:
        self.specs = [RuleSpec.from_settings(r) for r in rules]
        self._live = live  # a camera's rules from the config topic (console, `pipeline config set`)
        self.link_window_ms = link_window_ms
        self.expired: list[tuple[str, int]] = []  # (camera key, person) forgotten by the last apply()

    def specs_for(self, cam: str) -> list[RuleSpec]:
        """The rules of a camera (``cam``: its :func:`~pipeline.operators.rules.camera_key`)."""
        return self.specs + self._live(cam) if self._live is not None else self.specs

    def apply(self, event: Event, fused: float, state: StagedState) -> list[Firing]:
        """Every rule on ``event``; track rules see the track's *person* (:mod:`pipeline.operators.person_links`)."""
        cam = camera_key(event.site, event.cam)
        specs = self.specs_for(cam)
        links_key = f"links|{cam}"
        res = resolve(state.get(links_key), event.track, event.type, event.ts, link=event.attrs.get("link"),
                      window_ms=self.link_window_ms)  # fmt: skip
        state.put(links_key, res.state)
        self.expired = [(cam, p) for p in res.expired]
        for _, person in self.expired:  # forgotten people: their rule state goes (bounded table)
            for spec in specs:
                if spec.kind != "count":
                    state.put(state_key(spec, cam, person), None)
        obs = Observation.from_event(event, fused)
        # a person's state outlives the end of one of their tracks: it is deleted when they expire
        gone_now = res.person in res.expired  # links off: the person ends with the track, as before
        kept_type = "track_updated" if obs.event_type == "track_ended" and not gone_now else obs.event_type
        person_obs = replace(obs, track=res.person, event_type=kept_type, source=event.track)
        if res.undone is not None:  # a wrong link was undone: the person's path loses the newcomer's points
            newcomer, left = res.undone
            for spec in specs:
                if spec.kind == "line":
                    key = state_key(spec, cam, left)
                    state.put(key, rewind_line_state(state.get(key), newcomer))
        out: list[Firing] = []
        for spec in specs:
            if not spec.applies_to(cam, event.label):
                continue
            if res.stale and spec.kind != "count":
                continue  # a lost track's late end: its box is the person's past, not news
            o = obs if spec.kind == "count" else person_obs
            key = state_key(spec, cam, o.track)
            result = evaluate(spec, o, state.get(key))
            state.put(key, result.state)
            if result.hit is not None:
                out.append(Firing(spec, replace(result.hit, track=event.track)))
        return out
