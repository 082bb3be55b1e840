"""StreamerHub: Twitch event capture, analytics and multistreaming in one daemon."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("streamerhub")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+source"
