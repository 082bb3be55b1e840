"""How an event shows on the dashboard: events/text.py's reading, plus the friendly type name, a
"who" for every type (the channel for its own polls, hype trains, goals…), and gift bombs folded
into one row that names the gifter and lists the recipients."""

from __future__ import annotations

import datetime as dt
from typing import Any, Mapping

from streamerhub.events.text import event_json, label_of

GIFT_WINDOW = dt.timedelta(seconds=120)  # Twitch sends a bomb's subs within seconds of the bomb


def view(row: Mapping[str, Any], tz: dt.tzinfo) -> dict[str, Any]:
    shown = event_json(row, tz)
    event = (row["payload"] or {}).get("event") or {}
    shown["label"] = label_of(shown["type"])
    if not shown["who"]:
        shown["who"] = str(
            event.get("broadcaster_user_name") or event.get("broadcaster_user_login") or "Channel"
        )
    if shown["type"] == "channel.subscribe" and event.get("is_gift"):
        shown["gifted"] = True
    if shown["type"] == "channel.subscription.gift":
        shown["gift_total"] = int(event.get("total") or 1)
    return shown


def fold_gift_bombs(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each bomb row takes the gifted subs of its channel that arrived around it (up to its total)
    as `recipients`; those subs no longer show as rows of their own."""
    taken: set[str] = set()
    for bomb in (e for e in events if "gift_total" in e):
        at = dt.datetime.fromisoformat(bomb["occurred_at"])
        recipients: list[dict[str, Any]] = []
        for e in events:
            if len(recipients) >= bomb["gift_total"]:
                break
            if (
                e.get("gifted")
                and e["id"] not in taken
                and e["channel_id"] == bomb["channel_id"]
                and abs(dt.datetime.fromisoformat(e["occurred_at"]) - at) <= GIFT_WINDOW
            ):
                taken.add(e["id"])
                recipients.append(e)
        bomb["recipients"] = recipients
    return [e for e in events if e["id"] not in taken]


# The moments a stream's viewer curve is marked with: the kind (its colour) and the words shown.
MOMENT_KINDS = {
    "channel.raid": "raid",
    "channel.hype_train.begin": "hype",
    "channel.update": "title",
}


def moments(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Raids, hype trains and title/category changes of shown events, for the stream chart."""
    return [
        {
            "t": dt.datetime.fromisoformat(e["occurred_at"]).timestamp(),
            "at": e["occurred_at"],
            "kind": MOMENT_KINDS[e["type"]],
            "label": e["text"],
        }
        for e in events
        if e["type"] in MOMENT_KINDS
    ]
