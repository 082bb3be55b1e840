"""The video library: uploads and imports, probing, and one preparation queue.

An upload is written chunk by chunk to DATA_DIR/videos under a generated name: the user's file
name is only a label, so no name can reach outside that folder. Each new video is probed, then
prepared once (encoded, or only remuxed when already stream-ready), one at a time, with progress
kept in memory and cancellable. A video is streamable only when `ready`.
"""

from __future__ import annotations

import asyncio
import builtins
import dataclasses
import datetime as dt
import os
import re
import secrets
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any, AsyncIterable, Callable, Mapping, Sequence

from streamerhub.db import REFERENCE_VIOLATIONS, Database
from streamerhub.errors import Conflict, InvalidInput, NotFound, TooLarge
from streamerhub.ffmpeg.argv import DEFAULT_PROFILE, EncodeProfile, plan_video, recommended_kbps
from streamerhub.ffmpeg.binary import FFmpegBinary
from streamerhub.ffmpeg.prepare import PrepareError, nominal_rate, prepare
from streamerhub.ffmpeg.probe import (
    AudioInfo,
    MediaProbe,
    ProbeError,
    VideoInfo,
    compliance_issues,
    playlist_issues,
    probe,
)
from streamerhub.ffmpeg.search import video_filter
from streamerhub.log import get_logger, redact

log = get_logger(__name__)

VIDEOS_DIR = "videos"
EXTENSIONS = {"mp4", "m4v", "mov", "mkv", "webm", "ogg", "ogv", "avi", "wmv", "flv", "ts", "mts"}
Publish = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class Video:
    id: int
    label: str
    source: str
    path: str
    size_bytes: int
    status: str
    reason: str | None
    probe: dict[str, Any] | None
    video_kbps: int
    audio_kbps: int
    prepared_path: str | None
    prepared_mode: str | None
    prepared_probe: dict[str, Any] | None
    created_at: dt.datetime
    updated_at: dt.datetime
    progress: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "label": self.label,
            "source": self.source,
            "size_bytes": self.size_bytes,
            "status": self.status,
            "reason": self.reason,
            "progress": self.progress,
            "probe": _public_probe(self.probe),
            "notices": self.notices(),
            "profile": {"video_kbps": self.video_kbps, "audio_kbps": self.audio_kbps},
            "prepared": None
            if self.prepared_mode is None
            else {
                "mode": self.prepared_mode,
                "reasons": self.encode_reasons(),
                "probe": _public_probe(self.prepared_probe),
            },
            "created_at": self.created_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
        }

    def notices(self) -> list[str]:
        """What the streamer should know about a playable video: what of it is left out."""
        tracks = (self.probe or {}).get("audio_tracks", 1)
        if tracks > 1:
            return [f"{tracks} audio tracks: the first is pushed, the others dropped"]
        return []

    def encode_reasons(self) -> list[str]:
        """Why the source had to be encoded (empty for a remux): what was not stream-ready."""
        if self.prepared_mode != "encode" or not self.probe:
            return []
        profile = EncodeProfile(self.video_kbps, self.audio_kbps)
        return compliance_issues(probe_from_json(self.probe), profile)


def _public_probe(data: dict[str, Any] | None) -> dict[str, Any] | None:
    if data is None:
        return None
    shown = {k: v for k, v in data.items() if k != "path"}
    return {**shown, "audio_present": data.get("audio") is not None}


def probe_to_json(media: MediaProbe) -> dict[str, Any]:
    return {**dataclasses.asdict(media), "path": str(media.path)}


def probe_from_json(data: dict[str, Any]) -> MediaProbe:
    audio = AudioInfo(**data["audio"]) if data.get("audio") else None
    return MediaProbe(
        **{**data, "path": Path(data["path"]), "video": VideoInfo(**data["video"]), "audio": audio}
    )


def safe_label(name: str | None) -> str:
    """The user's file name as a display label: last path component, printable, ≤ 200 chars."""
    base = re.split(r"[\\/]", name or "")[-1]
    base = "".join(c for c in unicodedata.normalize("NFC", base) if c.isprintable()).strip()
    return base.lstrip(".")[:200] or "video"


def _extension(label: str) -> str:
    ext = label.rsplit(".", 1)[-1].lower() if "." in label else ""
    return ext if ext in EXTENSIONS else "bin"


def parse_profile(body: Any, default: EncodeProfile) -> EncodeProfile:
    """video_kbps / audio_kbps from a request, checked by EncodeProfile's own bounds."""
    values = {
        k: body[k]
        for k in ("video_kbps", "audio_kbps")
        if isinstance(body, dict) and body.get(k) is not None
    }
    for key, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidInput(f"{key}: must be a whole number of kbit/s")
    try:
        return dataclasses.replace(default, **values)
    except ValueError as exc:
        raise InvalidInput(str(exc)) from None


_COLUMNS = (
    "id, label, source, path, size_bytes, status, reason, probe, video_kbps, audio_kbps, "
    "prepared_path, prepared_mode, prepared_probe, created_at, updated_at"
)


class Library:
    """Videos on disk and in PostgreSQL, plus the preparation queue (one video at a time)."""

    def __init__(
        self,
        db: Database,
        data_dir: Path,
        ffmpeg: FFmpegBinary | str,
        *,
        max_upload_bytes: int,
        profile: EncodeProfile = DEFAULT_PROFILE,
        publish: Publish | None = None,
        import_dirs: Sequence[str | os.PathLike[str]] = (),
        kbps_by_resolution: bool = False,
    ) -> None:
        self.db = db
        self.import_dirs = [Path(d).resolve() for d in import_dirs]
        # No bitrate asked for: the recommendation for the video's size, set once it is probed
        # (stored as 0 until then).
        self.kbps_by_resolution = kbps_by_resolution
        self.data_dir = data_dir
        self.folder = data_dir / VIDEOS_DIR
        self.ffmpeg = ffmpeg
        self.max_upload_bytes = max_upload_bytes
        self.profile = profile
        self.publish = publish or (lambda _event: None)
        self.progress: dict[int, float] = {}
        self._queue: asyncio.Queue[int] = asyncio.Queue()
        self._queued: set[int] = set()
        self._current: tuple[int, asyncio.Task[None]] | None = None
        self._worker: asyncio.Task[None] | None = None

    # ----------------------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        """Create the folders and pick up videos a previous run left half-processed."""
        (self.folder / ".incoming").mkdir(parents=True, exist_ok=True, mode=0o700)
        for part in (self.folder / ".incoming").glob("*.part"):
            part.unlink(missing_ok=True)  # uploads cut short by a stop
        rows = await self.db.pool.fetch(
            "SELECT id FROM videos WHERE status IN "
            "('uploaded', 'probing', 'preparing') AND reason IS NULL "
            "ORDER BY id"
        )
        for row in rows:
            self._enqueue(row["id"])
        self._worker = asyncio.create_task(self._work(), name="video-prepare-queue")

    async def stop(self) -> None:
        """Cancel the running preparation (FFmpeg is killed, the partial file removed)."""
        worker, self._worker = self._worker, None
        if worker is not None:
            worker.cancel()
            await asyncio.gather(worker, return_exceptions=True)

    # ----------------------------------------------------------------------------- intake

    async def store_upload(
        self, filename: str | None, chunks: AsyncIterable[bytes], body: Any = None
    ) -> Video:
        """Stream an upload to disk under a generated name, then queue it for probing."""
        profile = parse_profile(body, self.profile)
        label = safe_label(filename)
        name = f"{secrets.token_hex(16)}.{_extension(label)}"
        part = self.folder / ".incoming" / f"{name}.part"
        size = await self._write_chunks(part, chunks)
        final = self.folder / name
        os.replace(part, final)
        wanted = self._pending(profile, body)
        return await self._add(label, "upload", f"{VIDEOS_DIR}/{name}", size, wanted)

    async def _write_chunks(self, part: Path, chunks: AsyncIterable[bytes]) -> int:
        size = 0
        try:
            with open(part, "xb") as out:
                os.fchmod(out.fileno(), 0o600)
                async for chunk in chunks:
                    size += len(chunk)
                    if size > self.max_upload_bytes:
                        raise TooLarge(
                            f"file: larger than the upload limit of "
                            f"{_human(self.max_upload_bytes)} ([ffmpeg] "
                            "max_upload_bytes); import it by path instead"
                        )
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            if size == 0:
                raise InvalidInput("file: the uploaded file is empty (0 bytes)")
        except BaseException:
            part.unlink(missing_ok=True)
            raise
        return size

    async def import_path(self, body: Any) -> Video:
        """Add a file from one of the [library] import_dirs, probed and prepared where it is."""
        if not self.import_dirs:
            raise InvalidInput(
                "path: import by server path is off; name the folder(s) it may read in "
                "[library] import_dirs in config.toml, or upload the file instead"
            )
        raw = body.get("path") if isinstance(body, dict) else None
        if not isinstance(raw, str) or not raw.strip():
            raise InvalidInput("path: give the absolute path of a video file on the server")
        if not raw.isprintable():
            raise InvalidInput("path: contains a control character")
        path = Path(raw.strip())
        if not path.is_absolute():
            raise InvalidInput(f"path: {raw!r} is not absolute (start it with /)")
        # Containment is checked on the resolved path (symlinks and .. followed) before anything
        # else is said about the file, so a refused path reveals nothing about what exists.
        resolved = path.resolve()
        if not any(resolved.is_relative_to(folder) for folder in self.import_dirs):
            folders = ", ".join(str(d) for d in self.import_dirs)
            raise InvalidInput(
                f"path: only files inside the import folders ({folders}) can be imported; "
                "move the file there or add its folder to [library] import_dirs"
            )
        try:
            size = resolved.stat().st_size
        except OSError as exc:
            raise InvalidInput(f"path: cannot read {path} ({exc.strerror})") from None
        if not resolved.is_file():
            raise InvalidInput(f"path: {path} is not a regular file")
        if size == 0:
            raise InvalidInput(f"path: {path} is empty (0 bytes)")
        if not os.access(resolved, os.R_OK):
            raise InvalidInput(f"path: no permission to read {path}")
        label = safe_label(body.get("label") or resolved.name)
        profile = self._pending(parse_profile(body, self.profile), body)
        return await self._add(label, "import", str(resolved), size, profile)

    def _pending(self, profile: EncodeProfile, body: Any) -> EncodeProfile | tuple[int, int]:
        """The profile, or (0, audio kbit/s) when the bitrate waits for the probe."""
        asked = isinstance(body, dict) and body.get("video_kbps") is not None
        return profile if asked or not self.kbps_by_resolution else (0, profile.audio_kbps)

    async def _add(
        self,
        label: str,
        source: str,
        path: str,
        size: int,
        profile: EncodeProfile | tuple[int, int],
    ) -> Video:
        video_kbps, audio_kbps = (
            profile if isinstance(profile, tuple) else (profile.video_kbps, profile.audio_kbps)
        )
        row = await self.db.pool.fetchrow(
            f"INSERT INTO videos (label, source, path, size_bytes, video_kbps, audio_kbps) "
            f"VALUES ($1, $2, $3, $4, $5, $6) RETURNING {_COLUMNS}",
            label,
            source,
            path,
            size,
            video_kbps,
            audio_kbps,
        )
        video = Video(**row)
        log.info("video_added", video=video.id, label=label, source=source, size_bytes=size)
        self._enqueue(video.id)
        return video

    # ----------------------------------------------------------------------------- reading

    async def list(self, query: Mapping[str, str] | None = None) -> list[Video]:
        """Every video, or those matching the filters of ffmpeg/search.py."""
        where, args = video_filter(query or {})
        rows = await self.db.pool.fetch(f"SELECT {_COLUMNS} FROM videos{where} ORDER BY id", *args)
        return [self._with_progress(Video(**r)) for r in rows]

    async def get(self, video_id: int) -> Video:
        row = await self.db.pool.fetchrow(f"SELECT {_COLUMNS} FROM videos WHERE id = $1", video_id)
        if row is None:
            raise NotFound(f"no video with id {video_id}")
        return self._with_progress(Video(**row))

    def _with_progress(self, video: Video) -> Video:
        progress = self.progress.get(video.id) if video.status == "preparing" else None
        return dataclasses.replace(video, progress=progress)

    async def ready_files(self, video_ids: Sequence[int]) -> builtins.list[Path]:
        """The prepared files of a playlist, in order; InvalidInput if one is not streamable."""
        videos = [await self.get(v) for v in video_ids]
        for video in videos:
            if video.status != "ready" or not video.prepared_path:
                detail = f": {video.reason}" if video.reason else ""
                raise InvalidInput(
                    f"video {video.id} ({video.label}) is not ready to stream "
                    f"(status {video.status}{detail})"
                )
        _check_shapes(videos)
        return [self.data_dir / v.prepared_path for v in videos if v.prepared_path]

    async def check_playlist(self, video_ids: Sequence[int]) -> None:
        """Refuse, when a job is created or edited, a playlist that could never stream.

        A rejected video, or ready videos of different shapes, used to be found only when the
        job started: a scheduled job then failed when it fired, with nobody watching. Videos
        still being prepared are accepted; start checks them again.
        """
        videos = []
        for video_id in video_ids:
            try:
                videos.append(await self.get(video_id))
            except NotFound:
                raise InvalidInput(
                    f"videos: one of the ids is not a video in the library ({video_id})"
                ) from None
        for video in videos:
            if video.status == "rejected":
                raise InvalidInput(
                    f"videos: video {video.id} ({video.label}) was rejected and can never "
                    f"stream: {video.reason or 'see the library'}; remove it from the playlist"
                )
        _check_shapes([v for v in videos if v.status == "ready" and v.prepared_probe])

    # ----------------------------------------------------------------------------- actions

    async def prepare_again(self, video_id: int, body: Any = None) -> Video:
        """Queue a video (again), optionally with another profile; not while it is in work."""
        video = await self.get(video_id)
        if video_id in self._queued or self._busy_with(video_id):
            raise Conflict(f"video {video_id} is already queued or being prepared")
        current = EncodeProfile(video.video_kbps or self.profile.video_kbps, video.audio_kbps)
        profile = parse_profile(body, current)
        await self.db.pool.execute(
            "UPDATE videos SET status = 'uploaded', reason = NULL, video_kbps = $2, "
            "audio_kbps = $3, updated_at = now() WHERE id = $1",
            video_id,
            profile.video_kbps,
            profile.audio_kbps,
        )
        self._enqueue(video_id)
        return await self.get(video_id)

    async def cancel(self, video_id: int) -> Video:
        """Stop probing/preparing a video (FFmpeg is killed); it can be prepared again later."""
        video = await self.get(video_id)
        if video_id not in self._queued and not self._busy_with(video_id):
            raise Conflict(f"video {video_id} is not being prepared (status {video.status})")
        self._queued.discard(video_id)
        if self._current and self._current[0] == video_id:
            self._current[1].cancel()
            await asyncio.gather(self._current[1], return_exceptions=True)
        await self._set(video_id, "uploaded", reason="preparation cancelled")
        return await self.get(video_id)

    async def delete(self, video_id: int) -> None:
        video = await self.get(video_id)
        jobs = await self.db.pool.fetch(
            "SELECT DISTINCT j.id, j.name FROM stream_job_videos v JOIN stream_jobs j "
            "ON j.id = v.job_id WHERE v.video_id = $1 ORDER BY j.id",
            video_id,
        )
        if jobs:
            names = ", ".join(f"{r['id']} ({r['name']})" for r in jobs)
            raise Conflict(f"video {video_id} is used by job {names}: remove it there first")
        if video_id in self._queued or self._busy_with(video_id):
            await self.cancel(video_id)
        try:
            await self.db.pool.execute("DELETE FROM videos WHERE id = $1", video_id)
        except REFERENCE_VIOLATIONS:
            raise Conflict(f"video {video_id} was just added to a job") from None
        if video.source == "upload":
            (self.data_dir / video.path).unlink(missing_ok=True)
        if video.prepared_path:
            (self.data_dir / video.prepared_path).unlink(missing_ok=True)

    def _busy_with(self, video_id: int) -> bool:
        return self._current is not None and self._current[0] == video_id

    # ----------------------------------------------------------------------------- the queue

    def _enqueue(self, video_id: int) -> None:
        if video_id not in self._queued:
            self._queued.add(video_id)
            self._queue.put_nowait(video_id)

    async def _work(self) -> None:
        while True:
            video_id = await self._queue.get()
            if video_id not in self._queued:
                continue  # cancelled while waiting
            self._queued.discard(video_id)
            task = asyncio.create_task(self._process(video_id))
            self._current = (video_id, task)
            try:
                await asyncio.shield(task)
            except asyncio.CancelledError:
                if not task.done():  # we are being stopped, not the video cancelled
                    task.cancel()
                    await asyncio.gather(task, return_exceptions=True)
                    raise
            except Exception as exc:  # noqa: BLE001 - never let one bad file stop the queue
                log.error("video_prepare_crashed", video=video_id, error=redact(repr(exc)))
                await self._set(video_id, "rejected", reason=f"internal error: {exc}")
            finally:
                self._current = None
                self.progress.pop(video_id, None)

    async def _process(self, video_id: int) -> None:
        video = await self.get(video_id)
        source = self.data_dir / video.path
        await self._set(video_id, "probing")
        try:
            media = await probe(self.ffmpeg, source)
        except ProbeError as exc:
            log.info("video_rejected", video=video_id, reason=exc.reason)
            await self._set(
                video_id, "rejected", reason=redact(str(exc)).replace(source.name, video.label)
            )
            return
        await self.db.pool.execute(
            "UPDATE videos SET probe = $2 WHERE id = $1", video_id, probe_to_json(media)
        )
        if video.video_kbps == 0:
            fps = nominal_rate(media)
            plan = plan_video(media.video.width, media.video.height, fps, self.profile)
            kbps = recommended_kbps(plan.height, float(plan.fps))
            await self.db.pool.execute(
                "UPDATE videos SET video_kbps = $2 WHERE id = $1", video_id, kbps
            )
            video = dataclasses.replace(video, video_kbps=kbps)
        await self._prepare(video, source, media)

    async def _prepare(self, video: Video, source: Path, media: MediaProbe) -> None:
        self.progress[video.id] = 0.0
        await self._set(video.id, "preparing")
        dst = self.folder / f"{Path(video.path).stem}-{video.video_kbps}k.mp4"
        if video.source == "import":
            dst = self.folder / f"import-{video.id}-{video.video_kbps}k.mp4"
        profile = EncodeProfile(video.video_kbps, video.audio_kbps)
        try:
            done = await prepare(
                self.ffmpeg,
                source,
                dst,
                profile,
                source=media,
                on_progress=lambda f: self._on_progress(video.id, f),
            )
        except (PrepareError, ProbeError) as exc:
            await self._set(video.id, "rejected", reason=f"preparation failed: {redact(str(exc))}")
            return
        await self.db.pool.execute(
            "UPDATE videos SET status = 'ready', reason = NULL, prepared_path = $2, "
            "prepared_mode = $3, prepared_probe = $4, updated_at = now() WHERE id = $1",
            video.id,
            str(dst.relative_to(self.data_dir)),
            done.mode,
            probe_to_json(done.probe),
        )
        log.info("video_ready", video=video.id, mode=done.mode, seconds=done.seconds)
        self.publish({"type": "video", "id": video.id, "status": "ready"})

    def _on_progress(self, video_id: int, fraction: float) -> None:
        self.progress[video_id] = fraction

    async def _set(self, video_id: int, status: str, reason: str | None = None) -> None:
        await self.db.pool.execute(
            "UPDATE videos SET status = $2, reason = $3, updated_at = now() WHERE id = $1",
            video_id,
            status,
            reason,
        )
        self.publish({"type": "video", "id": video_id, "status": status, "reason": reason})


def _check_shapes(videos: Sequence[Video]) -> None:
    """InvalidInput naming the videos (by label) when ready videos cannot play back to back."""
    probes = [probe_from_json(v.prepared_probe or {}) for v in videos]
    labels = {str(p.path): f"video {v.id} ({v.label})" for p, v in zip(probes, videos, strict=True)}
    issues = playlist_issues(probes, labels)
    if issues:
        raise InvalidInput(
            "videos: a playlist plays without re-encoding, so its videos must share "
            f"size, frame rate and audio format: {issues[0]}"
        )


def _human(size: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:g} {unit}" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1024
    return str(size)
