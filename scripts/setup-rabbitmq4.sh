#!/usr/bin/env bash
# Prepare the RabbitMQ 4.x test broker: the newest rabbitmq-server Debian ships
# (forky/testing: 4.3.x), installed in a chroot so the host's packages stay as
# they are. tests/rabbitmq_node.py runs nodes from it (TOPO_TEST_RABBITMQ=4.3).
#
# Idempotent and cached:
#   - the installed chroot is kept as a compressed snapshot OUTSIDE the repo
#     ($TOPO_CACHE_DIR, default /var/cache/topo), built once per machine
#     (~80 s: debootstrap + apt inside the chroot);
#   - each clone unpacks it into .rabbitmq4/root (gitignored, ~6 s) and a
#     stamp makes later runs a no-op.
# TOPO_RABBITMQ4_REFRESH=1 rebuilds the snapshot (e.g. to pick up a newer 4.x).
#
# Nothing is ever left mounted: every step that needs /proc or /dev inside the
# chroot runs in a private mount namespace (unshare -m), whose mounts vanish
# with its last process, even when the step fails or is killed. The only host
# change is installing debootstrap (when missing).
set -euo pipefail

ROOT_REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SUITE=forky
# debootstrap 1.0.128 (Debian 12) has no script for forky; sid's works for it.
SCRIPT=sid
# Bump when the recipe below changes, so old snapshots and chroots are redone.
RECIPE=1
ARCH="$(dpkg --print-architecture)"
CACHE_DIR="${TOPO_CACHE_DIR:-/var/cache/topo}"
SNAPSHOT="$CACHE_DIR/rabbitmq4-$SUITE-$ARCH-r$RECIPE.tar.zst"
TARGET="$ROOT_REPO/.rabbitmq4"
CHROOT="$TARGET/root"
STAMP="$TARGET/ready"

log() { printf 'setup-rabbitmq4: %s\n' "$*" >&2; }

if [ "$(id -u)" -ne 0 ]; then
    # debootstrap, chroot and mount namespaces all need root.
    log "must run as root (the 4.x test broker runs in a chroot)"
    exit 1
fi

want_stamp="$SNAPSHOT $(stat -c '%s %Y' "$SNAPSHOT" 2>/dev/null || echo missing)"
if [ "${TOPO_RABBITMQ4_REFRESH:-0}" != 1 ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want_stamp" ] \
    && [ -x "$CHROOT/usr/lib/rabbitmq/bin/rabbitmq-server" ]; then
    log "ready: rabbitmq-server $(cat "$TARGET/version") in $CHROOT"
    exit 0
fi

missing=()
command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
command -v zstd >/dev/null 2>&1 || missing+=(zstd)
if [ "${#missing[@]}" -gt 0 ]; then
    log "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q --no-install-recommends "${missing[@]}" \
        || { apt-get update -q && apt-get install -y -q --no-install-recommends "${missing[@]}"; }
fi

# The Debian mirror the host's own apt sources name (deb822 or one-line format).
mirror() {
    local uri
    uri="$(grep -hsE '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null \
        | awk '{print $2}' | grep -E '/debian/?$' | head -n1 || true)"
    if [ -z "$uri" ]; then
        uri="$(grep -hsE '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null \
            | awk '{for (i = 2; i <= NF; i++) if ($i ~ /^(https?|ftp):/) {print $i; exit}}' \
            | grep -E '/debian/?$' | head -n1 || true)"
    fi
    printf '%s\n' "${uri:-http://deb.debian.org/debian}"
}

build_snapshot() {
    local build="$CACHE_DIR/build.$$"
    local began=$SECONDS
    rm -rf "$build"
    mkdir -p "$build"
    # A failed or interrupted build leaves nothing behind but this directory,
    # and that is removed here (its mounts died with the namespace).
    trap 'rm -rf "'"$build"'"' EXIT
    local url
    url="$(mirror)"
    log "building the $SUITE chroot from $url (once per machine, ~80 s)"
    unshare -m --propagation private -- bash -euo pipefail -c '
        build=$1 suite=$2 script=$3 url=$4
        debootstrap --variant=minbase "$suite" "$build/root" "$url" "/usr/share/debootstrap/scripts/$script" \
            >"$build/debootstrap.log" 2>&1 || { tail -n 30 "$build/debootstrap.log" >&2; exit 1; }
        # The mirror'"'"'s testing/sid Release files can be past their Valid-Until date.
        printf "Acquire::Check-Valid-Until \"false\";\n" >"$build/root/etc/apt/apt.conf.d/99topo-valid-until"
        # No service may start during install (there is no init in a chroot anyway).
        printf "#!/bin/sh\nexit 101\n" >"$build/root/usr/sbin/policy-rc.d"
        chmod 755 "$build/root/usr/sbin/policy-rc.d"
        printf "127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n" >"$build/root/etc/hosts"
        mountpoint -q "$build/root/proc" || mount -t proc proc "$build/root/proc"
        mount --rbind /dev "$build/root/dev"
        chroot "$build/root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive \
            LANG=C.UTF-8 sh -c "apt-get update -q && apt-get install -y -q --no-install-recommends rabbitmq-server \
            && apt-get clean && rm -rf /var/lib/apt/lists/*" >"$build/apt.log" 2>&1 \
            || { tail -n 30 "$build/apt.log" >&2; exit 1; }
    ' setup "$build" "$SUITE" "$SCRIPT" "$url"
    for dir in proc dev sys; do
        if mountpoint -q "$build/root/$dir"; then
            log "BUG: $build/root/$dir is still mounted on the host"
            exit 1
        fi
    done
    chroot "$build/root" dpkg-query -W -f='${Version}' rabbitmq-server >"$build/root/.topo-rabbitmq-version"
    log "installed rabbitmq-server $(cat "$build/root/.topo-rabbitmq-version") in $((SECONDS - began)) s; snapshotting"
    tar -C "$build/root" --numeric-owner -cf - . | zstd -q -T0 -3 -o "$build/snapshot.tar.zst"
    mv -f "$build/snapshot.tar.zst" "$SNAPSHOT"
    rm -rf "$build"
    trap - EXIT
    log "snapshot $SNAPSHOT ($(du -h "$SNAPSHOT" | cut -f1)) after $((SECONDS - began)) s"
}

mkdir -p "$CACHE_DIR"
# One build at a time per machine (several clones may set up at once).
exec 9>"$CACHE_DIR/.rabbitmq4.lock"
flock 9
if [ "${TOPO_RABBITMQ4_REFRESH:-0}" = 1 ] || [ ! -s "$SNAPSHOT" ]; then
    build_snapshot
fi
flock -u 9

began=$SECONDS
# Anything still mounted under an old chroot would make rm -rf reach into it.
if [ -d "$TARGET" ] && grep -qF " $TARGET/" /proc/mounts; then
    log "something is mounted under $TARGET; unmount it first:"
    grep -F " $TARGET/" /proc/mounts >&2
    exit 1
fi
rm -rf "$TARGET"
mkdir -p "$TARGET/root.new"
zstd -q -d -c "$SNAPSHOT" | tar -C "$TARGET/root.new" --numeric-owner -xf -
mv "$TARGET/root.new" "$CHROOT"
cp "$CHROOT/.topo-rabbitmq-version" "$TARGET/version"
want_stamp="$SNAPSHOT $(stat -c '%s %Y' "$SNAPSHOT")"
printf '%s\n' "$want_stamp" >"$STAMP"
log "ready: rabbitmq-server $(cat "$TARGET/version") in $CHROOT (unpacked in $((SECONDS - began)) s)"
