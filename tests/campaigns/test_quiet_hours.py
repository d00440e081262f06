import datetime as dt

import pytest

from campaigns.quiet_hours import quiet_release_at, quiet_releases

UTC = dt.UTC
NIGHT = (dt.time(21, 0), dt.time(8, 0))


@pytest.mark.parametrize(
    ("now_utc", "zone", "expected"),
    [
        # 23:00 in Nairobi (UTC+3): held until 08:00 local next morning = 05:00 UTC.
        (dt.datetime(2026, 11, 27, 20, 0, tzinfo=UTC), "Africa/Nairobi", dt.datetime(2026, 11, 28, 5, 0, tzinfo=UTC)),
        # 03:00 in Nairobi: held until 08:00 the same day.
        (dt.datetime(2026, 11, 27, 0, 0, tzinfo=UTC), "Africa/Nairobi", dt.datetime(2026, 11, 27, 5, 0, tzinfo=UTC)),
        # 15:00 in Nairobi: not quiet.
        (dt.datetime(2026, 11, 27, 12, 0, tzinfo=UTC), "Africa/Nairobi", None),
        # Same instant, 07:00 in New York: quiet until 08:00 EST = 13:00 UTC.
        (
            dt.datetime(2026, 11, 27, 12, 0, tzinfo=UTC),
            "America/New_York",
            dt.datetime(2026, 11, 27, 13, 0, tzinfo=UTC),
        ),
        # Boundaries: 21:00 sharp is quiet, 08:00 sharp is not.
        (dt.datetime(2026, 11, 27, 18, 0, tzinfo=UTC), "Africa/Nairobi", dt.datetime(2026, 11, 28, 5, 0, tzinfo=UTC)),
        (dt.datetime(2026, 11, 27, 5, 0, tzinfo=UTC), "Africa/Nairobi", None),
    ],
)
def test_release_time_is_the_local_end_of_quiet_hours(now_utc, zone, expected):
    assert quiet_release_at(now_utc, zone, *NIGHT) == expected


def test_spring_forward_day_releases_at_local_eight_in_summer_time():
    # New York, 2026-03-08: clocks jump 02:00 EST -> 03:00 EDT. At 01:00 EST (06:00 UTC) the
    # night window ends at 08:00 EDT, which is 12:00 UTC, not 13:00 as on a winter day.
    release = quiet_release_at(dt.datetime(2026, 3, 8, 6, 0, tzinfo=UTC), "America/New_York", *NIGHT)
    assert release == dt.datetime(2026, 3, 8, 12, 0, tzinfo=UTC)


def test_an_end_inside_the_spring_forward_gap_releases_when_the_gap_ends():
    # Quiet 21:00-02:30: 02:30 does not exist on 2026-03-08 in New York; release at 03:00 EDT = 07:00 UTC.
    release = quiet_release_at(
        dt.datetime(2026, 3, 8, 5, 0, tzinfo=UTC), "America/New_York", dt.time(21), dt.time(2, 30)
    )
    assert release == dt.datetime(2026, 3, 8, 7, 0, tzinfo=UTC)


def test_fall_back_day_uses_the_first_of_the_repeated_hour():
    # 2026-11-01 in New York, 01:00-02:00 happens twice. Quiet 00:00-01:30, at 00:10 EDT (04:10 UTC):
    # released at the first 01:30, still EDT, = 05:30 UTC.
    release = quiet_release_at(
        dt.datetime(2026, 11, 1, 4, 10, tzinfo=UTC), "America/New_York", dt.time(0), dt.time(1, 30)
    )
    assert release == dt.datetime(2026, 11, 1, 5, 30, tzinfo=UTC)


def test_a_daytime_window_that_does_not_wrap_midnight():
    lunch = (dt.time(12, 0), dt.time(14, 0))
    assert quiet_release_at(dt.datetime(2026, 6, 1, 12, 30, tzinfo=UTC), "Europe/London", *lunch) == dt.datetime(
        2026, 6, 1, 13, 0, tzinfo=UTC
    )
    assert quiet_release_at(dt.datetime(2026, 6, 1, 14, 30, tzinfo=UTC), "Europe/London", *lunch) is None


def test_equal_start_and_end_means_no_quiet_hours():
    assert quiet_release_at(dt.datetime(2026, 6, 1, 3, 0, tzinfo=UTC), "UTC", dt.time(8), dt.time(8)) is None


def test_releases_lists_only_the_zones_inside_quiet_hours():
    now = dt.datetime(2026, 11, 27, 20, 0, tzinfo=UTC)  # 23:00 Nairobi, 15:00 New York, 01:30 Kolkata
    releases = quiet_releases(now, ["Africa/Nairobi", "America/New_York", "Asia/Kolkata"], *NIGHT)
    assert set(releases) == {"Africa/Nairobi", "Asia/Kolkata"}
    assert releases["Asia/Kolkata"] == dt.datetime(2026, 11, 28, 2, 30, tzinfo=UTC)
