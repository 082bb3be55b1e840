"""Analytics that tell the truth and answer fast: periods, cards, series, sessions, pollers, exports.

The figures come from rollups PostgreSQL keeps itself (migration 0003_analytics.sql); this package
reads them in the streamer's time zone and feeds them (pollers.py) with what EventSub cannot tell:
viewer counts and Twitch's own totals.
"""

from streamerhub.analytics.export import (
    EVENT_COLUMNS, SERIES_COLUMNS, SESSION_EXPORT_COLUMNS, export_events, export_series,
    export_sessions,
)
from streamerhub.analytics.periods import (
    Bucket, Calendar, Period, PeriodError, all_time_period, calendar_period, custom_period,
    range_period,
)
from streamerhub.analytics.pollers import AnalyticsPollers, HelixStats, PollerConfig
from streamerhub.analytics.queries import (
    Card, Gap, Point, Series, StatCards, capture_gaps, first_data, load_period, stat_cards,
    time_series,
)
from streamerhub.analytics.sessions import SessionDetail, SessionSummary, get_session, list_sessions

__all__ = [
    "AnalyticsPollers", "Bucket", "Calendar", "Card", "EVENT_COLUMNS", "Gap", "HelixStats",
    "Period", "PeriodError", "Point", "PollerConfig", "SERIES_COLUMNS", "SESSION_EXPORT_COLUMNS",
    "Series", "SessionDetail", "SessionSummary", "StatCards", "all_time_period", "calendar_period",
    "capture_gaps", "custom_period", "export_events", "export_series", "export_sessions",
    "first_data", "get_session", "list_sessions", "load_period", "range_period", "stat_cards",
    "time_series",
]
