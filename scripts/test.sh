#!/usr/bin/env bash
# The whole check, as CI runs it: set up (idempotent), lint, test.
# Arguments go to pytest, e.g. `scripts/test.sh -m "not broker"` or `-k plan -x`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup-debian.sh
.venv/bin/ruff check .
exec .venv/bin/python -m pytest -q "$@"
