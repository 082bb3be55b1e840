"""Hardening against what an exposed service meets: a root install opens nothing, no request can
stall capture, bad input gets a clear 4xx or one line, never a traceback."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from streamerhub.db import _make_private_dir
from streamerhub.errors import DatabaseError

pytestmark = pytest.mark.e2e


# ----------------------------------------------------------------------------- root install


def _modes(paths: list[Path]) -> dict[Path, int]:
    return {p: stat.S_IMODE(p.stat().st_mode) for p in paths}


def _open_to_others(root: Path) -> list[str]:
    found = []
    for folder, dirs, files in os.walk(root):
        for name in [*dirs, *files]:
            path = Path(folder) / name
            st = path.lstat()
            if not stat.S_ISLNK(st.st_mode) and st.st_mode & 0o007:
                found.append(f"{path} {oct(stat.S_IMODE(st.st_mode))}")
    return found


@pytest.mark.skipif(os.geteuid() != 0, reason="a root install can only be tried as root")
def test_root_daemon_under_a_private_folder_opens_nothing(daemon_factory, tmp_path: Path) -> None:
    private = tmp_path / "home"
    private.mkdir(mode=0o700)
    (private / "diary.txt").write_text("mine")
    os.chmod(private / "diary.txt", 0o644)
    data = private / "data"
    data.mkdir(mode=0o700)  # as `streamerhub run` makes it (the harness would make it 0755)
    parents = [private, *private.parents]
    before = _modes(parents)
    daemon = daemon_factory(data_dir=data).start()
    home = Path(os.readlink(data / "postgres")).parent
    try:
        assert daemon.wait_healthy()["database"]["ok"] is True
        assert _modes(parents) == before, "a parent of the data dir changed mode"
        assert not _open_to_others(data) and stat.S_IMODE(data.stat().st_mode) == 0o700
        assert stat.S_IMODE(home.stat().st_mode) == 0o700 and home.stat().st_uid != 0
        check = subprocess.run(
            [sys.executable, "-m", "streamerhub", "check", "--config", str(daemon.config)]
            + ["--data-dir", str(data)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert "open to other users" not in check.stdout, check.stdout
        # The service user cannot read the folder the data dir sits in.
        peek = subprocess.run(
            ["setpriv", "--reuid=streamerhub", "--regid=streamerhub", "--clear-groups"]
            + ["cat", str(private / "diary.txt")],
            capture_output=True,
            timeout=10,
        )
        assert peek.returncode != 0
    finally:
        daemon.stop()
        shutil.rmtree(home, ignore_errors=True)


def test_socket_folder_made_by_someone_else_is_refused(tmp_path: Path) -> None:
    planted = tmp_path / "sock"
    planted.mkdir()
    planted.chmod(0o777)
    with pytest.raises(DatabaseError, match="not private.*rm -r"):
        _make_private_dir(planted)
    foreign = tmp_path / "foreign"
    foreign.mkdir(mode=0o700)
    os.chown(foreign, 65534, 65534) if os.geteuid() == 0 else None
    if os.geteuid() == 0:
        with pytest.raises(DatabaseError, match="owner uid 65534"):
            _make_private_dir(foreign)
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "elsewhere")
    (tmp_path / "elsewhere").mkdir(mode=0o700)
    with pytest.raises(DatabaseError):
        _make_private_dir(link)
    fresh = tmp_path / "fresh"
    _make_private_dir(fresh)
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o700
    _make_private_dir(fresh)  # our own private folder is adopted on the next start
