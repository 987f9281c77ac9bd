"""One person across a broken track: which *person* a camera's track belongs to, for the rules.

The edge's tracker keeps an identity through occlusions it can mend (same track id). When it
cannot (the person comes back too far away, or looking too different, for re-identification)
it starts a new track and names, in the ``track_started`` event's ``attrs["link"]``, the lost or
recently ended track this one probably continues. The cloud's rules then key presence, zone,
dwell and line state by the *person* (the first track of such a chain) instead of the track, so
a broken track raises no second ``presence`` alert and does not reset a dwell.

Pure and deterministic: the state is one small JSON record per camera, updated in the camera's
partition order, so reprocessing gives the same persons and therefore the same alert ids.
Bounded: a person is forgotten ``window_ms`` after its last track ended (its rule state and
incidents are deleted then, see ``expired``), and at most ``max_people`` are remembered.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

MAX_PEOPLE = 512


@dataclass(frozen=True, slots=True)
class Resolution:
    person: int  # the id rules key this event's track by
    expired: list[int] = field(default_factory=list)  # persons forgotten now: delete their rule state
    state: dict[str, Any] = field(default_factory=dict)
    unlinked: bool = False  # a wrong link was undone at this event: the person's path state is unreliable
    # with ``unlinked``: (the track that left, the person it left); their path state is rewound
    undone: tuple[int, int] | None = None
    # a lost track's late ``track_ended`` while another track of its person reports: its box is
    # where the person *was*, so the person's path and zone state must not take it
    stale: bool = False


def resolve(
    state: Mapping[str, Any] | None,
    track: int,
    event_type: str,
    ts_ms: int,
    *,
    link: object = None,
    window_ms: int = 10_000,
    max_people: int = MAX_PEOPLE,
) -> Resolution:
    """The person of ``track`` at this event, and the camera's new link state.

    ``link`` (from a ``track_started`` event's attrs) joins the track to that track's person.
    When a person's last track ends, the person is kept ``window_ms`` for a late link, then
    expired; with ``window_ms == 0`` every track is its own person and expires as it ends
    (the behaviour without links).
    """
    st = state or {}
    cur: dict[str, int] = {k: int(v) for k, v in dict(st.get("cur", {})).items()}
    of: dict[str, int] = {k: int(v) for k, v in dict(st.get("of", {})).items()}
    live: dict[str, int] = {k: int(v) for k, v in dict(st.get("n", {})).items()}
    gone: dict[str, int] = {k: int(v) for k, v in dict(st.get("gone", {})).items()}
    expired = [int(p) for p, until in gone.items() if ts_ms > until]
    for p in expired:
        del gone[str(p)]
        cur.pop(str(p), None)
        of = {t: q for t, q in of.items() if q != p}
    key = str(track)
    newly = key not in of
    unlinked = False
    undone: tuple[int, int] | None = None
    if newly:
        person = track
        if window_ms > 0 and isinstance(link, int) and not isinstance(link, bool) and link != track:
            person = of.get(str(link), person)
        of[key] = person
        live[str(person)] = live.get(str(person), 0) + 1
        gone.pop(str(person), None)  # a late link revives the person
    person = of[key]
    current = cur.get(str(person))
    reporting = not newly and event_type != "track_ended"  # a lost track's late end is no report
    if reporting and current is not None and current != track and live.get(str(person), 0) > 1:
        # Two live tracks of one person both report: the link was wrong (the lost track came back,
        # or the new one is someone else). The newcomer leaves the person and is its own from now on.
        # The newcomer is the track that joined last: not the person's first track, and of two
        # later ones the younger (edge track ids grow; ``cur`` names the last track that started
        # or reported, so it cannot tell which joined first).
        newcomer = current if track == person else track if current == person else max(track, current)
        undone = (newcomer, person)
        live[str(person)] -= 1
        of[str(newcomer)] = newcomer
        live[str(newcomer)] = live.get(str(newcomer), 0) + 1
        cur[str(newcomer)] = newcomer
        person = of[key]
        unlinked = True
    stale = event_type == "track_ended" and current is not None and current != track
    if not stale:
        cur[str(person)] = track
    if event_type == "track_ended":
        left = live.get(str(person), 1) - 1
        if left > 0:
            live[str(person)] = left
        else:
            live.pop(str(person), None)
            if window_ms > 0:
                gone[str(person)] = ts_ms + window_ms
            else:
                expired.append(person)
                cur.pop(str(person), None)
                of = {t: q for t, q in of.items() if q != person}
    # bounded: forget the oldest-ending people first (their state goes with them)
    while len(gone) > max_people:
        oldest = min(gone, key=lambda k: gone[k])
        del gone[oldest]
        cur.pop(oldest, None)
        expired.append(int(oldest))
        of = {t: q for t, q in of.items() if q != int(oldest)}
    while len(of) > 4 * max_people:  # tracks whose end never arrived: the oldest go first
        of.pop(next(iter(of)))
    cur = {p: t for p, t in cur.items() if p in live or p in gone}
    return Resolution(person, expired, {"of": of, "n": live, "gone": gone, "cur": cur}, unlinked, undone, stale)
