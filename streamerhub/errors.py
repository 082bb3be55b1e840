"""The one exception root of StreamerHub."""


class StreamerHubError(Exception):
    """An error a user can act on: the message says what, where, and what to do."""


class ConfigError(StreamerHubError):
    """A setting is missing, unknown, of the wrong type or out of range."""


class DatabaseError(StreamerHubError):
    """The database cannot be started, reached or migrated."""


class CryptoError(StreamerHubError):
    """A secret cannot be sealed or opened (missing or wrong master key)."""


# Request errors: the API answers them with a 4xx status chosen by class (web/api.py), so ffmpeg/
# raises them and web/ maps them without either importing the other.
class InvalidInput(StreamerHubError):
    """A request the user can fix: the message says which field and how (HTTP 400)."""


class NotFound(StreamerHubError):
    """The request names something that does not exist (HTTP 404)."""


class Conflict(StreamerHubError):
    """The request clashes with the current state: a name taken, a target in use, … (HTTP 409)."""


class TooLarge(InvalidInput):
    """An upload is larger than the configured limit (HTTP 413)."""
