"""The two commands on a machine without Python's venv module: one clear line, nothing half-made."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _copy_of_the_project(tmp_path: Path) -> Path:
    project = tmp_path / "project"
    (project / "scripts").mkdir(parents=True)
    for name in ("_setup.sh", "run", "test"):
        shutil.copy2(ROOT / "scripts" / name, project / "scripts" / name)
    shutil.copy2(ROOT / "pyproject.toml", project / "pyproject.toml")
    return project


def _without_venv_module(tmp_path: Path) -> dict[str, str]:
    # What Debian's python3 without python3-venv does: ensurepip cannot be imported.
    shadow = tmp_path / "shadow" / "ensurepip"
    shadow.mkdir(parents=True, exist_ok=True)
    (shadow / "__init__.py").write_text("raise ModuleNotFoundError('ensurepip is disabled')\n")
    return {**os.environ, "PYTHONPATH": str(shadow.parent), "PYTHON": sys.executable}


def test_no_venv_module_says_what_to_install_and_leaves_nothing(tmp_path: Path) -> None:
    project = _copy_of_the_project(tmp_path)
    for command in ("run", "test"):
        done = subprocess.run(
            ["sh", f"scripts/{command}"],
            cwd=project,
            capture_output=True,
            text=True,
            env=_without_venv_module(tmp_path),
            timeout=60,
        )
        assert done.returncode != 0
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and "python3-venv" in lines[0], done.stderr
        assert "Traceback" not in done.stderr
        assert not (project / ".venv").exists()


def test_a_broken_venv_is_removed_and_a_failed_one_never_left(tmp_path: Path) -> None:
    project = _copy_of_the_project(tmp_path)
    # What a failed `python -m venv` used to leave behind: a venv without pip inside.
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", str(project / ".venv")],
        check=True,
        timeout=60,
    )
    # A Python whose venv step fails (a full disk, say) after every check passed.
    python = tmp_path / "python3"
    python.write_text(f'#!/bin/sh\n[ "$1 $2" = "-m venv" ] && exit 3\nexec {sys.executable} "$@"\n')
    python.chmod(0o755)
    done = subprocess.run(
        ["sh", "-c", ". scripts/_setup.sh"],
        cwd=project,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHON": str(python)},
        timeout=60,
    )
    assert done.returncode != 0
    assert "removing a broken .venv" in done.stderr and "nothing was left behind" in done.stderr
    assert not (project / ".venv").exists()


def test_the_first_install_says_what_it_installs_and_how_long(tmp_path: Path) -> None:
    """The first run is not silent for a minute: it names what it installs and how long it takes.
    (A stand-in Python makes a venv whose pip fails at once: only the message is checked.)"""
    project = _copy_of_the_project(tmp_path)
    venv_python = '#!/bin/sh\n[ "$3" = "--version" ] && exit 0\nexit 1\n'
    python = tmp_path / "python3"
    python.write_text(
        "#!/bin/sh\n"
        f'if [ "$1 $2" = "-m venv" ]; then mkdir -p "$3/bin" && printf %s \'{venv_python}\' '
        '> "$3/bin/python" && chmod +x "$3/bin/python"; exit; fi\n'
        f'exec {sys.executable} "$@"\n'
    )
    python.chmod(0o755)
    done = subprocess.run(
        ["sh", "-c", ". scripts/_setup.sh"],
        cwd=project,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHON": str(python)},
        timeout=60,
    )
    assert done.returncode != 0  # the stand-in pip refused to install
    first = [line for line in done.stderr.splitlines() if line.startswith("installing")]
    assert first, done.stderr
    assert "PostgreSQL" in first[0] and "FFmpeg" in first[0] and "minutes" in first[0]
