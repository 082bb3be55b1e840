"""GET /api/openapi.json: an OpenAPI 3.1 description of the /api/v1 JSON API.

Written by hand next to the routes it describes; tests/test_api.py checks that every route of
web/api.py ROUTES is described here and nothing else.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from streamerhub import __version__
from streamerhub.web.api import PREFIX


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _nullable(kind: str, **extra: Any) -> dict[str, Any]:
    return {"type": [kind, "null"], **extra}


_TIME = _nullable("string", format="date-time")

SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {"type": "string", "description": "What went wrong and what to do"}
        },
    },
    "TargetInput": {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "name": {"type": "string", "maxLength": 100},
            "url": {
                "type": "string",
                "description": "rtmp:// or rtmps:// ingest URL, without key",
                "examples": ["rtmp://live.twitch.tv/app"],
            },
            "stream_key": {
                "type": "string",
                "writeOnly": True,
                "description": "Write-only; no whitespace. Omit on edit to keep it.",
            },
            "enabled": {"type": "boolean", "default": True},
            "channel_id": {
                **_nullable("string"),
                "description": "Connected Twitch channel id, "
                "whose title/category/tags a job sets when it starts",
            },
            "ca_file": {
                **_nullable("string"),
                "description": "Absolute path of a PEM CA bundle for this target's rtmps:// "
                "ingest (a private CA); null uses [ffmpeg] ca_file or the system's",
            },
            "preset": {
                "enum": ["twitch", "youtube", "kick", "facebook"],
                "description": "Instead of url: the platform's ingest",
            },
            "region": {
                "type": "string",
                "description": 'With preset twitch: "auto" (default) or an ingest name '
                'such as "fra05"',
            },
            "test_key": {
                "type": "boolean",
                "default": False,
                "description": "Test the key at once in the background (the answer lands in "
                "the target's key_test)",
            },
        },
    },
    "Target": {
        "type": "object",
        "properties": {
            "id": {"type": "integer"},
            "name": {"type": "string"},
            "url": {"type": "string"},
            "stream_key": {"type": "string", "description": "Only a hint, e.g. ••••a1b2"},
            "enabled": {"type": "boolean"},
            "channel_id": _nullable("string"),
            "ca_file": _nullable("string", description="This target's CA bundle (PEM)"),
            "key_test": {
                "type": ["object", "null"],
                "description": "The last key test (result, ok, message, at); cleared by a new "
                "key or URL",
            },
            "account": {"oneOf": [_ref("LinkedAccount"), {"type": "null"}]},
            "created_at": {"type": "string", "format": "date-time"},
            "updated_at": {"type": "string", "format": "date-time"},
        },
    },
    "LinkedAccount": {
        "type": "object",
        "description": "The Twitch account linked to a target, matched by user id",
        "properties": {
            "user_id": {"type": "string"},
            "login": {"type": "string"},
            "display_name": {"type": "string"},
            "avatar_url": {"type": "string"},
            "followers": _nullable("integer"),
            "via": {"enum": ["connected", "login"]},
            "key_source": {
                "type": ["string", "null"],
                "enum": ["helix", "typed", None],
                "description": "helix: the key was read from Twitch (channel:read:stream_key)",
            },
            "linked_at": {"type": "string", "format": "date-time"},
            "refreshed_at": {"type": "string", "format": "date-time"},
        },
    },
    "Probe": {
        "type": "object",
        "description": "What FFmpeg found in the file",
        "properties": {
            "size_bytes": {"type": "integer"},
            "container": {"type": "string"},
            "duration": _nullable("number"),
            "bitrate_kbps": _nullable("integer"),
            "video": {
                "type": "object",
                "properties": {
                    "codec": {"type": "string"},
                    "profile": _nullable("string"),
                    "pix_fmt": _nullable("string"),
                    "width": {"type": "integer"},
                    "height": {"type": "integer"},
                    "fps": _nullable("number"),
                    "bitrate_kbps": _nullable("integer"),
                },
            },
            "audio": {
                "type": ["object", "null"],
                "properties": {
                    "codec": {"type": "string"},
                    "sample_rate": _nullable("integer"),
                    "channels": _nullable("string"),
                    "bitrate_kbps": _nullable("integer"),
                },
            },
            "keyframe_interval": _nullable("number"),
            "audio_present": {"type": "boolean"},
        },
    },
    "Video": {
        "type": "object",
        "properties": {
            "id": {"type": "integer"},
            "label": {"type": "string", "description": "The uploaded file's name (a label)"},
            "source": {"enum": ["upload", "import"]},
            "size_bytes": {"type": "integer"},
            "status": {"enum": ["uploaded", "probing", "preparing", "ready", "rejected"]},
            "reason": {**_nullable("string"), "description": "Why rejected, or cancelled"},
            "progress": {**_nullable("number"), "description": "0..1 while preparing"},
            "probe": {"oneOf": [_ref("Probe"), {"type": "null"}]},
            "notices": {
                "type": "array",
                "items": {"type": "string"},
                "description": "What is left out when it streams (audio tracks after the first)",
            },
            "profile": {
                "type": "object",
                "properties": {
                    "video_kbps": {"type": "integer"},
                    "audio_kbps": {"type": "integer"},
                },
            },
            "prepared": {
                "type": ["object", "null"],
                "properties": {"mode": {"enum": ["remux", "encode"]}, "probe": _ref("Probe")},
            },
            "created_at": {"type": "string", "format": "date-time"},
            "updated_at": {"type": "string", "format": "date-time"},
        },
    },
    "Profile": {
        "type": "object",
        "properties": {
            "video_kbps": {"type": "integer", "minimum": 100, "maximum": 50000, "default": 2500},
            "audio_kbps": {"type": "integer", "minimum": 32, "maximum": 512, "default": 160},
        },
    },
    "Schedule": {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "start_at": {
                **_TIME,
                "description": "ISO 8601; without offset: your time zone (the one chosen in "
                "Settings, else [general] timezone)",
            },
            "stop_at": _TIME,
            "duration_s": {**_nullable("integer"), "minimum": 1},
            "days": {
                "type": "array",
                "items": {"enum": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]},
                "description": "Repeat at start_at's time of day on these weekdays",
            },
        },
    },
    "JobInput": {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "name": {"type": "string", "maxLength": 100},
            "videos": {
                "type": "array",
                "items": {"type": "integer"},
                "minItems": 1,
                "description": "Video ids, played in this order, gaplessly",
            },
            "targets": {"type": "array", "items": {"type": "integer"}, "minItems": 1},
            "loop": {
                "oneOf": [{"const": "forever"}, {"type": "integer", "minimum": 1}],
                "default": 1,
                "description": "Plays of the playlist",
            },
            "title": {**_nullable("string"), "maxLength": 140},
            "category": {**_nullable("string"), "description": "Twitch category name or id"},
            "tags": {"type": "array", "items": {"type": "string", "maxLength": 25}, "maxItems": 10},
            "schedule": {"oneOf": [_ref("Schedule"), {"type": "null"}]},
        },
    },
    "JobLog": {
        "type": "object",
        "properties": {
            "job_id": {"type": "integer"},
            "targets": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "target_id": {"type": "integer"},
                        "name": {"type": "string"},
                        "run": {"type": "integer", "description": "0: no run yet"},
                        "running": {"type": "boolean"},
                        "lines": {"type": "array", "items": {"type": "string"}},
                    },
                },
            },
        },
    },
    "TargetRuntime": {
        "type": "object",
        "properties": {
            "target_id": {"type": "integer"},
            "name": {"type": "string"},
            "enabled": {"type": "boolean"},
            "desired": {"enum": ["running", "stopped"]},
            "state": {"enum": ["starting", "live", "backoff", "failed", "stopped", "disabled"]},
            "finished": {"type": "boolean"},
            "pid": _nullable("integer"),
            "run": {"type": "integer"},
            "started_at": _TIME,
            "live_since": _TIME,
            "uptime_s": _nullable("number"),
            "out_time_s": _nullable("number"),
            "bitrate_kbps": _nullable("number"),
            "fps": _nullable("number"),
            "speed": _nullable("number"),
            "drop_frames": {"type": "integer"},
            "dup_frames": {"type": "integer"},
            "restarts": {"type": "integer"},
            "last_error": _nullable("string"),
            "failure_class": {
                "enum": [
                    "key_rejected",
                    "connection_refused",
                    "dns",
                    "tls",
                    "timeout",
                    "input_error",
                    "other",
                    None,
                ]
            },
            "next_retry_at": _TIME,
            "next_retry_in_s": _nullable("number"),
        },
    },
    "Job": {
        "type": "object",
        "properties": {
            "id": {"type": "integer"},
            "name": {"type": "string"},
            "videos": {"type": "array", "items": {"type": "integer"}},
            "loop": {"oneOf": [{"const": "forever"}, {"type": "integer"}]},
            "title": _nullable("string"),
            "category": _nullable("string"),
            "tags": {"type": "array", "items": {"type": "string"}},
            "schedule": {"oneOf": [_ref("Schedule"), {"type": "null"}]},
            "desired": {"enum": ["running", "stopped"]},
            "state": {"enum": ["stopped", "idle", "live", "degraded", "starting", "failing"]},
            "started_at": _TIME,
            "stop_deadline": _TIME,
            "next_start": _TIME,
            "ended_reason": _nullable("string"),
            "created_at": {"type": "string"},
            "targets": {"type": "array", "items": _ref("TargetRuntime")},
            "runs": {
                "type": "array",
                "description": "GET /jobs/{id} only: recent FFmpeg runs",
                "items": {
                    "type": "object",
                    "properties": {
                        "id": {"type": "integer"},
                        "target_id": {"type": "integer"},
                        "started_at": _TIME,
                        "ended_at": _TIME,
                        "exit_code": _nullable("integer"),
                        "failure_class": _nullable("string"),
                        "error": _nullable("string"),
                        "stderr_tail": {"type": "string", "description": "Redacted"},
                    },
                },
            },
            "warnings": {
                "type": "array",
                "description": "What needs attention while the job runs (e.g. Twitch refused "
                "the title or category on a linked channel)",
                "items": {"type": "string"},
            },
            "channel_updates": {
                "type": "array",
                "description": "GET /jobs/{id} only: what was "
                "set on linked Twitch channels and Twitch's answer",
                "items": {"type": "object"},
            },
        },
    },
}


def _answer(status: str, schema: dict[str, Any] | None, text: str) -> dict[str, Any]:
    body: dict[str, Any] = {"description": text}
    if schema is not None:
        body["content"] = {"application/json": {"schema": schema}}
    return {status: body}


ERRORS = {
    **_answer("400", _ref("Error"), "Invalid request (the message names the field)"),
    **_answer("401", _ref("Error"), "Missing or wrong token"),
}


def _op(
    summary: str,
    ok: dict[str, Any],
    body: dict[str, Any] | None = None,
    extra: tuple[str, ...] = (),
) -> dict[str, Any]:
    answers = {**ok, **ERRORS}
    for status in extra:
        answers.update(
            _answer(
                status,
                _ref("Error"),
                {
                    "404": "No such item",
                    "409": "Conflicts with the current state",
                    "413": "Upload larger than [ffmpeg] max_upload_bytes",
                }[status],
            )
        )
    op: dict[str, Any] = {"summary": summary, "responses": answers}
    if body is not None:
        op["requestBody"] = {"required": True, "content": body}
    return op


def _json_body(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _id(name: str = "id") -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "integer"}}


_UPLOAD = {
    "multipart/form-data": {
        "schema": {
            "type": "object",
            "required": ["file"],
            "properties": {
                "video_kbps": {"type": "integer"},
                "audio_kbps": {"type": "integer"},
                "file": {
                    "type": "string",
                    "format": "binary",
                    "description": "Streamed to disk; send profile fields before it",
                },
            },
        }
    },
    "application/json": {
        "schema": {
            "allOf": [
                _ref("Profile"),
                {
                    "type": "object",
                    "required": ["path"],
                    "properties": {
                        "path": {
                            "type": "string",
                            "description": "Absolute path of a file on the server",
                        },
                        "label": {"type": "string"},
                    },
                },
            ]
        }
    },
}
_JOB = _answer("200", _ref("Job"), "The job with its targets' live state")
_VIDEO = _answer("200", _ref("Video"), "The video")
_NO_CONTENT = _answer("204", None, "Deleted")


def _paths() -> dict[str, Any]:
    target_item = {
        "parameters": [_id()],
        "get": _op("A target", _answer("200", _ref("Target"), "The target"), extra=("404",)),
        "patch": _op(
            "Edit a target (a missing stream_key keeps the stored one)",
            _answer("200", _ref("Target"), "The target"),
            _json_body(_ref("TargetInput")),
            ("404", "409"),
        ),
        "delete": _op("Delete a target not used by any job", _NO_CONTENT, extra=("404", "409")),
    }
    return {
        "/targets": {
            "get": _op(
                "List targets",
                _answer(
                    "200",
                    {"type": "array", "items": _ref("Target")},
                    "Targets (keys as hints only)",
                ),
            ),
            "post": _op(
                "Create a target",
                _answer("201", _ref("Target"), "Created"),
                _json_body(_ref("TargetInput")),
                ("409",),
            ),
        },
        "/targets/{id}": target_item,
        "/targets/{id}/test": {
            "parameters": [_id()],
            "post": _op(
                "Test the stream key: publish a few seconds of a test picture (Twitch: in "
                "bandwidth-test mode, never public)",
                _answer(
                    "200",
                    {
                        "type": "object",
                        "properties": {
                            "target_id": {"type": "integer"},
                            "result": {
                                "enum": [
                                    "ok",
                                    "key_rejected",
                                    "unreachable",
                                    "tls_error",
                                    "error",
                                    "in_use",
                                ]
                            },
                            "ok": {"type": "boolean"},
                            "message": {"type": "string"},
                            "bandwidth_test": {"type": "boolean"},
                        },
                    },
                    "How the test went, in plain words",
                ),
                extra=("404",),
            ),
        },
        "/presets": {
            "get": _op(
                "Platform presets: ingest URL (Twitch: auto, or a region), and the ingest "
                "requirements a job's prepared files are checked against",
                _answer("200", {"type": "array", "items": {"type": "object"}}, "The presets"),
            ),
        },
        "/targets/{id}/account": {
            "parameters": [_id()],
            "post": _op(
                "Link a Twitch account: a connected channel (channel_id) or any account by "
                "login; fill_key reads the key from Twitch (channel:read:stream_key), else the "
                "key test runs",
                _answer(
                    "200",
                    {
                        "type": "object",
                        "properties": {
                            "target": _ref("Target"),
                            "key_test": {"type": "object"},
                        },
                    },
                    "The linked target (and the key test, when the key was not read)",
                ),
                _json_body(
                    {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {
                            "login": {"type": "string"},
                            "channel_id": {"type": "string"},
                            "fill_key": {"type": "boolean", "default": False},
                        },
                    }
                ),
                ("404", "409"),
            ),
            "delete": _op("Unlink the Twitch account", _NO_CONTENT, extra=("404",)),
        },
        "/targets/{id}/account/stats": {
            "parameters": [_id()],
            "get": _op(
                "The linked account's figures while our pushes were live: streams pushed, "
                "hours on air, Twitch's peak and average viewers",
                _answer("200", {"type": "object"}, "Per-account statistics"),
                extra=("404",),
            ),
        },
        "/videos": {
            "get": {
                **_op(
                    "List videos",
                    _answer(
                        "200",
                        {"type": "array", "items": _ref("Video")},
                        "Videos with status and progress",
                    ),
                ),
                "parameters": [
                    _query("q", "Part of the name (case-insensitive)"),
                    _query("format", "File format, e.g. mp4 (file extension or container)"),
                    _query(
                        "status",
                        "Only videos in this state",
                        ["uploaded", "probing", "preparing", "ready", "rejected"],
                    ),
                    _query("min_duration", "At least this many seconds long"),
                    _query("max_duration", "At most this many seconds long"),
                ],
            },
            "post": _op(
                "Upload a video (multipart, field `file`) or import one by path",
                _answer("201", _ref("Video"), "Stored; probing and preparation follow"),
                _UPLOAD,
                ("413",),
            ),
        },
        "/videos/{id}": {
            "parameters": [_id()],
            "get": _op("A video: status, probe, preparation progress", _VIDEO, extra=("404",)),
            "delete": _op("Delete a video not used by any job", _NO_CONTENT, extra=("404", "409")),
        },
        "/videos/{id}/prepare": {
            "parameters": [_id()],
            "post": _op(
                "Prepare (again), optionally with another profile",
                _answer("202", _ref("Video"), "Queued"),
                _json_body(_ref("Profile")),
                ("404", "409"),
            ),
        },
        "/videos/{id}/cancel": {
            "parameters": [_id()],
            "post": _op("Cancel probing or preparation", _VIDEO, extra=("404", "409")),
        },
        "/jobs": {
            "get": _op(
                "List jobs",
                _answer(
                    "200",
                    {"type": "array", "items": _ref("Job")},
                    "Jobs with their targets' live state",
                ),
            ),
            "post": _op(
                "Create a job", _answer("201", _ref("Job"), "Created"), _json_body(_ref("JobInput"))
            ),
        },
        "/jobs/{id}": {
            "parameters": [_id()],
            "get": _op(
                "A job with live state, recent runs and Twitch updates", _JOB, extra=("404",)
            ),
            "patch": _op(
                "Edit a job (playlist, targets and loop only while stopped)",
                _JOB,
                _json_body(_ref("JobInput")),
                ("404", "409"),
            ),
            "delete": _op("Stop and delete a job", _NO_CONTENT, extra=("404",)),
        },
        "/jobs/{id}/log": {
            "parameters": [_id()],
            "get": _op(
                "Each target's recent FFmpeg output (the running child's, as it comes; else "
                "the last run's), stream keys masked",
                _answer("200", _ref("JobLog"), "The job's FFmpeg log tails"),
                extra=("404",),
            ),
        },
        "/jobs/{id}/start": {
            "parameters": [_id()],
            "post": _op(
                "Start every enabled target (sets linked Twitch channels' title/category/tags)",
                _JOB,
                extra=("404",),
            ),
        },
        "/jobs/{id}/stop": {
            "parameters": [_id()],
            "post": _op("Stop every target", _JOB, extra=("404",)),
        },
        "/jobs/{id}/accounts": {
            "parameters": [_id(), _query("format", "csv (default) or json", enum=["csv", "json"])],
            "get": {
                "summary": "Per linked Twitch account this job pushed to: streams pushed, hours "
                "on air, hours Twitch confirmed live, Twitch's peak and average viewers "
                "(columns in the README, never renamed)",
                "responses": {
                    "200": {
                        "description": "CSV or a JSON array",
                        "content": {"text/csv": {}, "application/json": {}},
                    },
                    **ERRORS,
                },
            },
        },
        "/jobs/{id}/targets/{target_id}/start": {
            "parameters": [_id(), _id("target_id")],
            "post": _op(
                "Start or retry one target of a running job; the others are untouched",
                _JOB,
                extra=("404", "409"),
            ),
        },
        "/jobs/{id}/targets/{target_id}/stop": {
            "parameters": [_id(), _id("target_id")],
            "post": _op("Stop one target of a job; the others are untouched", _JOB, extra=("404",)),
        },
        "/export/{kind}": {
            "parameters": [
                {
                    "name": "kind",
                    "in": "path",
                    "required": True,
                    "schema": {"enum": ["events", "sessions", "series"]},
                },
                _query("format", "csv (default) or json", enum=["csv", "json"]),
                _query(
                    "from",
                    "A day (YYYY-MM-DD, from its start in your time zone: the one chosen in "
                    "Settings, else [general] timezone) or an ISO time; default: the beginning",
                ),
                _query("to", "A day (included) or an ISO time (excluded); default: now"),
                _query("channel", "A channel id or login; default: all (series: the only one)"),
                _query(
                    "bucket",
                    "Series bucket size; default: chosen to fit the range",
                    enum=["15min", "hour", "day", "week", "month"],
                ),
            ],
            "get": {
                "summary": "Stream an export (the same as `streamerhub export`); columns "
                "are listed in the README and never renamed",
                "responses": {
                    "200": {
                        "description": "CSV or a JSON array, streamed",
                        "content": {"text/csv": {}, "application/json": {}},
                    },
                    **ERRORS,
                },
            },
        },
        **_chatbot_paths(),
    }


_OBJECT: dict[str, Any] = {"type": "object"}
_LIST: dict[str, Any] = {"type": "array", "items": _OBJECT}


def _name(name: str = "name") -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}


def _chatbot_paths() -> dict[str, Any]:
    """The chat bot (web/chatbot_page.py): fields and their checks are in the README."""
    ok, listed = _answer("200", _OBJECT, "Done"), _answer("200", _LIST, "Listed")
    body = _json_body(_OBJECT)
    return {
        "/chatbot": {
            "get": _op("Chat bot status, configuration and newest log entries", ok),
        },
        "/chatbot/commands": {
            "get": _op("List commands", listed),
            "post": _op("Create a command", _answer("201", _OBJECT, "Created"), body, ("409",)),
        },
        "/chatbot/commands/{name}": {
            "parameters": [_name()],
            "put": _op("Create or replace a command", ok, body, ("409",)),
            "delete": _op("Delete a command", ok, extra=("404",)),
        },
        "/chatbot/timers": {
            "get": _op("List timers", listed),
            "post": _op("Create or replace a timer (by name)", ok, body),
        },
        "/chatbot/timers/{name}": {
            "parameters": [_name()],
            "delete": _op("Delete a timer", ok, extra=("404",)),
        },
        "/chatbot/events": {"get": _op("Event messages, every kind", listed)},
        "/chatbot/events/{kind}": {
            "parameters": [_name("kind")],
            "put": _op("Set an event message", ok, body),
        },
        "/chatbot/channels/{channel_id}": {
            "parameters": [_name("channel_id")],
            "put": _op('The bot on or off in a channel: {"enabled": true|false}', ok, body),
        },
        "/chatbot/log": {
            "parameters": [_query("limit", "Newest entries, 1-1000 (default 100)")],
            "get": _op("Messages sent, skipped or refused, newest first, with why", listed),
        },
        "/chatbot/export": {"get": _op("The whole configuration as JSON", ok)},
        "/chatbot/import": {
            "post": _op("Add or replace commands, timers, event messages", ok, body)
        },
    }


def _query(name: str, text: str, enum: list[str] | None = None) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string", **({"enum": enum} if enum else {})}
    return {"name": name, "in": "query", "required": False, "description": text, "schema": schema}


def build_openapi() -> dict[str, Any]:
    """The whole document (pure: a new dict each call)."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "StreamerHub API",
            "version": __version__,
            "description": "Multistream targets, video library, stream jobs and analytics "
            "exports. Errors "
            'are {"error": "…"} with a 4xx status.',
        },
        "servers": [{"url": PREFIX}],
        "security": [{"bearer": []}],
        "paths": _paths(),
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "The local admin token: `streamerhub api-token`; the dashboard "
                    "session cookie works too",
                }
            },
        },
    }


async def openapi_json(request: web.Request) -> web.Response:
    """GET /api/openapi.json (no token needed: it describes, it does not reveal)."""
    return web.json_response(build_openapi())
