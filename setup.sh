#!/usr/bin/env bash
# Install upstox-bot into ./.venv with its pinned dependencies and create the database schema.
#   ./setup.sh          the bot
#   ./setup.sh --dev    the bot plus the test and lint tools
set -euo pipefail
cd "$(dirname "$0")"

extras=""
if [ "${1:-}" = "--dev" ]; then extras="[dev]"; fi

python=${PYTHON:-python3}
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    echo "upstox-bot needs Python 3.11 or newer (found: $("$python" --version 2>&1))" >&2
    exit 1
fi

if [ ! -x .venv/bin/python ]; then
    "$python" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade "pip==25.3"
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e "backend${extras}"

# The schema: DATABASE_URL, or the SQLite file in DATA_DIR (./var by default).
.venv/bin/upstox-bot db upgrade
