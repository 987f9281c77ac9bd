"""One person across a broken track: the link state machine, and the rules keyed by person."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from pipeline.cloud_stage.alerting import IncidentLedger
from pipeline.cloud_stage.rules_engine import RulesEngine, StagedState
from pipeline.operators.person_links import resolve
from pipeline.operators.rules import rewind_line_state
from pipeline.operators.schema import Event
from pipeline.settings import RuleSettings

pytestmark = pytest.mark.unit
_seq = itertools.count()


def test_a_linked_track_is_the_same_person_until_the_window_passes() -> None:
    st: dict[str, Any] | None = None
    r = resolve(st, 1, "track_started", 0, window_ms=10_000)
    assert r.person == 1
    r = resolve(r.state, 1, "track_ended", 5_000, window_ms=10_000)
    assert r.person == 1 and r.expired == []  # kept for a late link
    r = resolve(r.state, 2, "track_started", 8_000, link=1, window_ms=10_000)
    assert r.person == 1
    r = resolve(r.state, 3, "track_started", 9_000, link=2, window_ms=10_000)
    assert r.person == 1, "a chain of links is one person"
    for t, track in ((10_000, 2), (11_000, 3)):
        r = resolve(r.state, track, "track_ended", t, window_ms=10_000)
        assert r.expired == []
    r = resolve(r.state, 4, "track_started", 21_500, link=3, window_ms=10_000)
    assert r.expired == [1] and r.person == 4, "after the window the person is forgotten"


def test_links_off_every_track_is_its_own_person_and_ends_with_it() -> None:
    r = resolve(None, 1, "track_started", 0, window_ms=0)
    r = resolve(r.state, 2, "track_started", 100, link=1, window_ms=0)
    assert r.person == 2
    r = resolve(r.state, 1, "track_ended", 200, window_ms=0)
    assert r.expired == [1]


def test_state_is_bounded() -> None:
    r = resolve(None, 0, "track_started", 0, max_people=4)
    for t in range(1, 50):
        r = resolve(r.state, t, "track_started", t, max_people=4)
        r = resolve(r.state, t, "track_ended", t, max_people=4)
    assert len(r.state["gone"]) <= 4 and len(r.state["of"]) <= 16


def event(**kw: Any) -> Event:
    base: dict[str, Any] = dict(id=f"e{next(_seq)}", site="s", cam="cam-1", ts=0, seq=1, type="track_updated",
                                track=1, label="person", score=0.9, box=(0.3, 0.4, 0.4, 0.8), det="t")  # fmt: skip
    base.update(kw)
    return Event(**base)


def run(rules: list[RuleSettings], evs: list[Event], window_ms: int) -> list[tuple[str, int]]:
    """(rule, track) of every alert, as the worker makes them."""
    table: dict[str, Any] = {}
    engine, ledger = RulesEngine(rules, link_window_ms=window_ms), IncidentLedger({})
    out = []
    for ev in evs:
        st = StagedState(table)
        for f in engine.apply(ev, ev.score, st):
            opened, key, entry = ledger.decide(f, ev)
            if opened is not None:
                out.append((f.rule.id, ev.track))
            ledger.commit(key, entry)
        st.commit()
        for cam, person in engine.expired:
            ledger.forget(engine.specs, cam, person)
    return out


def broken_walk(link: bool) -> list[Event]:
    """Track 1 walks right and is lost at x=0.45; track 2 (the same person) starts at x=0.55."""
    attrs = {"link": 1} if link else {}
    return [
        event(track=1, ts=0, type="track_started", box=(0.20, 0.4, 0.30, 0.8)),
        event(track=1, ts=4_000, box=(0.40, 0.4, 0.45, 0.8)),
        event(track=1, ts=6_000, type="track_ended", box=(0.40, 0.4, 0.45, 0.8)),
        event(track=2, ts=5_000, type="track_started", box=(0.55, 0.4, 0.60, 0.8), attrs=attrs),
        event(track=2, ts=9_000, box=(0.60, 0.4, 0.65, 0.8)),
    ]


def test_a_broken_track_raises_one_presence_alert_keeps_dwell_and_counts_the_crossing() -> None:
    rules = [
        RuleSettings(id="present", kind="presence"),
        RuleSettings(id="dwell", kind="dwell", zone=[(0.0, 0.0), (1.0, 0.0), (1.0, 1.0), (0.0, 1.0)], dwell_s=8),
        RuleSettings(id="line", kind="line", line=((0.5, 0.0), (0.5, 1.0)), cooldown_s=0),
    ]
    linked = run(rules, sorted(broken_walk(link=True), key=lambda e: e.ts), window_ms=10_000)
    assert [r for r, _ in linked].count("present") == 1
    assert ("dwell", 2) in linked, "dwell counted from track 1's start: 9 s >= 8 s"
    assert ("line", 2) in linked, "the crossing between the two tracks counts"
    unlinked = run(rules, sorted(broken_walk(link=False), key=lambda e: e.ts), window_ms=10_000)
    assert [r for r, _ in unlinked].count("present") == 2
    assert all(r not in ("dwell", "line") for r, _ in unlinked)


def test_a_wrong_link_is_undone_when_both_tracks_report() -> None:
    """Track 2 was linked to lost track 1, then track 1 is re-identified and both report: track 2
    is someone else after all and becomes its own person (no crossings between two people)."""
    r = resolve(None, 1, "track_started", 0)
    r = resolve(r.state, 2, "track_started", 1_000, link=1)
    assert r.person == 1
    r = resolve(r.state, 1, "track_updated", 2_000)  # the lost track came back
    assert r.person == 1
    r = resolve(r.state, 2, "track_updated", 2_200)
    assert r.person == 2
    r = resolve(r.state, 1, "track_updated", 2_400)
    assert r.person == 1
    # a newcomer reporting first is the one that leaves too
    r = resolve(None, 1, "track_started", 0)
    r = resolve(r.state, 3, "track_started", 1_000, link=1)
    r = resolve(r.state, 3, "track_updated", 1_500)
    assert r.person == 1, "while the old track stays silent the link holds"


def test_line_rule_sees_no_crossing_between_two_people_wrongly_linked() -> None:
    rules = [RuleSettings(id="line", kind="line", line=((0.5, 0.0), (0.5, 1.0)), cooldown_s=0)]
    left, right = (0.30, 0.4, 0.36, 0.8), (0.64, 0.4, 0.70, 0.8)
    evs = [event(track=1, ts=0, type="track_started", box=left),
           event(track=2, ts=1_000, type="track_started", box=right, attrs={"link": 1})]  # fmt: skip
    for k in range(6):  # both report, alternating, each on its own side
        evs += [event(track=1, ts=2_000 + 400 * k, box=left), event(track=2, ts=2_200 + 400 * k, box=right)]
    assert len(run(rules, evs, window_ms=10_000)) <= 1  # at most the one made by the link itself


def test_a_wrongly_linked_newcomer_leaves_the_persons_path_as_it_was() -> None:
    """Track 1 walks right towards the line; track 2, someone else on the same side, is linked to
    it while track 1 was briefly unseen. Track 1 then reports from the far side: the link is
    undone at that very report, and track 1's crossing still counts (forgetting the person's side
    there lost it, as on PETS09-S2L1 at 384 px). Track 2's own crossing later counts for track 2."""
    rules = [RuleSettings(id="line", kind="line", line=((0.5, 0.0), (0.5, 1.0)), cooldown_s=0)]
    evs = [event(track=1, ts=0, type="track_started", box=(0.30, 0.4, 0.36, 0.8)),
           event(track=1, ts=1_000, box=(0.38, 0.4, 0.44, 0.8)),
           event(track=2, ts=2_000, type="track_started", box=(0.40, 0.4, 0.46, 0.8), attrs={"link": 1}),
           event(track=1, ts=2_000, box=(0.52, 0.4, 0.58, 0.8)),  # crossed while track 2 joined
           event(track=2, ts=3_000, box=(0.44, 0.4, 0.50, 0.8)),
           event(track=2, ts=4_000, box=(0.56, 0.4, 0.62, 0.8))]  # fmt: skip
    assert run(rules, evs, window_ms=10_000) == [("line", 1), ("line", 2)]


def test_rewinding_keeps_a_path_the_newcomer_never_wrote_and_forgets_one_only_it_wrote() -> None:
    kept = {"side": 1, "ref": [0.4, 0.5], "t": 5, "by": 1, "undo": None}
    assert rewind_line_state(kept, newcomer=2) == kept
    only_newcomer = {"side": -1, "ref": [0.6, 0.5], "t": 5, "by": 2, "undo": None}
    assert rewind_line_state(only_newcomer, newcomer=2) is None
    mixed = {"side": -1, "ref": [0.6, 0.5], "t": 7, "by": 2, "undo": {"side": 1, "ref": [0.4, 0.5], "by": 1}}
    assert rewind_line_state(mixed, newcomer=2) == {"side": 1, "ref": [0.4, 0.5], "t": 7, "by": 1, "undo": None}
    assert rewind_line_state(None, newcomer=2) is None


def test_a_lost_tracks_late_end_does_not_move_its_person_back_into_the_zone() -> None:
    """Track 1 is lost inside the zone; track 2, linked to it, walks the person out. Track 1's
    end, sent later with its last box (inside), is the person's past: no second zone entry, and
    no crossing back over the line (PETS09-S2L1 at 384 px raised both)."""
    zone = [(0.3, 0.0), (0.7, 0.0), (0.7, 1.0), (0.3, 1.0)]
    rules = [RuleSettings(id="zone", kind="zone", zone=zone),
             RuleSettings(id="line", kind="line", line=((0.25, 0.0), (0.25, 1.0)), cooldown_s=0)]  # fmt: skip
    inside, out = (0.45, 0.4, 0.51, 0.8), (0.10, 0.4, 0.16, 0.8)
    evs = [event(track=1, ts=0, type="track_started", box=inside),
           event(track=2, ts=1_000, type="track_started", box=(0.40, 0.4, 0.46, 0.8), attrs={"link": 1}),
           event(track=2, ts=2_000, box=out),
           event(track=1, ts=6_000, type="track_ended", box=inside),  # lost since 0 s, ended late
           event(track=2, ts=6_400, box=out)]  # fmt: skip
    assert run(rules, evs, window_ms=10_000) == [("zone", 1), ("line", 2)]
    r = resolve(None, 1, "track_started", 0)
    r = resolve(r.state, 2, "track_started", 1_000, link=1)
    assert resolve(r.state, 1, "track_ended", 6_000).stale
    assert not resolve(r.state, 2, "track_ended", 6_000).stale, "the track that reported last ends"


def test_of_two_linked_tracks_that_both_report_the_younger_one_leaves() -> None:
    """1 -> 2 -> 3 linked while each was lost; then track 2 comes back and reports after track 3
    started: 3 joined last, so 3 is someone else, and 2 stays the person (it was 3's start, not
    2's report, that ``cur`` last saw)."""
    r = resolve(None, 1, "track_started", 0)
    r = resolve(r.state, 2, "track_started", 1_000, link=1)
    r = resolve(r.state, 1, "track_ended", 1_100)
    r = resolve(r.state, 3, "track_started", 2_000, link=2)
    assert r.person == 1
    r = resolve(r.state, 2, "track_updated", 2_100)  # the lost track 2 came back
    assert r.person == 1 and r.unlinked
    r = resolve(r.state, 3, "track_updated", 2_200)
    assert r.person == 3
