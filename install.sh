#!/bin/sh
# install.sh: install, upgrade or uninstall edge-agent on a node.
#
#   sudo ./install.sh                      build with cargo, install, enable, start
#   sudo ./install.sh --binary PATH        install a prebuilt binary (scripts/build-static.sh)
#   sudo ./install.sh --no-start           install and enable, do not start
#   sudo ./install.sh --uninstall          stop, disable, remove binary and unit; keep config and state
#   sudo ./install.sh --uninstall --purge  also remove config, state, logs and the edge-agent group
#   sudo ./install.sh --root DIR ...       act on the tree under DIR instead of / (images, tests);
#                                          never talks to the running systemd
#
# Idempotent: running it again changes only what differs. An existing config
# file is never overwritten; the shipped default is put beside it as *.new.
# Exit status: 0 done, 1 failed (the message says what to do), 64 bad usage.
set -eu

PROG=install.sh
SRC=$(cd "$(dirname "$0")" && pwd)
UNIT=edge-agent.service
GROUP=edge-agent

ROOT=/
BINARY=
START=yes
MODE=install
PURGE=no

say() { printf '%s\n' "$*"; }
warn() { printf '%s: warning: %s\n' "$PROG" "$*" >&2; }
die() {
    printf '%s: error: %s\n' "$PROG" "$*" >&2
    exit 1
}
usage() {
    sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'
}

while [ $# -gt 0 ]; do
    case $1 in
        --binary)
            [ $# -ge 2 ] || { usage >&2; exit 64; }
            BINARY=$2
            shift 2
            ;;
        --binary=*) BINARY=${1#--binary=}; shift ;;
        --root)
            [ $# -ge 2 ] || { usage >&2; exit 64; }
            ROOT=$2
            shift 2
            ;;
        --root=*) ROOT=${1#--root=}; shift ;;
        --no-start) START=no; shift ;;
        --uninstall) MODE=uninstall; shift ;;
        --purge) MODE=uninstall; PURGE=yes; shift ;;
        -h | --help) usage; exit 0 ;;
        *)
            printf '%s: unknown option: %s\n' "$PROG" "$1" >&2
            usage >&2
            exit 64
            ;;
    esac
done

[ "$(id -u)" -eq 0 ] || die "run it as root: sudo $0 $*"
[ -d "$ROOT" ] || die "--root $ROOT: no such directory"
ROOT=$(cd "$ROOT" && pwd)
# R is the prefix for every path: empty for the live system.
if [ "$ROOT" = / ]; then R=; LIVE=yes; else R=$ROOT; LIVE=no; fi

BIN_PATH=/usr/local/bin/edge-agent
UNIT_PATH=/etc/systemd/system/$UNIT
WANTS_LINK=/etc/systemd/system/multi-user.target.wants/$UNIT
CONF_DIR=/etc/edge-agent
STATE_DIR=/var/lib/edge-agent
LOG_DIR=/var/log/edge-agent
RUN_DIR=/run/edge-agent
# What the bootstrap may write under ProtectSystem=strict (ReadWritePaths= in
# the unit): the directories must exist for systemd to make them writable.
# Purge removes them again if they are still empty, deepest first.
BOOTSTRAP_DIRS="/etc/rancher/k3s /var/lib/rancher/k3s/agent/etc/containerd /etc/nydus"
BOOTSTRAP_DIRS_DEEPEST_FIRST="/etc/rancher/k3s /etc/rancher /var/lib/rancher/k3s/agent/etc/containerd
    /var/lib/rancher/k3s/agent/etc /var/lib/rancher/k3s/agent /var/lib/rancher/k3s /var/lib/rancher /etc/nydus"

# Is systemd managing the live system? (sd_booted(3))
systemd_running() { [ "$LIVE" = yes ] && [ -d /run/systemd/system ]; }

group_exists() {
    if [ "$LIVE" = yes ]; then getent group "$GROUP" >/dev/null; else grep -q "^$GROUP:" "$R/etc/group" 2>/dev/null; fi
}
group_gid() {
    if [ "$LIVE" = yes ]; then getent group "$GROUP"; else grep "^$GROUP:" "$R/etc/group"; fi | cut -d: -f3
}

# install_file SRC DEST MODE: copy through a temporary file and rename, so a
# reader (or a running binary) never sees half a file. Prints what it did.
install_file() {
    if [ -f "$R$2" ] && cmp -s "$1" "$R$2"; then
        chmod "$3" "$R$2"
        say "unchanged  $2"
        return 1
    fi
    mkdir -p "$(dirname "$R$2")"
    cp "$1" "$R$2.tmp.$$"
    chmod "$3" "$R$2.tmp.$$"
    mv -f "$R$2.tmp.$$" "$R$2"
    say "installed  $2"
    return 0
}

# install_config SRC DEST: a config file the operator may have edited. A
# missing one is installed; an edited one is kept and the shipped default
# goes beside it as DEST.new.
install_config() {
    if [ ! -e "$R$2" ]; then
        mkdir -p "$(dirname "$R$2")"
        cp "$1" "$R$2.tmp.$$"
        chown "0:$GID" "$R$2.tmp.$$"
        chmod 0640 "$R$2.tmp.$$"
        mv -f "$R$2.tmp.$$" "$R$2"
        say "installed  $2"
    elif cmp -s "$1" "$R$2"; then
        say "unchanged  $2"
        rm -f "$R$2.new"
    else
        if [ -f "$R$2.new" ] && cmp -s "$1" "$R$2.new"; then :; else
            cp "$1" "$R$2.new"
            chmod 0640 "$R$2.new"
        fi
        say "kept       $2 (yours; the shipped default is $2.new: diff them)"
    fi
}

# make_dir PATH MODE: one of the agent's own directories; its mode is
# enforced even when it exists.
make_dir() {
    if [ ! -d "$R$1" ]; then
        mkdir -p "$R$1"
        say "created    $1"
    fi
    chmod "$2" "$R$1"
}

# make_foreign_dir PATH: a directory that belongs to K3s or nydus once they
# run; created if missing, otherwise left exactly as it is.
make_foreign_dir() {
    if [ ! -d "$R$1" ]; then
        mkdir -p "$R$1"
        chmod 0755 "$R$1"
        say "created    $1 (for the bootstrap)"
    fi
}

# The binary to install: --binary, or one built here with cargo.
find_binary() {
    if [ -n "$BINARY" ]; then
        if [ ! -f "$BINARY" ] || [ ! -x "$BINARY" ]; then die "--binary $BINARY: not an executable file"; fi
        return
    fi
    [ -f "$SRC/Cargo.toml" ] || die "no --binary given and $SRC is not a source tree; pass --binary PATH"
    if command -v cargo >/dev/null 2>&1; then
        say "building   edge-agent (cargo build --release; a few minutes the first time)"
        (cd "$SRC" && cargo build --release --locked -p edge-agent) ||
            die "cargo build failed (see above)"
    elif [ -n "${SUDO_USER:-}" ] && [ "$SUDO_USER" != root ]; then
        # sudo resets PATH, and root usually has no Rust toolchain: build as
        # the user who ran sudo, with their rustup, in their (own) tree.
        user_home=$(getent passwd "$SUDO_USER" | cut -d: -f6)
        say "building   edge-agent as $SUDO_USER (cargo build --release; a few minutes the first time)"
        # shellcheck disable=SC2016 # $1 is expanded by the inner sh
        runuser -u "$SUDO_USER" -- env HOME="$user_home" PATH="$user_home/.cargo/bin:$PATH" \
            sh -c 'cd "$1" && exec cargo build --release --locked -p edge-agent' sh "$SRC" ||
            die "cargo build as $SUDO_USER failed (see above)"
    else
        die "cargo not found: install Rust (https://rustup.rs), or pass --binary PATH (see scripts/build-static.sh)"
    fi
    BINARY=$SRC/target/release/edge-agent
    [ -x "$BINARY" ] || die "the build did not produce $BINARY"
}

do_install() {
    find_binary
    if version=$("$BINARY" version 2>/dev/null); then
        version=$(printf '%s\n' "$version" | head -n 1)
    else
        # A binary for another architecture, installed into an image root.
        [ "$LIVE" = no ] || die "$BINARY does not run on this machine (wrong architecture?)"
        version="$BINARY (not runnable here)"
        warn "$BINARY does not run on this machine; installing it into $ROOT anyway"
    fi
    say "edge-agent: $version -> ${ROOT}"

    if group_exists; then :; else
        if [ "$LIVE" = yes ]; then
            groupadd --system "$GROUP" || die "cannot create group $GROUP (groupadd failed)"
        else
            mkdir -p "$R/etc"
            groupadd --root "$ROOT" --system "$GROUP" || die "cannot create group $GROUP in $ROOT/etc/group"
        fi
        say "created    group $GROUP (members may run edge-agent status)"
    fi
    GID=$(group_gid)
    [ -n "$GID" ] || die "cannot find the gid of group $GROUP in $R/etc/group"

    make_dir "$CONF_DIR" 0755
    make_dir "$CONF_DIR/rules" 0755
    make_dir "$STATE_DIR" 0750
    make_dir "$LOG_DIR" 0750
    for d in $BOOTSTRAP_DIRS; do make_foreign_dir "$d"; done

    changed=no
    if install_file "$BINARY" "$BIN_PATH" 0755; then changed=yes; fi
    if install_file "$SRC/systemd/$UNIT" "$UNIT_PATH" 0644; then changed=yes; fi
    install_config "$SRC/configs/agent.toml" "$CONF_DIR/agent.toml"
    if [ -d "$SRC/configs/rules" ]; then
        for f in "$SRC"/configs/rules/*; do
            [ -f "$f" ] || continue
            install_config "$f" "$CONF_DIR/rules/$(basename "$f")"
        done
    fi

    config_ok=yes
    if [ "$LIVE" = yes ]; then
        if ! "$R$BIN_PATH" config check "$CONF_DIR/agent.toml" >/dev/null 2>&1; then
            config_ok=no
            "$R$BIN_PATH" config check "$CONF_DIR/agent.toml" >&2 || true
            warn "$CONF_DIR/agent.toml is invalid: fix it (edge-agent config check), then: systemctl restart edge-agent"
        fi
    fi

    if [ "$LIVE" = no ]; then
        enable_offline
        say "done: edge-agent installed into $ROOT (not started: --root)"
        return
    fi
    if ! systemd_running; then
        enable_offline
        say "done: edge-agent installed and enabled; systemd is not running here, so it was not started"
        say "      (run it by hand: edge-agent run)"
        return
    fi
    systemctl daemon-reload
    systemctl enable --quiet "$UNIT"
    say "enabled    $UNIT"
    if [ "$START" = no ]; then
        say "done: edge-agent installed and enabled, not started (--no-start): systemctl start edge-agent"
        return
    fi
    [ "$config_ok" = yes ] || die "installed, but not (re)started: the config is invalid (see above)"
    if systemctl is-active --quiet "$UNIT"; then
        if [ "$changed" = yes ]; then
            systemctl restart "$UNIT" || start_failed
            say "restarted  $UNIT"
        else
            say "running    $UNIT (nothing changed)"
        fi
    else
        systemctl start "$UNIT" || start_failed
        say "started    $UNIT"
    fi
    say "done: check it with: sudo edge-agent status"
}

start_failed() {
    die "edge-agent did not start; see: systemctl status edge-agent; journalctl -u edge-agent -n 50"
}

# Enable without a running systemd: the symlink `systemctl enable` would make.
enable_offline() {
    if [ -L "$R$WANTS_LINK" ]; then
        say "unchanged  $WANTS_LINK"
        return
    fi
    mkdir -p "$(dirname "$R$WANTS_LINK")"
    ln -sf "$UNIT_PATH" "$R$WANTS_LINK"
    say "enabled    $UNIT (multi-user.target.wants)"
}

remove() { # remove PATH...: remove what exists, say so
    for p in "$@"; do
        if [ -e "$R$p" ] || [ -L "$R$p" ]; then
            rm -rf "$R$p"
            say "removed    $p"
        fi
    done
}

do_uninstall() {
    if systemd_running && systemctl cat "$UNIT" >/dev/null 2>&1; then
        systemctl disable --now --quiet "$UNIT" || warn "could not stop or disable $UNIT"
        say "stopped    $UNIT"
    fi
    remove "$WANTS_LINK" "$UNIT_PATH" "$BIN_PATH"
    if systemd_running; then systemctl daemon-reload; fi
    if [ "$PURGE" = no ]; then
        say "done: edge-agent removed; kept config ($CONF_DIR), state ($STATE_DIR), logs ($LOG_DIR)"
        say "      and group $GROUP (remove them too with: $0 --uninstall --purge)"
        return
    fi
    remove "$UNIT_PATH.d" "$CONF_DIR" "$STATE_DIR" "$LOG_DIR" "$RUN_DIR"
    # The bootstrap directories were created empty for it; files in them are
    # K3s' now, and stay.
    for d in $BOOTSTRAP_DIRS_DEEPEST_FIRST; do
        if [ -d "$R$d" ] && rmdir "$R$d" 2>/dev/null; then say "removed    $d (empty)"; fi
    done
    if group_exists; then
        if [ "$LIVE" = yes ]; then groupdel "$GROUP"; else groupdel --root "$ROOT" "$GROUP"; fi
        say "removed    group $GROUP"
    fi
    say "done: edge-agent purged (files the bootstrap wrote for K3s are left in place)"
}

case $MODE in
    install) do_install ;;
    uninstall) do_uninstall ;;
esac
