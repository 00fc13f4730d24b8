#!/usr/bin/env bash
# topo's main job on a fresh Debian/Ubuntu machine: install what is needed, start a throwaway RabbitMQ,
# apply every example topology, and show that a second plan finds nothing to change.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-debian.sh
exec .venv/bin/python scripts/demo.py "$@"
