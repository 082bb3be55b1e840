"""`streamerhub targets|videos|jobs …` and `streamerhub api-token`: a client of the daemon's API.

Every command talks to the running daemon over HTTP with the local admin token (DATA_DIR/api-token,
0600), so the CLI sees exactly what the dashboard sees. Stream keys are read from a prompt or
stdin, never from the command line (other users can read a process's arguments).
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from streamerhub.config import Settings
from streamerhub.errors import StreamerHubError
from streamerhub.web.auth import api_token

API = "/api/v1"
if TYPE_CHECKING:  # argparse has no public name for it, nor is it subscriptable at run time
    Subcommands = argparse._SubParsersAction[argparse.ArgumentParser]  # add_subparsers()
Handler = Callable[[argparse.Namespace, Settings], int]


def cmd_api_token(args: argparse.Namespace, settings: Settings) -> int:
    print(api_token(settings.data_dir))
    return 0


# ----------------------------------------------------------------------------- HTTP


class Client:
    """A few JSON calls to the daemon; API errors become StreamerHubError with its message."""

    def __init__(self, settings: Settings, base: str | None = None) -> None:
        from streamerhub.commands.run import client_url, read_listen_file

        # --url, else where this data dir's daemon said it listens, else the configured port.
        found = base or read_listen_file(settings.data_dir)
        self.base = (found or client_url(settings.web.host, settings.web.port)).rstrip("/")
        self.token = api_token(settings.data_dir, create=False)

    async def call(self, method: str, path: str, body: Any = None, data: Any = None) -> Any:
        import aiohttp

        headers = {"Authorization": f"Bearer {self.token}"}
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=300)
        try:
            async with (
                aiohttp.ClientSession(timeout=timeout) as session,
                session.request(
                    method, self.base + API + path, json=body, data=data, headers=headers
                ) as resp,
            ):
                answer = await resp.json(content_type=None) if resp.status != 204 else None
        except aiohttp.ClientConnectionError as exc:
            raise StreamerHubError(
                f"cannot reach the daemon at {self.base} ({exc}): is "
                "`streamerhub run` running? (--url to point "
                "elsewhere)"
            ) from None
        except ValueError:
            raise StreamerHubError(f"the daemon at {self.base} did not answer JSON") from None
        if resp.status >= 400:
            message = answer.get("error") if isinstance(answer, dict) else None
            raise StreamerHubError(message or f"HTTP {resp.status}")
        return answer


def _run(
    args: argparse.Namespace,
    settings: Settings,
    method: str,
    path: str,
    body: Any = None,
    data: Any = None,
) -> Any:
    return asyncio.run(Client(settings, args.url).call(method, path, body, data))


def _show(args: argparse.Namespace, value: Any, line: Callable[[Any], str]) -> int:
    if args.json:
        print(json.dumps(value, indent=2, ensure_ascii=False))
    elif isinstance(value, list):
        for item in value:
            print(line(item))
        if not value:
            print("(none)")
    elif value is not None:
        print(line(value))
    return 0


# ----------------------------------------------------------------------------- targets


def _target_line(t: dict[str, Any]) -> str:
    flags = "" if t["enabled"] else "  (disabled)"
    channel = f"  twitch:{t['channel_id']}" if t.get("channel_id") else ""
    return f"{t['id']:>4}  {t['name']:<24} {t['url']}  key {t['stream_key']}{channel}{flags}"


def _read_key(args: argparse.Namespace) -> str:
    if args.key_stdin or not sys.stdin.isatty():
        return sys.stdin.readline().rstrip("\r\n")
    return getpass.getpass("stream key (hidden): ")


def cmd_targets_list(args: argparse.Namespace, settings: Settings) -> int:
    return _show(args, _run(args, settings, "GET", "/targets"), _target_line)


def cmd_targets_add(args: argparse.Namespace, settings: Settings) -> int:
    body = {
        "name": args.name,
        "url": args.ingest,
        "stream_key": _read_key(args),
        "enabled": not args.disabled,
        "channel_id": args.channel,
    }
    return _show(args, _run(args, settings, "POST", "/targets", body), _target_line)


def cmd_targets_edit(args: argparse.Namespace, settings: Settings) -> int:
    body: dict[str, Any] = {
        k: v
        for k, v in (("name", args.name), ("url", args.ingest), ("channel_id", args.channel))
        if v is not None
    }
    if args.enable or args.disable:
        body["enabled"] = bool(args.enable)
    if args.new_key or args.key_stdin:
        body["stream_key"] = _read_key(args)
    return _show(args, _run(args, settings, "PATCH", f"/targets/{args.id}", body), _target_line)


def cmd_targets_test(args: argparse.Namespace, settings: Settings) -> int:
    checked = _run(args, settings, "POST", f"/targets/{args.id}/test")
    if args.json:
        return _show(args, checked, str)
    print(f"target {args.id}: {checked['result']}: {checked['message']}")
    return 0 if checked["ok"] else 1


def cmd_targets_rm(args: argparse.Namespace, settings: Settings) -> int:
    _run(args, settings, "DELETE", f"/targets/{args.id}")
    print(f"target {args.id} deleted")
    return 0


# ----------------------------------------------------------------------------- videos


def _video_line(v: dict[str, Any]) -> str:
    probe = v.get("probe") or {}
    video = probe.get("video") or {}
    shape = (
        f"{video.get('width')}x{video.get('height')} {probe.get('duration') or 0:.1f} s"
        if video
        else ""
    )
    progress = f" {v['progress'] * 100:.0f}%" if v.get("progress") is not None else ""
    reason = f"  ({v['reason']})" if v.get("reason") else ""
    return f"{v['id']:>4}  {v['status'] + progress:<14} {v['label']:<32} {shape}{reason}"


def _profile(args: argparse.Namespace) -> dict[str, int]:
    return {
        k: v
        for k, v in (("video_kbps", args.video_kbps), ("audio_kbps", args.audio_kbps))
        if v is not None
    }


def cmd_videos_list(args: argparse.Namespace, settings: Settings) -> int:
    return _show(args, _run(args, settings, "GET", "/videos"), _video_line)


def cmd_videos_show(args: argparse.Namespace, settings: Settings) -> int:
    video = _run(args, settings, "GET", f"/videos/{args.id}")
    if not args.json:
        print(json.dumps(video, indent=2, ensure_ascii=False))
        return 0
    return _show(args, video, _video_line)


def cmd_videos_upload(args: argparse.Namespace, settings: Settings) -> int:
    import aiohttp

    path = Path(args.file)
    if not path.is_file():
        raise StreamerHubError(f"{path}: no such file")
    with path.open("rb") as handle:  # aiohttp streams the file object, never reads it whole
        form = aiohttp.FormData()
        for key, value in _profile(args).items():
            form.add_field(key, str(value))
        form.add_field("file", handle, filename=path.name, content_type="application/octet-stream")
        video = _run(args, settings, "POST", "/videos", data=form)
    return _show(args, video, _video_line)


def cmd_videos_import(args: argparse.Namespace, settings: Settings) -> int:
    body = {"path": str(Path(args.path).absolute()), **_profile(args)}
    return _show(args, _run(args, settings, "POST", "/videos", body), _video_line)


def cmd_videos_prepare(args: argparse.Namespace, settings: Settings) -> int:
    video = _run(args, settings, "POST", f"/videos/{args.id}/prepare", _profile(args))
    return _show(args, video, _video_line)


def cmd_videos_cancel(args: argparse.Namespace, settings: Settings) -> int:
    return _show(args, _run(args, settings, "POST", f"/videos/{args.id}/cancel"), _video_line)


def cmd_videos_rm(args: argparse.Namespace, settings: Settings) -> int:
    _run(args, settings, "DELETE", f"/videos/{args.id}")
    print(f"video {args.id} deleted")
    return 0


# ----------------------------------------------------------------------------- jobs


def job_text(j: dict[str, Any]) -> str:
    lines = [
        f"{j['id']:>4}  {j['name']:<24} {j['state']:<9} videos {j['videos']} "
        f"loop {j['loop']}" + (f"  next start {j['next_start']}" if j.get("next_start") else "")
    ]
    for t in j.get("targets", []):
        speed = f" {t['speed']}x" if t.get("speed") else ""
        error = f"  [{t['failure_class']}] {t['last_error']}" if t.get("last_error") else ""
        lines.append(
            f"        target {t['target_id']:>3} {t['name']:<20} {t['state']:<9}"
            f"{speed} restarts {t['restarts']}{error}"
        )
    lines += [f"        warning: {w}" for w in j.get("warnings", [])]
    return "\n".join(lines)


def parse_duration(text: str) -> int:
    """'90' (seconds), '45m', '1h30m', '2h' → seconds."""
    match = re.fullmatch(r"\s*(?:(\d+)h)?\s*(?:(\d+)m)?\s*(?:(\d+)s?)?\s*", text)
    if not match or not any(match.groups()):
        raise StreamerHubError(f"--duration {text!r}: use e.g. 90, 45m, 1h30m")
    h, m, s = (int(g or 0) for g in match.groups())
    return h * 3600 + m * 60 + s


def cmd_jobs_list(args: argparse.Namespace, settings: Settings) -> int:
    return _show(args, _run(args, settings, "GET", "/jobs"), job_text)


def cmd_jobs_show(args: argparse.Namespace, settings: Settings) -> int:
    job = _run(args, settings, "GET", f"/jobs/{args.id}")
    if args.json:
        return _show(args, job, job_text)
    print(job_text(job))
    for run in job.get("runs", [])[:5]:
        print(
            f"  run {run['id']} target {run['target_id']} {run['started_at']} → "
            f"{run['ended_at']} exit {run['exit_code']} {run['failure_class'] or ''} "
            f"{run['error'] or ''}"
        )
    return 0


def cmd_jobs_create(args: argparse.Namespace, settings: Settings) -> int:
    schedule = {
        k: v
        for k, v in (
            ("start_at", args.start_at),
            ("stop_at", args.stop_at),
            ("duration_s", args.duration and parse_duration(args.duration)),
            ("days", args.days),
        )
        if v
    }
    loop: Any = "forever" if args.loop == "forever" else int(args.loop)
    body = {
        "name": args.name,
        "videos": args.video,
        "targets": args.target,
        "loop": loop,
        "title": args.title,
        "category": args.category,
        "tags": args.tag or [],
        "schedule": schedule or None,
    }
    return _show(args, _run(args, settings, "POST", "/jobs", body), job_text)


def _job_action(action: str) -> Handler:
    def handler(args: argparse.Namespace, settings: Settings) -> int:
        path = f"/jobs/{args.id}" + (f"/targets/{args.target}" if args.target else "")
        return _show(args, _run(args, settings, "POST", f"{path}/{action}"), job_text)

    return handler


def cmd_jobs_rm(args: argparse.Namespace, settings: Settings) -> int:
    _run(args, settings, "DELETE", f"/jobs/{args.id}")
    print(f"job {args.id} deleted")
    return 0


# ----------------------------------------------------------------------------- parser


def add_commands(sub: Subcommands, common: argparse.ArgumentParser) -> None:
    """Register api-token, targets, videos and jobs on the `streamerhub` parser."""
    sub.add_parser(
        "api-token", parents=[common], help="print the local admin API token"
    ).set_defaults(handler=cmd_api_token)
    client = argparse.ArgumentParser(add_help=False, parents=[common])
    client.add_argument(
        "--url",
        help="daemon URL (default: where the daemon of --data-dir listens, "
        "else [web] host and port)",
    )
    client.add_argument("--json", action="store_true", help="print the API's JSON")
    _targets(sub, client)
    _videos(sub, client)
    _jobs(sub, client)


def _group(sub: Subcommands, name: str, text: str) -> Subcommands:
    return sub.add_parser(name, help=text).add_subparsers(
        dest=f"{name}_command", required=True, metavar="ACTION"
    )


def _targets(sub: Subcommands, client: argparse.ArgumentParser) -> None:
    group = _group(sub, "targets", "RTMP targets (stream keys are write-only)")
    group.add_parser("list", parents=[client], help="list targets").set_defaults(
        handler=cmd_targets_list
    )
    add = group.add_parser("add", parents=[client], help="add a target (asks for the key)")
    add.add_argument("name")
    add.add_argument("ingest", help="rtmp:// or rtmps:// ingest URL, without the key")
    add.add_argument("--key-stdin", action="store_true", help="read the key from stdin")
    add.add_argument("--disabled", action="store_true")
    add.add_argument("--channel", help="connected Twitch channel id (title/category)")
    add.set_defaults(handler=cmd_targets_add)
    edit = group.add_parser("edit", parents=[client], help="change a target")
    edit.add_argument("id", type=int)
    edit.add_argument("--name")
    edit.add_argument("--ingest", help="new ingest URL")
    edit.add_argument("--new-key", action="store_true", help="ask for a new stream key")
    edit.add_argument("--key-stdin", action="store_true", help="read a new key from stdin")
    edit.add_argument("--channel", help="Twitch channel id ('' to unlink)")
    state = edit.add_mutually_exclusive_group()
    state.add_argument("--enable", action="store_true")
    state.add_argument("--disable", action="store_true")
    edit.set_defaults(handler=cmd_targets_edit)
    test = group.add_parser(
        "test", parents=[client], help="publish a few test seconds: is the key right?"
    )
    test.add_argument("id", type=int)
    test.set_defaults(handler=cmd_targets_test)
    rm = group.add_parser("rm", parents=[client], help="delete a target")
    rm.add_argument("id", type=int)
    rm.set_defaults(handler=cmd_targets_rm)


def _videos(sub: Subcommands, client: argparse.ArgumentParser) -> None:
    group = _group(sub, "videos", "the video library")
    profile = argparse.ArgumentParser(add_help=False)
    profile.add_argument("--video-kbps", type=int)
    profile.add_argument("--audio-kbps", type=int)
    group.add_parser("list", parents=[client], help="list videos").set_defaults(
        handler=cmd_videos_list
    )
    for name, text, handler in (
        ("show", "status, probe and progress", cmd_videos_show),
        ("cancel", "cancel preparation", cmd_videos_cancel),
        ("rm", "delete a video", cmd_videos_rm),
    ):
        cmd = group.add_parser(name, parents=[client], help=text)
        cmd.add_argument("id", type=int)
        cmd.set_defaults(handler=handler)
    upload = group.add_parser("upload", parents=[client, profile], help="upload a file")
    upload.add_argument("file")
    upload.set_defaults(handler=cmd_videos_upload)
    imp = group.add_parser(
        "import", parents=[client, profile], help="add a file already on the daemon's machine"
    )
    imp.add_argument("path")
    imp.set_defaults(handler=cmd_videos_import)
    prep = group.add_parser("prepare", parents=[client, profile], help="prepare again")
    prep.add_argument("id", type=int)
    prep.set_defaults(handler=cmd_videos_prepare)


def _jobs(sub: Subcommands, client: argparse.ArgumentParser) -> None:
    group = _group(sub, "jobs", "stream jobs")
    group.add_parser("list", parents=[client], help="jobs and their targets' state").set_defaults(
        handler=cmd_jobs_list
    )
    create = group.add_parser("create", parents=[client], help="create a job")
    create.add_argument("name")
    create.add_argument(
        "--video",
        type=int,
        action="append",
        required=True,
        help="video id (repeat for a playlist, in order)",
    )
    create.add_argument("--target", type=int, action="append", required=True)
    create.add_argument("--loop", default="1", help="plays of the playlist, or 'forever'")
    create.add_argument("--title")
    create.add_argument("--category")
    create.add_argument("--tag", action="append")
    create.add_argument(
        "--start-at",
        help="e.g. 2025-06-01T20:00 (your time zone: Settings, else [general] timezone)",
    )
    create.add_argument("--stop-at")
    create.add_argument("--duration", help="stop after, e.g. 90m or 1h30m")
    create.add_argument("--days", help="repeat on weekdays, e.g. mon,wed,fri")
    create.set_defaults(handler=cmd_jobs_create)
    for name, text, handler in (
        ("show", "a job with runs", cmd_jobs_show),
        ("rm", "stop and delete a job", cmd_jobs_rm),
    ):
        cmd = group.add_parser(name, parents=[client], help=text)
        cmd.add_argument("id", type=int)
        cmd.set_defaults(handler=handler)
    for action in ("start", "stop"):
        cmd = group.add_parser(action, parents=[client], help=f"{action} a job, or one target")
        cmd.add_argument("id", type=int)
        cmd.add_argument("--target", type=int, help=f"{action} only this target")
        cmd.set_defaults(handler=_job_action(action))
