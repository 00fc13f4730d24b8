#!/usr/bin/env bash
# Prepare a Debian 12 / Ubuntu machine to develop and test topo. Idempotent: a
# second run installs nothing and takes a second or two.
#
#   - system packages (only those missing): rabbitmq-server, chromium (the
#     tests render `topo graph --format html` in it, headless), and python3 with
#     venv/pip support when no Python >= 3.11 with a working venv is on PATH;
#   - the RabbitMQ 4.x test broker in a chroot (scripts/setup-rabbitmq4.sh:
#     built once per machine and cached under /var/cache/topo, then unpacked
#     into .rabbitmq4/ in seconds);
#   - .venv in the repo with `pip install -e '.[test]'` (redone only when
#     pyproject.toml changed since the last successful install).
#
# It never starts the system RabbitMQ service: the tests start throwaway nodes
# of their own (tests/rabbitmq_node.py) and only need the binaries.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

log() { printf 'setup-debian: %s\n' "$*" >&2; }

# Root runs apt directly (CI, containers); anyone else goes through sudo.
if [ "$(id -u)" -eq 0 ]; then
    SUDO=()
elif command -v sudo >/dev/null 2>&1; then
    SUDO=(sudo)
else
    SUDO=()
fi

# A Python that can build our venv: >= 3.11 (pyproject's requires-python) and
# with the venv + ensurepip modules (Debian splits those into python3-venv).
python_ok() {
    "$1" -c 'import sys, venv, ensurepip; raise SystemExit(sys.version_info < (3, 11))' >/dev/null 2>&1
}

pick_python() {
    # Prefer whatever `python3` is on PATH (e.g. pyenv's), then the system one.
    local candidate
    for candidate in "$(command -v python3 || true)" /usr/bin/python3; do
        if [ -n "$candidate" ] && python_ok "$candidate"; then
            printf '%s\n' "$candidate"
            return 0
        fi
    done
    return 1
}

packages=()
if ! dpkg-query -W -f='${Status}' rabbitmq-server 2>/dev/null | grep -q 'install ok installed'; then
    packages+=(rabbitmq-server)
fi
if ! dpkg-query -W -f='${Status}' chromium 2>/dev/null | grep -q 'install ok installed'; then
    packages+=(chromium)
fi
if ! PYTHON="$(pick_python)"; then
    packages+=(python3 python3-venv python3-pip)
fi

if [ "${#packages[@]}" -gt 0 ]; then
    if ! command -v apt-get >/dev/null 2>&1; then
        log "missing ${packages[*]} and no apt-get here; install them by hand"
        exit 1
    fi
    log "installing ${packages[*]}"
    # Debian starts a service on install unless policy-rc.d says no (101).
    # Only add our own policy when there is none, and always take it away.
    policy=/usr/sbin/policy-rc.d
    own_policy=0
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' | "${SUDO[@]}" tee "$policy" >/dev/null
        "${SUDO[@]}" chmod 755 "$policy"
        own_policy=1
        trap '[ "$own_policy" = 1 ] && "${SUDO[@]}" rm -f "$policy"' EXIT
    fi
    export DEBIAN_FRONTEND=noninteractive
    "${SUDO[@]}" apt-get update -q
    "${SUDO[@]}" apt-get install -y -q --no-install-recommends "${packages[@]}"
    if [ "$own_policy" = 1 ]; then
        "${SUDO[@]}" rm -f "$policy"
        own_policy=0
    fi
    PYTHON="$(pick_python)" || { log "no Python >= 3.11 with venv support after install"; exit 1; }
fi

# Reuse .venv unless its interpreter is gone (e.g. pyenv version removed) or too old.
if [ -x .venv/bin/python ] && ! .venv/bin/python -c 'import sys; raise SystemExit(sys.version_info < (3, 11))' 2>/dev/null; then
    log "recreating .venv (its Python is broken or older than 3.11)"
    rm -rf .venv
fi
if [ ! -x .venv/bin/python ]; then
    log "creating .venv with $PYTHON ($("$PYTHON" --version 2>&1))"
    "$PYTHON" -m venv .venv
fi

# The editable install tracks code changes by itself; only a changed
# pyproject.toml (dependencies, entry points) needs another pip run.
stamp=.venv/.topo-setup-stamp
want="$(sha256sum pyproject.toml | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null || true)" != "$want" ] || [ ! -x .venv/bin/pytest ] || [ ! -x .venv/bin/ruff ]; then
    log "pip install -e '.[test]'"
    .venv/bin/python -m pip install --disable-pip-version-check -q -e '.[test]'
    printf '%s\n' "$want" >"$stamp"
fi
"${SUDO[@]}" bash scripts/setup-rabbitmq4.sh
log "ready: $(.venv/bin/python --version 2>&1), rabbitmq-server $(dpkg-query -W -f='${Version}' rabbitmq-server)"
