"""The write path and the one vocabulary of Twitch events: frames, normalisation, typed rows,
the store (batches, spool), and how an event reads."""
