"""The JSON API under /api/v1: targets, videos, jobs. The dashboard pages and the CLI both use it.

Every request must pass one of the authorizers hung on the root app under AUTHORIZERS (the local
admin token as `Authorization: Bearer …`; the dashboard adds its session check). Every error is
`{"error": "<what went wrong and what to do>"}` with a 4xx status. web/ does not import ffmpeg/:
app.py hands over the multistream service, which this module sees through `MultistreamApi`.
"""

from __future__ import annotations

import hmac
from typing import (
    Any,
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Mapping,
    Protocol,
    Sequence,
    TypeVar,
)
from urllib.parse import unquote

from aiohttp import BodyPartReader, web
from aiohttp.typedefs import Handler

from streamerhub.analytics.export import ExportRequest, media_type
from streamerhub.errors import Conflict, InvalidInput, NotFound, StreamerHubError, TooLarge
from streamerhub.log import get_logger, redact

log = get_logger(__name__)

PREFIX = "/api/v1"
# An authorizer returns something truthy (e.g. the signed-in user) to let the request in, a
# falsy value to pass, or raises web.HTTPForbidden to refuse outright.
Authorizer = Callable[[web.Request], Awaitable[Any]]
AUTHORIZERS = web.AppKey("api_authorizers", list)
UPLOAD_CHUNK = 256 * 1024
JobT = TypeVar("JobT")
JobT_co = TypeVar("JobT_co", covariant=True)
FORM_FIELDS = ("video_kbps", "audio_kbps")
MAX_ID = 2**63 - 1  # PostgreSQL bigint
MAX_DEPTH = 32  # JSON nesting a request body may have
# The status of a StreamerHubError, by class, most specific first (TooLarge is an InvalidInput);
# any other StreamerHubError is a 400.
STATUS_OF_ERROR: tuple[tuple[type[StreamerHubError], int], ...] = (
    (TooLarge, 413),
    (InvalidInput, 400),
    (NotFound, 404),
    (Conflict, 409),
)


class Shown(Protocol):
    """A target or a video: the API answers with its to_json()."""

    def to_json(self) -> dict[str, Any]: ...


class TargetsApi(Protocol):
    """ffmpeg/targets.py's TargetStore, as far as the API reads it."""

    async def list(self) -> Sequence[Shown]: ...
    async def get(self, target_id: int) -> Shown: ...
    async def create(self, body: Any) -> Shown: ...


class LibraryApi(Protocol):
    """ffmpeg/library.py's Library, as far as the API uses it."""

    @property
    def max_upload_bytes(self) -> int: ...

    async def list(self, query: Mapping[str, str] | None = None) -> Sequence[Shown]: ...
    async def get(self, video_id: int) -> Shown: ...
    async def store_upload(
        self, filename: str | None, chunks: AsyncIterable[bytes], body: Any = None
    ) -> Shown: ...
    async def import_path(self, body: Any) -> Shown: ...
    async def prepare_again(self, video_id: int, body: Any = None) -> Shown: ...
    async def cancel(self, video_id: int) -> Shown: ...
    async def delete(self, video_id: int) -> None: ...


class JobsApi(Protocol[JobT_co]):
    """ffmpeg/jobstore.py's JobStore, as far as the API reads it."""

    async def list(self) -> Sequence[JobT_co]: ...
    async def get(self, job_id: int) -> JobT_co: ...


class MultistreamApi(Protocol[JobT]):
    """What the API needs from ffmpeg/service.py's Multistream (see there for behaviour).

    A job is opaque here: the API only hands it back to job_json() to show it.
    """

    @property
    def targets(self) -> TargetsApi: ...
    @property
    def library(self) -> LibraryApi: ...
    @property
    def jobs(self) -> JobsApi[JobT]: ...

    async def create_target(self, body: Any) -> Shown: ...
    async def update_target(self, target_id: int, body: Any) -> Shown: ...
    async def link_target(self, target_id: int, body: Any) -> dict[str, Any]: ...
    async def unlink_target(self, target_id: int) -> None: ...
    async def account_stats(self, target_id: int) -> dict[str, Any]: ...
    async def account_export(self, job_id: int, fmt: str) -> tuple[bytes, str]: ...
    def presets(self) -> list[dict[str, Any]]: ...
    async def delete_target(self, target_id: int) -> None: ...
    async def test_target(self, target_id: int) -> dict[str, Any]: ...
    async def create_job(self, body: Any) -> JobT: ...
    async def update_job(self, job_id: int, body: Any) -> JobT: ...
    async def delete_job(self, job_id: int) -> None: ...
    async def start_job(self, job_id: int) -> JobT: ...
    async def stop_job(self, job_id: int) -> JobT: ...
    async def start_job_target(self, job_id: int, target_id: int) -> JobT: ...
    async def stop_job_target(self, job_id: int, target_id: int) -> JobT: ...
    async def job_json(self, job: JobT, detail: bool = False) -> dict[str, Any]: ...
    async def job_log(self, job_id: int) -> dict[str, Any]: ...


# Any: whatever job type the service has (the API never looks inside one).
SERVICE: web.AppKey[MultistreamApi[Any]] = web.AppKey("api_multistream")
# Opens an analytics export (app.py binds it to the database and the streamer's calendar).
Exporter = Callable[[ExportRequest], Awaitable[AsyncIterator[bytes]]]
EXPORTER: web.AppKey[Exporter] = web.AppKey("api_exporter")


# ----------------------------------------------------------------------------- auth + errors


def bearer_authorizer(token: str) -> Authorizer:
    """Accept `Authorization: Bearer <token>` for the local admin token (constant-time)."""
    expected = token.encode()

    async def check(request: web.Request) -> bool:
        scheme, _, value = request.headers.get("Authorization", "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(), expected)

    return check


async def authorize(request: web.Request) -> None:
    for check in request.config_dict.get(AUTHORIZERS, []):
        if await check(request):
            return
    raise web.HTTPUnauthorized(
        text="missing or wrong API token: send 'Authorization: Bearer <token>' (print the "
        "token with `streamerhub api-token`) or sign in to the dashboard",
        headers={"WWW-Authenticate": 'Bearer realm="streamerhub"'},
    )


def error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"error": redact(message)}, status=status, headers=headers)


@web.middleware
async def api_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Authorise, then turn every failure into {"error": …} with the right status."""
    try:
        await authorize(request)
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        headers = {k: v for k, v in exc.headers.items() if k == "WWW-Authenticate"}
        text = (
            exc.text
            if exc.text and not exc.text.startswith(f"{exc.status}:")
            else _default_message(exc)
        )
        return error(exc.status, text, headers)
    except StreamerHubError as exc:
        return error(status_of(exc), str(exc))
    except Exception:
        log.exception("api_internal_error", path=request.path, method=request.method)
        return error(500, "internal error: the daemon log has the details")


def status_of(exc: StreamerHubError) -> int:
    """The HTTP status that answers `exc`: 413, 400, 404 or 409 by its class, else 400."""
    return next((status for cls, status in STATUS_OF_ERROR if isinstance(exc, cls)), 400)


def _default_message(exc: web.HTTPException) -> str:
    if exc.status in (404, 405):  # the catch-all route answers for a wrong method too
        return "no such API route or method (see /api/openapi.json)"
    return exc.reason


def _ms(request: web.Request) -> MultistreamApi[Any]:
    return request.config_dict[SERVICE]


def _id(request: web.Request, name: str = "id") -> int:
    value = int(request.match_info[name])
    if value > MAX_ID:  # no row has it, and PostgreSQL's bigint would refuse it with a 500
        raise web.HTTPNotFound(text=f"{name}: no such id (ids are at most {MAX_ID})")
    return value


async def _body(request: web.Request) -> Any:
    if not request.can_read_body:
        return {}
    try:
        body = await request.json()
    except RecursionError:
        raise web.HTTPBadRequest(
            text=f"the request body nests deeper than {MAX_DEPTH} levels"
        ) from None
    except ValueError:
        raise web.HTTPBadRequest(text="the request body is not valid JSON") from None
    check_text(body, "body")
    return body


def check_text(value: Any, where: str, depth: int = 0) -> None:
    """Refuse what no stored text may hold: NUL (PostgreSQL text cannot), lone surrogates (not
    UTF-8), nesting deeper than MAX_DEPTH. The 400 names the field."""
    if depth > MAX_DEPTH:
        raise web.HTTPBadRequest(text=f"{where}: nests deeper than {MAX_DEPTH} levels")
    if isinstance(value, dict):
        for key, item in value.items():
            check_text(key, where, depth + 1)
            check_text(item, f"{key}" if where == "body" else f"{where}.{key}", depth + 1)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            check_text(item, f"{where}[{index}]", depth + 1)
    elif isinstance(value, str):
        if "\x00" in value:
            raise web.HTTPBadRequest(text=f"{where}: contains a NUL character")
        try:
            value.encode()
        except UnicodeEncodeError:
            raise web.HTTPBadRequest(
                text=f"{where}: is not valid Unicode (lone surrogate)"
            ) from None


def _json(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status)


# ----------------------------------------------------------------------------- targets


async def list_targets(request: web.Request) -> web.Response:
    return _json([t.to_json() for t in await _ms(request).targets.list()])


async def create_target(request: web.Request) -> web.Response:
    target = await _ms(request).create_target(await _body(request))
    return _json(target.to_json(), 201)


async def get_target(request: web.Request) -> web.Response:
    return _json((await _ms(request).targets.get(_id(request))).to_json())


async def update_target(request: web.Request) -> web.Response:
    target = await _ms(request).update_target(_id(request), await _body(request))
    return _json(target.to_json())


async def test_target(request: web.Request) -> web.Response:
    """POST /targets/{id}/test — publish a few seconds with the key; 200 whatever the answer."""
    return _json(await _ms(request).test_target(_id(request)))


async def delete_target(request: web.Request) -> web.Response:
    await _ms(request).delete_target(_id(request))
    return web.Response(status=204)


async def list_presets(request: web.Request) -> web.Response:
    """GET /presets — platforms (ingest URL, Twitch regions) and their ingest requirements."""
    return _json(_ms(request).presets())


async def link_target(request: web.Request) -> web.Response:
    """POST /targets/{id}/account — link a Twitch account (connected channel or login)."""
    return _json(await _ms(request).link_target(_id(request), await _body(request)))


async def unlink_target(request: web.Request) -> web.Response:
    await _ms(request).unlink_target(_id(request))
    return web.Response(status=204)


async def account_stats(request: web.Request) -> web.Response:
    """GET /targets/{id}/account/stats — the linked account's figures over its job history."""
    return _json(await _ms(request).account_stats(_id(request)))


async def account_export(request: web.Request) -> web.Response:
    """GET /jobs/{id}/accounts?format=csv|json — per linked account: the job's figures."""
    fmt = request.query.get("format", "csv")
    body, media = await _ms(request).account_export(_id(request), fmt)
    disposition = f'attachment; filename="streamerhub-job-{_id(request)}-accounts.{fmt}"'
    return web.Response(
        body=body, headers={"Content-Type": media, "Content-Disposition": disposition}
    )


# ----------------------------------------------------------------------------- videos


async def list_videos(request: web.Request) -> web.Response:
    """GET /videos[?q=&format=&status=&min_duration=&max_duration=] — filters combine."""
    return _json([v.to_json() for v in await _ms(request).library.list(request.query)])


async def create_video(request: web.Request) -> web.Response:
    """multipart/form-data with the file in field `file`, or JSON {"path": …} to import."""
    library = _ms(request).library
    if request.content_type != "multipart/form-data":
        return _json((await library.import_path(await _body(request))).to_json(), 201)
    limit = library.max_upload_bytes
    if request.content_length and request.content_length > limit + 1024 * 1024:
        raise web.HTTPRequestEntityTooLarge(
            max_size=limit,
            actual_size=request.content_length,
            text=f"file: larger than the upload limit of {limit} bytes ([ffmpeg] "
            "max_upload_bytes); import it by path instead",
        )
    form: dict[str, Any] = {}
    async for part in await request.multipart():
        if not isinstance(part, BodyPartReader):
            continue
        if part.name == "file":
            # Browsers and aiohttp percent-encode some characters of the name; it is only a
            # label (the library keeps its last component and never uses it as a path).
            name = unquote(part.filename or "")
            video = await library.store_upload(name, _chunks(part), form)
            return _json(video.to_json(), 201)
        if part.name in FORM_FIELDS:
            form[part.name] = _form_int(part.name, await part.text())
        else:
            await part.release()
    raise web.HTTPBadRequest(text="file: send the video in a multipart field named 'file'")


async def _chunks(part: BodyPartReader) -> AsyncIterator[bytes]:
    while chunk := await part.read_chunk(UPLOAD_CHUNK):
        yield chunk


def _form_int(name: str, text: str) -> int:
    try:
        return int(text.strip())
    except ValueError:
        raise web.HTTPBadRequest(text=f"{name}: a whole number of kbit/s") from None


async def get_video(request: web.Request) -> web.Response:
    return _json((await _ms(request).library.get(_id(request))).to_json())


async def prepare_video(request: web.Request) -> web.Response:
    video = await _ms(request).library.prepare_again(_id(request), await _body(request))
    return _json(video.to_json(), 202)


async def cancel_video(request: web.Request) -> web.Response:
    return _json((await _ms(request).library.cancel(_id(request))).to_json())


async def delete_video(request: web.Request) -> web.Response:
    await _ms(request).library.delete(_id(request))
    return web.Response(status=204)


# ----------------------------------------------------------------------------- jobs


async def list_jobs(request: web.Request) -> web.Response:
    ms = _ms(request)
    return _json([await ms.job_json(job) for job in await ms.jobs.list()])


async def create_job(request: web.Request) -> web.Response:
    ms = _ms(request)
    return _json(await ms.job_json(await ms.create_job(await _body(request))), 201)


async def get_job(request: web.Request) -> web.Response:
    ms = _ms(request)
    return _json(await ms.job_json(await ms.jobs.get(_id(request)), detail=True))


async def job_log(request: web.Request) -> web.Response:
    """GET /jobs/{id}/log — each target's recent FFmpeg output, the running child's as it comes."""
    return _json(await _ms(request).job_log(_id(request)))


async def update_job(request: web.Request) -> web.Response:
    ms = _ms(request)
    return _json(await ms.job_json(await ms.update_job(_id(request), await _body(request))))


async def delete_job(request: web.Request) -> web.Response:
    await _ms(request).delete_job(_id(request))
    return web.Response(status=204)


async def start_job(request: web.Request) -> web.Response:
    ms = _ms(request)
    return _json(await ms.job_json(await ms.start_job(_id(request))))


async def stop_job(request: web.Request) -> web.Response:
    ms = _ms(request)
    return _json(await ms.job_json(await ms.stop_job(_id(request))))


async def start_job_target(request: web.Request) -> web.Response:
    ms = _ms(request)
    job = await ms.start_job_target(_id(request), _id(request, "target_id"))
    return _json(await ms.job_json(job))


async def stop_job_target(request: web.Request) -> web.Response:
    ms = _ms(request)
    job = await ms.stop_job_target(_id(request), _id(request, "target_id"))
    return _json(await ms.job_json(job))


# ----------------------------------------------------------------------------- exports


async def export(request: web.Request) -> web.StreamResponse:
    """GET /export/{kind}?from=&to=&format=&channel=&bucket= — the same as `streamerhub export`,
    streamed in constant memory; a bad parameter is a 400 before any byte is sent."""
    query, kind = request.query, request.match_info["kind"]
    for name, value in query.items():
        check_text(value, name)
    wanted = ExportRequest(
        kind,
        query.get("format", "csv"),
        query.get("from"),
        query.get("to"),
        query.get("channel"),
        query.get("bucket"),
    )
    chunks = await request.config_dict[EXPORTER](wanted)
    response = web.StreamResponse(
        headers={
            "Content-Type": media_type(wanted.fmt),
            "Content-Disposition": f'attachment; filename="streamerhub-{kind}.{wanted.fmt}"',
            "Cache-Control": "no-store",  # streamed: the headers middleware comes too late
        }
    )
    await response.prepare(request)
    async for chunk in chunks:
        await response.write(chunk)
    await response.write_eof()
    return response


# ----------------------------------------------------------------------------- assembly

ROUTES: tuple[tuple[str, str, Callable[[web.Request], Awaitable[web.StreamResponse]]], ...] = (
    ("GET", "/targets", list_targets),
    ("POST", "/targets", create_target),
    ("GET", "/targets/{id:\\d+}", get_target),
    ("PATCH", "/targets/{id:\\d+}", update_target),
    ("DELETE", "/targets/{id:\\d+}", delete_target),
    ("POST", "/targets/{id:\\d+}/test", test_target),
    ("GET", "/presets", list_presets),
    ("POST", "/targets/{id:\\d+}/account", link_target),
    ("DELETE", "/targets/{id:\\d+}/account", unlink_target),
    ("GET", "/targets/{id:\\d+}/account/stats", account_stats),
    ("GET", "/videos", list_videos),
    ("POST", "/videos", create_video),
    ("GET", "/videos/{id:\\d+}", get_video),
    ("POST", "/videos/{id:\\d+}/prepare", prepare_video),
    ("POST", "/videos/{id:\\d+}/cancel", cancel_video),
    ("DELETE", "/videos/{id:\\d+}", delete_video),
    ("GET", "/jobs", list_jobs),
    ("POST", "/jobs", create_job),
    ("GET", "/jobs/{id:\\d+}", get_job),
    ("PATCH", "/jobs/{id:\\d+}", update_job),
    ("DELETE", "/jobs/{id:\\d+}", delete_job),
    ("GET", "/jobs/{id:\\d+}/log", job_log),
    ("POST", "/jobs/{id:\\d+}/start", start_job),
    ("POST", "/jobs/{id:\\d+}/stop", stop_job),
    ("GET", "/jobs/{id:\\d+}/accounts", account_export),
    ("POST", "/jobs/{id:\\d+}/targets/{target_id:\\d+}/start", start_job_target),
    ("POST", "/jobs/{id:\\d+}/targets/{target_id:\\d+}/stop", stop_job_target),
    ("GET", "/export/{kind}", export),
)


def build_api(
    service: MultistreamApi[Any],
    exporter: Exporter,
    more: Sequence[tuple[str, str, Callable[[web.Request], Awaitable[web.StreamResponse]]]] = (),
) -> web.Application:
    """The /api/v1 sub-application; mount it with app.add_subapp(PREFIX, build_api(…)).
    `more` adds other wings' routes (the chat bot's), under the same auth and error rules."""
    api = web.Application(middlewares=[api_middleware])
    api[SERVICE] = service
    api[EXPORTER] = exporter
    for method, path, handler in (*ROUTES, *more):
        api.router.add_route(method, path, handler)
    api.router.add_route("*", "/{tail:.*}", not_found)
    return api


async def not_found(request: web.Request) -> web.Response:
    raise web.HTTPNotFound()
