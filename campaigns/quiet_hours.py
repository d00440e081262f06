"""Quiet hours are local to each contact: when are they on, and when do they end?"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from collections.abc import Iterable

UTC = dt.UTC


def quiet_release_at(now: dt.datetime, tz_name: str, start: dt.time, end: dt.time) -> dt.datetime | None:
    """The UTC instant quiet hours end if ``now`` falls inside them in ``tz_name``, else None.

    ``start`` > ``end`` means the window wraps midnight (21:00-08:00). Equal times mean no
    quiet hours. On a DST change day the end is the first instant the local clock shows
    ``end`` or later: an end inside a spring-forward gap releases at the gap's end.
    """
    if start == end:
        return None
    zone = zoneinfo.ZoneInfo(tz_name)
    local = now.astimezone(zone)
    clock = local.time().replace(tzinfo=None)
    if start < end:
        inside = start <= clock < end
        end_date = local.date()
    else:
        inside = clock >= start or clock < end
        end_date = local.date() + dt.timedelta(days=1) if clock >= start else local.date()
    if not inside:
        return None
    return _first_instant_at_or_after(end_date, end, zone)


def _exists(naive: dt.datetime, zone: zoneinfo.ZoneInfo) -> bool:
    return naive.replace(tzinfo=zone).astimezone(UTC).astimezone(zone).replace(tzinfo=None) == naive


def _first_instant_at_or_after(day: dt.date, wall: dt.time, zone: zoneinfo.ZoneInfo) -> dt.datetime:
    naive = dt.datetime.combine(day, wall)
    # A wall time inside a spring-forward gap does not exist: move to the first one that does
    # (a gap is never longer than a few hours). An ambiguous (fall-back) time takes its first
    # occurrence (fold=0).
    for _ in range(24 * 60):
        if _exists(naive, zone):
            break
        naive = (naive + dt.timedelta(minutes=1)).replace(second=0, microsecond=0)
    return naive.replace(tzinfo=zone, fold=0).astimezone(UTC)


def quiet_releases(now: dt.datetime, tz_names: Iterable[str], start: dt.time, end: dt.time) -> dict[str, dt.datetime]:
    """For each time zone now inside quiet hours, the UTC instant they end."""
    releases = {}
    for name in tz_names:
        release = quiet_release_at(now, name, start, end)
        if release is not None:
            releases[name] = release
    return releases
