"""The one exception root of StreamerHub."""


class StreamerHubError(Exception):
    """An error a user can act on: the message says what, where, and what to do."""


class ConfigError(StreamerHubError):
    """A setting is missing, unknown, of the wrong type or out of range."""


class DatabaseError(StreamerHubError):
    """The database cannot be started, reached or migrated."""


class CryptoError(StreamerHubError):
    """A secret cannot be sealed or opened (missing or wrong master key)."""
