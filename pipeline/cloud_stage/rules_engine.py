"""Apply the configured rules (``cloud.rules``) to one verified event.

The rules themselves are the pure state machines of :mod:`pipeline.operators.rules`
(presence / zone / dwell / line / count, camera + label filters, schedule). This module feeds
them each event with its *fused* score and keeps their state in a changelogged Faust table,
one key per :func:`~pipeline.operators.rules.state_key` (``rule|cam|track``, or
``rule|cam|zone`` for count rules), so a restarted worker resumes where the last one committed.

State writes are staged (:class:`StagedState`) and committed only after any alert the event
caused has been acknowledged by Kafka: a crash in between re-derives the same hit on replay.
"""

from __future__ import annotations

from collections.abc import Callable, MutableMapping, Sequence
from dataclasses import dataclass
from typing import Any

from pipeline.operators.rules import Observation, RuleHit, RuleSpec, evaluate, state_key
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

    def __init__(self, rules: Sequence[RuleSettings], live: Callable[[str], list[RuleSpec]] | None = None) -> None:
        self.specs = [RuleSpec.from_settings(r) for r in rules]
        self._live = live  # a camera's rules from the config topic (console, `pipeline config set`)

    def specs_for(self, cam: str) -> list[RuleSpec]:
        return self.specs + self._live(cam) if self._live is not None else self.specs

    def apply(self, event: Event, fused: float, state: StagedState) -> list[Firing]:
        obs = Observation.from_event(event, fused)
        out: list[Firing] = []
        for spec in self.specs_for(event.cam):
            if not spec.applies_to(event.cam, event.label):
                continue
            key = state_key(spec, event.cam, event.track)
            result = evaluate(spec, obs, state.get(key))
            state.put(key, result.state)
            if result.hit is not None:
                out.append(Firing(spec, result.hit))
        return out
