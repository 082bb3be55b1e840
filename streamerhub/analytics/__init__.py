"""Analytics that tell the truth and answer fast: periods, cards, series, sessions, pollers,
exports, and the dashboard's reads of the event log (browse.py).

The figures come from rollups PostgreSQL keeps itself (migration 0003_analytics.sql); this package
reads them in the streamer's time zone and feeds them (pollers.py) with what EventSub cannot tell:
viewer counts and Twitch's own totals.
"""
