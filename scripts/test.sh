#!/usr/bin/env bash
# The whole check, as CI runs it: set up (idempotent), lint, test.
# Arguments go to pytest, e.g. `scripts/test.sh -m "not broker"` or `-k plan -x`.
#
# The suite runs twice: everything on RabbitMQ 3.10 (Debian 12's package), then
# every broker test again on RabbitMQ 4.3 (Debian forky's, in the chroot that
# scripts/setup-rabbitmq4.sh prepares). TOPO_TEST_RABBITMQ=3.10 or =4.3 runs
# only that version. The summary at the end names the version of each failure.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup-debian.sh
.venv/bin/ruff check .

versions=("${TOPO_TEST_RABBITMQ:-3.10}")
[ -z "${TOPO_TEST_RABBITMQ:-}" ] && versions=(3.10 4.3)
declare -A result
status=0
for version in "${versions[@]}"; do
    began=$SECONDS
    args=()
    # Tests without a broker do not depend on its version: once is enough.
    [ "$version" != "${versions[0]}" ] && args=(-m broker)
    printf '\n===== RabbitMQ %s =====\n' "$version"
    if TOPO_TEST_RABBITMQ="$version" .venv/bin/python -m pytest -q "${args[@]}" "$@"; then
        result[$version]="passed"
    else
        result[$version]="FAILED"
        status=1
    fi
    result[$version]+=" ($((SECONDS - began)) s)"
done
printf '\n'
for version in "${versions[@]}"; do
    printf 'RabbitMQ %s: %s\n' "$version" "${result[$version]}"
done
exit "$status"
