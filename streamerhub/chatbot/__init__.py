"""The chat bot: commands, timers and event thank-yous in the streamer's chat (see service.py)."""
