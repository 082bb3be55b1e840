"""A protocol-faithful stand-in for Twitch (EventSub WebSocket, Helix subset, OAuth).

    async with FakeTwitch() as fake:
        fake.ws_url, fake.api_url, fake.auth_url, fake.token, fake.client_id

`/_fake/...` is the control API (deliver events, inject faults, reconnect, revoke, inspect);
`sample_event` builds realistic payloads; see README.md in this package for the full contract.
"""

from .catalog import SUBSCRIPTION_TYPES, SubscriptionType
from .events import sample_event
from .server import FakeTwitch, build_app
from .state import Settings, State

__all__ = [
    "FakeTwitch",
    "build_app",
    "State",
    "Settings",
    "sample_event",
    "SUBSCRIPTION_TYPES",
    "SubscriptionType",
]
