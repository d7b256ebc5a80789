# shellcheck shell=bash
# Sourced by scripts/*.sh after scripts/toolchain.sh: zig, pinned, for the
# C code of the cross builds (cargo-zigbuild) and the kernel matrix's small
# static helpers. zig comes from PyPI (package ziglang) in a private venv
# under target/; cargo-zigbuild from crates.io. Both are set up on first use.
# Defines:
#   ZIG_VENV             the venv (its bin/ goes on PATH for cargo-zigbuild)
#   setup_zig            install both if missing (needs python3-venv, PyPI, crates.io)
#   zig ARGS...          run zig (after setup_zig)

ZIGLANG_VERSION=0.13.0
CARGO_ZIGBUILD_VERSION=0.24.1
ZIG_VENV=$PWD/target/zig-$ZIGLANG_VERSION

setup_zig() {
    if ! rust "$ZIG_VENV/bin/python3" -m ziglang version >/dev/null 2>&1; then
        command -v python3 >/dev/null 2>&1 || { echo "$0: python3 not found: sudo apt-get install python3" >&2; exit 1; }
        printf '\n==> installing zig %s (PyPI: ziglang) into %s\n' "$ZIGLANG_VERSION" "$ZIG_VENV" >&2
        rust python3 -m venv "$ZIG_VENV" >&2 || { echo "$0: python3 -m venv failed: sudo apt-get install python3-venv" >&2; exit 1; }
        rust "$ZIG_VENV/bin/pip" install --quiet --disable-pip-version-check "ziglang==$ZIGLANG_VERSION" >&2
    fi
    local have
    have=$(rust cargo-zigbuild --version 2>/dev/null || true)
    if [ "$have" != "cargo-zigbuild $CARGO_ZIGBUILD_VERSION" ]; then
        printf '\n==> installing cargo-zigbuild %s (crates.io)\n' "$CARGO_ZIGBUILD_VERSION" >&2
        rust cargo install --locked --quiet cargo-zigbuild --version "$CARGO_ZIGBUILD_VERSION" >&2
    fi
}

zig() { rust "$ZIG_VENV/bin/python3" -m ziglang "$@"; }
