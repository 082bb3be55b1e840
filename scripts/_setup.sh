# Sourced by scripts/run and scripts/test: make .venv with StreamerHub installed, needing only
# Python 3.11+. Re-installs only when pyproject.toml changed since the last install.
set -eu
PYTHON="${PYTHON:-python3}"
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    echo "StreamerHub needs Python 3.11 or newer; found: $("$PYTHON" --version 2>&1 || echo none)." >&2
    echo "Install it (Debian/Ubuntu: apt-get install python3) or set PYTHON=/path/to/python3.11" >&2
    exit 1
fi
extras="${EXTRAS:-}"
stamp=".venv/.installed${extras:+-$extras}"
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
want="$(cat pyproject.toml | "$PYTHON" -c 'import hashlib,sys; print(hashlib.sha256(sys.stdin.buffer.read()).hexdigest())')"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    .venv/bin/python -m pip install --quiet --upgrade pip
    .venv/bin/python -m pip install --quiet -e ".${extras:+[$extras]}"
    echo "$want" > "$stamp"
fi
