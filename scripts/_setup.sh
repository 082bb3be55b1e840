# Sourced by scripts/run and scripts/test: make .venv (or $VENV) with StreamerHub installed, needing only
# Python 3.11+ with its venv module. Re-installs only when pyproject.toml changed since the last
# install. Never leaves a half-made .venv behind: one that cannot run pip is removed and made anew.
set -eu
PYTHON="${PYTHON:-python3}"
VENV="${VENV:-.venv}"
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    echo "StreamerHub needs Python 3.11 or newer; found: $("$PYTHON" --version 2>&1 || echo none)." >&2
    echo "Install it (Debian/Ubuntu: apt-get install python3) or set PYTHON=/path/to/python3.11" >&2
    exit 1
fi
if ! "$PYTHON" -c 'import venv, ensurepip' 2>/dev/null; then
    minor="$("$PYTHON" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"
    echo "StreamerHub needs Python's venv module with pip, which $PYTHON lacks: install it (Debian/Ubuntu: apt-get install python3-venv, or python$minor-venv) and run this again." >&2
    exit 1
fi
extras="${EXTRAS:-}"
stamp="$VENV/.installed${extras:+-$extras}"
if [ -d "$VENV" ] && ! "$VENV/bin/python" -m pip --version >/dev/null 2>&1; then
    echo "removing a broken $VENV (it cannot run pip) to make it anew" >&2
    rm -rf "$VENV"
fi
if [ ! -x "$VENV/bin/python" ]; then
    echo "first run: creating $VENV and installing StreamerHub into it (about a minute)..." >&2
    if ! "$PYTHON" -m venv "$VENV"; then
        rm -rf "$VENV"
        echo "could not create $VENV with $PYTHON -m venv (see above); nothing was left behind" >&2
        exit 1
    fi
fi
want="$(cat pyproject.toml | "$PYTHON" -c 'import hashlib,sys; print(hashlib.sha256(sys.stdin.buffer.read()).hexdigest())')"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    if ! ls "$VENV"/.installed* >/dev/null 2>&1; then  # nothing installed yet: the long one
        echo "installing StreamerHub${extras:+ with its $extras tools} into $VENV: the web server, the database driver, a bundled PostgreSQL 18 and FFmpeg (about 250 MB; one to two minutes, then seconds on later runs)..." >&2
    else
        echo "pyproject.toml changed: updating StreamerHub${extras:+ with its $extras tools} in $VENV (under a minute)..." >&2
    fi
    "$VENV/bin/python" -m pip install --quiet --upgrade pip
    "$VENV/bin/python" -m pip install --quiet -e ".${extras:+[$extras]}"
    echo "$want" > "$stamp"
    echo "installed; starting..." >&2
fi
