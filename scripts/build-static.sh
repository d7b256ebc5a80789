#!/usr/bin/env bash
# Build fully static, stripped release binaries of edge-agent and check them:
#
#   ./scripts/build-static.sh                 x86_64 and aarch64
#   ./scripts/build-static.sh x86_64          one of them
#
# Results: dist/edge-agent-x86_64-linux-musl, dist/edge-agent-aarch64-linux-musl,
# each checked with `file` (statically linked), `ldd` (not dynamic) and by
# running `edge-agent version` (aarch64 under qemu-aarch64-static). Sizes are
# printed at the end.
#
# Rust code needs no more than the musl targets (rustup). C code in the
# dependency tree (ring today; more later) is compiled for musl with musl's
# own headers, so that what it was compiled against is what it links with:
#   x86_64   musl-gcc from Debian's musl-tools (a wrapper around the host gcc)
#   aarch64  zig cc through cargo-zigbuild: zig ships musl headers and libc
#            for every architecture. zig comes from PyPI (package ziglang,
#            pinned below) in a private venv under target/; cargo-zigbuild
#            from crates.io (pinned below). Both are set up on first use.
# EDGE_AGENT_AARCH64_CC=gcc uses Debian's gcc-aarch64-linux-gnu instead (no
# PyPI needed). It links correctly with Rust's self-contained musl, but
# compiles C against glibc's headers: fine for ring, a risk for C code that
# uses libc types, which is why zig is the default.
# eBPF objects are compiled by clang as BPF bytecode, the same for every
# target, and need nothing here.
set -euo pipefail
cd "$(dirname "$0")/.."

ZIGLANG_VERSION=0.13.0
CARGO_ZIGBUILD_VERSION=0.24.1
ZIG_VENV=$PWD/target/zig-$ZIGLANG_VERSION
DIST=dist

die() {
    echo "build-static.sh: $*" >&2
    exit 1
}
step() { printf '\n==> %s\n' "$*"; }

arches=("$@")
[ ${#arches[@]} -gt 0 ] || arches=(x86_64 aarch64)
for a in "${arches[@]}"; do
    case $a in x86_64 | aarch64) ;; *) die "unknown architecture '$a' (x86_64 or aarch64)" ;; esac
done

# cargo, rustup, and the zig venv run as the toolchain's user (under sudo:
# the user who ran it), so target/ stays theirs.
. scripts/toolchain.sh

need() { # need COMMAND DEBIAN-PACKAGE
    command -v "$1" >/dev/null 2>&1 || die "$1 not found: sudo apt-get install $2"
}
need file file
need ldd libc-bin

# zig for the aarch64 C code: a pinned ziglang in a private venv, and
# cargo-zigbuild, which finds zig through `python3 -m ziglang` on PATH.
setup_zig() {
    if ! rust "$ZIG_VENV/bin/python3" -m ziglang version >/dev/null 2>&1; then
        need python3 python3
        step "installing zig $ZIGLANG_VERSION (PyPI: ziglang) into $ZIG_VENV" >&2
        rust python3 -m venv "$ZIG_VENV" >&2 || die "python3 -m venv failed: sudo apt-get install python3-venv"
        rust "$ZIG_VENV/bin/pip" install --quiet --disable-pip-version-check "ziglang==$ZIGLANG_VERSION" >&2
    fi
    local have
    have=$(rust cargo-zigbuild --version 2>/dev/null || true)
    if [ "$have" != "cargo-zigbuild $CARGO_ZIGBUILD_VERSION" ]; then
        step "installing cargo-zigbuild $CARGO_ZIGBUILD_VERSION (crates.io)" >&2
        rust cargo install --locked --quiet cargo-zigbuild --version "$CARGO_ZIGBUILD_VERSION" >&2
    fi
}

build() { # build ARCH: prints the path of the built binary
    local arch=$1 triple=$1-unknown-linux-musl
    local env=() cargo=(cargo build)
    rust rustup target add "$triple" >/dev/null
    case $arch in
        x86_64)
            need musl-gcc musl-tools
            env=(CC_x86_64_unknown_linux_musl=musl-gcc)
            ;;
        aarch64)
            if [ "${EDGE_AGENT_AARCH64_CC:-zig}" = gcc ]; then
                need aarch64-linux-gnu-gcc gcc-aarch64-linux-gnu
                env=(CC_aarch64_unknown_linux_musl=aarch64-linux-gnu-gcc
                    AR_aarch64_unknown_linux_musl=aarch64-linux-gnu-ar
                    CARGO_TARGET_AARCH64_UNKNOWN_LINUX_MUSL_LINKER=aarch64-linux-gnu-gcc)
            else
                setup_zig
                env=(PATH="$ZIG_VENV/bin:$PATH")
                cargo=(cargo zigbuild)
            fi
            ;;
    esac
    step "building $triple" >&2
    # crt-static is the musl targets' default; check() below catches a
    # RUSTFLAGS or a dependency that turns it off.
    rust env "${env[@]}" "${cargo[@]}" --release --locked -p edge-agent --target "$triple" >&2
    echo "target/$triple/release/edge-agent"
}

check() { # check ARCH BINARY
    local arch=$1 bin=$2 desc
    desc=$(file -b "$bin")
    echo "file: $desc"
    case $desc in
        *"statically linked"* | *"static-pie linked"*) ;;
        *) die "$bin is not statically linked: $desc" ;;
    esac
    case $desc in
        *", stripped"*) ;;
        *) die "$bin is not stripped: $desc" ;;
    esac
    # ldd exits non-zero for a static binary; what it says is what counts.
    local deps
    deps=$(ldd "$bin" 2>&1 || true)
    case $deps in
        *"not a dynamic executable"* | *"statically linked"*) echo "ldd: ${deps//$'\n'/ }" ;;
        *) die "ldd finds dynamic dependencies in $bin: $deps" ;;
    esac
    local run=()
    if [ "$arch" != "$(uname -m)" ]; then
        need "qemu-$arch-static" qemu-user-static
        run=("qemu-$arch-static")
    fi
    local version
    version=$("${run[@]}" "$bin" version) || die "$bin does not run: ${run[*]} $bin version"
    echo "runs: ${run[*]:+${run[*]} }edge-agent version -> ${version%%$'\n'*}"
}

mkdir -p "$DIST"
built=()
for arch in "${arches[@]}"; do
    bin=$(build "$arch")
    step "checking $bin"
    check "$arch" "$bin"
    out=$DIST/edge-agent-$arch-linux-musl
    cp "$bin" "$out.tmp" && mv -f "$out.tmp" "$out"
    built+=("$out")
done

step "sizes"
for out in "${built[@]}"; do
    bytes=$(stat -c %s "$out")
    awk -v f="$out" -v b="$bytes" 'BEGIN { printf "%-40s %9d bytes  %5.2f MiB\n", f, b, b / 1048576 }'
done
