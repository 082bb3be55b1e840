"""Periods and buckets on the streamer's wall clock: DST days, day start hour, odd offsets."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

import pytest

from streamerhub.analytics.periods import (
    RAW,
    Calendar,
    PeriodError,
    all_time_period,
    calendar_period,
    chart_bucket,
    choose_bucket,
    custom_period,
    parse_day,
    split_aligned,
)

UTC = timezone.utc
PARIS = Calendar("Europe/Paris")


def z(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def labels(period) -> list[str]:
    return [b.label.strftime("%H:%M%z") for b in period.buckets()]


def test_spring_forward_day_has_23_hourly_buckets_without_2am() -> None:
    day = calendar_period(PARIS, "day", date(2026, 3, 29))
    assert (day.start, day.end) == (z("2026-03-28T23:00Z"), z("2026-03-29T22:00Z"))
    assert day.bucket == "hour"
    assert labels(day)[:4] == ["00:00+0100", "01:00+0100", "03:00+0200", "04:00+0200"]
    assert len(day.buckets()) == 23


def test_fall_back_day_has_25_hourly_buckets_with_2am_twice() -> None:
    day = calendar_period(PARIS, "day", date(2026, 10, 25))
    assert (day.start, day.end) == (z("2026-10-24T22:00Z"), z("2026-10-25T23:00Z"))
    assert labels(day)[:5] == ["00:00+0200", "01:00+0200", "02:00+0200", "02:00+0100", "03:00+0100"]
    assert len(day.buckets()) == 25
    assert all(b.end - b.start == timedelta(hours=1) for b in day.buckets())


def test_day_start_hour_keeps_a_stream_past_midnight_in_one_day() -> None:
    cal = Calendar("Europe/Paris", day_start_hour=6)
    went_live, went_offline = z("2026-03-28T21:00Z"), z("2026-03-29T00:30Z")  # 22:00 → 02:30 local
    assert cal.day_of(went_live) == cal.day_of(went_offline) == date(2026, 3, 28)
    day = calendar_period(cal, "day", went_offline)
    assert day.start == z("2026-03-28T05:00Z")  # 06:00 CET
    assert day.end == z("2026-03-29T04:00Z")  # 06:00 CEST: 23 hours later
    assert labels(day)[0] == "06:00+0100" and len(day.buckets()) == 23


def test_week_starts_monday_and_spans_the_dst_change() -> None:
    week = calendar_period(PARIS, "week", z("2026-03-29T12:00Z"))
    assert week.calendar.local(week.start).strftime("%a %H:%M") == "Mon 00:00"
    assert week.end - week.start == timedelta(hours=7 * 24 - 1)
    assert [b.label.day for b in week.buckets()] == [23, 24, 25, 26, 27, 28, 29]
    assert week.bucket == "day"


def test_month_buckets_are_local_days() -> None:
    month = calendar_period(PARIS, "month", date(2026, 3, 15))
    assert (month.start, month.end) == (z("2026-02-28T23:00Z"), z("2026-03-31T22:00Z"))
    assert len(month.buckets()) == 31
    assert month.buckets()[28].end - month.buckets()[28].start == timedelta(hours=23)  # the 29th


def test_buckets_in_new_york_with_a_4am_day_start() -> None:
    cal = Calendar("America/New_York", day_start_hour=4)
    late_night = z("2026-07-04T07:30Z")  # 03:30 EDT on the 4th: still the 3rd
    assert cal.day_of(late_night) == date(2026, 7, 3)
    period = custom_period(cal, date(2026, 7, 1), date(2026, 7, 3))
    assert period.start == z("2026-07-01T08:00Z") and period.end == z("2026-07-04T08:00Z")
    assert period.bucket == "hour" and len(period.buckets()) == 72


def test_half_hour_zone_buckets_are_whole_local_hours() -> None:
    cal = Calendar("Asia/Kolkata")
    day = calendar_period(cal, "day", date(2026, 1, 10))
    assert day.start == z("2026-01-09T18:30Z")
    assert [b.start.minute for b in day.buckets()] == [30] * 24
    # Every bucket still maps onto the rollups without reading raw rows.
    assert all(r != RAW for b in day.buckets() for r, _, _ in split_aligned(b.start, b.end))


def test_all_time_uses_month_buckets_from_the_first_data() -> None:
    period = all_time_period(PARIS, z("2023-05-17T10:00Z"), now=z("2026-05-02T10:00Z"))
    assert period.bucket == "month"
    assert period.calendar.local(period.start).isoformat() == "2023-05-01T00:00:00+02:00"
    assert period.calendar.local(period.end).isoformat() == "2026-06-01T00:00:00+02:00"
    assert len(period.buckets()) == 37
    assert choose_bucket(z("2026-01-01T00:00Z"), z("2026-12-01T00:00Z")) == "week"


def test_today_so_far_is_compared_with_yesterday_at_the_same_time() -> None:
    day = calendar_period(PARIS, "day", date(2026, 3, 29))
    now = z("2026-03-29T08:00Z")  # 10:00 CEST
    assert day.until(now) == now
    # Yesterday 00:00 CET → 10:00 CET: the same wall-clock span, an hour longer in real time.
    assert day.previous(now) == (z("2026-03-27T23:00Z"), z("2026-03-28T09:00Z"))
    assert day.previous(z("2026-04-02T00:00Z")) == (z("2026-03-27T23:00Z"), day.start)


def test_month_comparison_clamps_to_the_shorter_month() -> None:
    month = calendar_period(PARIS, "month", date(2026, 3, 31))
    now = z("2026-03-31T10:00Z")  # 31 March, 12:00 CEST
    start, until = month.previous(now)
    assert PARIS.local(start).isoformat() == "2026-02-01T00:00:00+01:00"
    assert until == month.start  # no 31 Feb: all of February


def test_split_aligned_covers_the_range_exactly() -> None:
    lo, hi = z("2026-03-28T22:07:13Z"), z("2026-03-31T05:20Z")
    pieces = split_aligned(lo, hi)
    assert pieces[0] == (RAW, lo, z("2026-03-28T22:15Z"))
    assert pieces[-1] == (RAW, z("2026-03-31T05:15Z"), hi)
    assert [p[0] for p in pieces] == [RAW, 900, 3600, 86400, 3600, 900, RAW]
    assert all(a[2] == b[1] for a, b in zip(pieces, pieces[1:]))
    assert split_aligned(hi, lo) == []


def test_naive_datetimes_and_bad_kinds_are_refused() -> None:
    with pytest.raises(PeriodError, match="no time zone"):
        PARIS.day_of(datetime(2026, 1, 1))
    with pytest.raises(PeriodError, match="unknown period"):
        calendar_period(PARIS, "fortnight")
    with pytest.raises(PeriodError, match="ends before it starts"):
        custom_period(PARIS, date(2026, 2, 2), date(2026, 2, 1))


@pytest.mark.parametrize("text", ["2025-13-01", "yesterday", "2025-6-1", "20250601", ""])
def test_one_date_parser_names_the_field_it_refuses(text: str) -> None:
    with pytest.raises(PeriodError, match=f"To: {text!r} is not a date like 2025-06-01"):
        parse_day(text, "To")
    assert parse_day(" 2025-06-01 ", "From") == date(2025, 6, 1)


def test_a_day_is_charted_by_the_quarter_hour_and_longer_ranges_keep_their_buckets() -> None:
    """Today's chart is by the quarter hour (a 16-minute stream is two bars, not one dot), DST
    days included; three days and more keep hours, days, weeks; exports keep the hourly day."""
    spring = calendar_period(PARIS, "day", date(2026, 3, 29))
    assert spring.bucket == "hour"  # exports and the API
    chart = chart_bucket(spring)
    assert chart.bucket == "15min" and len(chart.buckets()) == 23 * 4
    assert [b.label.strftime("%H:%M") for b in chart.buckets()[7:10]] == ["01:45", "03:00", "03:15"]
    assert all(r != RAW for b in chart.buckets() for r, _, _ in split_aligned(b.start, b.end))
    nepal = Calendar("Asia/Kathmandu")  # +05:45: quarters still line up with local time
    today = chart_bucket(calendar_period(nepal, "day", date(2026, 5, 4)))
    assert [b.label.strftime("%H:%M") for b in today.buckets()[:2]] == ["00:00", "00:15"]
    week = calendar_period(PARIS, "week", date(2026, 5, 4))
    assert chart_bucket(week) == week and week.bucket == "day"
