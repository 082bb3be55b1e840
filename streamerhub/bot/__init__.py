"""Twitch: OAuth tokens, the EventSub client, event normalisation, Helix pollers, backfill."""
