"""A protocol-faithful stand-in for Twitch (EventSub WebSocket, Helix subset, OAuth)."""
