"""Typed keys under which the fake keeps its objects on the aiohttp app and requests."""

from aiohttp import web

from .state import State, Token

STATE_KEY = web.AppKey("fake_twitch_state", State)
TOKEN_KEY = web.RequestKey("fake_twitch_token", Token)
