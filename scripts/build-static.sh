#!/usr/bin/env bash
# Build fully static, stripped release binaries of edge-agent and check them:
#
#   ./scripts/build-static.sh                 x86_64, aarch64 and armv7
#   ./scripts/build-static.sh x86_64 armv7    some of them
#
# Results: dist/edge-agent-x86_64-linux-musl, dist/edge-agent-aarch64-linux-musl,
# dist/edge-agent-armv7-linux-musleabihf (32-bit ARM, hard float: Raspberry
# Pi 2 and later with a 32-bit OS), each checked with `file` (statically
# linked), `ldd` (not dynamic) and by running `edge-agent version` (the ARM
# ones under qemu-aarch64-static / qemu-arm-static). Sizes are printed at the
# end, and the x86_64 one must stay within 10,000,000 bytes (EDGE_AGENT_SIZE_BUDGET).
#
# Rust code needs no more than the musl targets (rustup). C code in the
# dependency tree (ring today; more later) is compiled for musl with musl's
# own headers, so that what it was compiled against is what it links with:
#   x86_64   musl-gcc from Debian's musl-tools (a wrapper around the host gcc)
#   aarch64, armv7  zig cc through cargo-zigbuild: zig ships musl headers and
#            libc for every architecture. zig comes from PyPI (package ziglang,
#            pinned in scripts/zig.sh) in a private venv under target/;
#            cargo-zigbuild from crates.io (pinned there too). Both are set up
#            on first use.
# armv7: the pinned toolchain's release has no prebuilt standard library for
# armv7-unknown-linux-musleabihf (its manifest marks rust-std for that target
# unavailable, so `rustup target add` fails). The script then compiles the
# standard library from the toolchain's own sources (rust-src, -Zbuild-std;
# RUSTC_BOOTSTRAP=1 lets the pinned stable compiler take that flag). Where
# `rustup target add` works, the prebuilt one is used.
# EDGE_AGENT_AARCH64_CC=gcc uses Debian's gcc-aarch64-linux-gnu instead (no
# PyPI needed). It links correctly with Rust's self-contained musl, but
# compiles C against glibc's headers: fine for ring, a risk for C code that
# uses libc types, which is why zig is the default.
# eBPF objects are compiled by clang as BPF bytecode, the same for every
# target, and need nothing here.
set -euo pipefail
cd "$(dirname "$0")/.."

DIST=dist
SIZE_BUDGET=${EDGE_AGENT_SIZE_BUDGET:-10000000}

die() {
    echo "build-static.sh: $*" >&2
    exit 1
}
step() { printf '\n==> %s\n' "$*"; }

arches=("$@")
[ ${#arches[@]} -gt 0 ] || arches=(x86_64 aarch64 armv7)
for a in "${arches[@]}"; do
    case $a in x86_64 | aarch64 | armv7) ;; *) die "unknown architecture '$a' (x86_64, aarch64 or armv7)" ;; esac
done

# cargo, rustup, and the zig venv run as the toolchain's user (under sudo:
# the user who ran it), so target/ stays theirs.
. scripts/toolchain.sh
. scripts/zig.sh

need() { # need COMMAND DEBIAN-PACKAGE
    command -v "$1" >/dev/null 2>&1 || die "$1 not found: sudo apt-get install $2"
}
need file file
need ldd libc-bin

triple_of() { # triple_of ARCH
    case $1 in
        armv7) echo armv7-unknown-linux-musleabihf ;;
        *) echo "$1-unknown-linux-musl" ;;
    esac
}

build() { # build ARCH: prints the path of the built binary
    local arch=$1 triple
    triple=$(triple_of "$arch")
    local env=() cargo=(cargo build) std=()
    if ! rust rustup target add "$triple" >/dev/null 2>&1; then
        [ "$arch" = armv7 ] || die "rustup target add $triple failed: $(rust rustup target add "$triple" 2>&1 | grep -m1 error)"
        echo "rustup has no prebuilt standard library for $triple in this toolchain; compiling it from rust-src (-Zbuild-std)" >&2
        rust rustup component add rust-src >/dev/null || die "rustup component add rust-src failed: it is needed to build the standard library for $triple"
        # A standard library built from source comes without the
        # self-contained musl start files (crt1.o, crti.o, ...) that the
        # prebuilt one ships; the linker (zig cc) supplies its own instead.
        local flags_var
        flags_var=CARGO_TARGET_$(echo "$triple" | tr 'a-z-' 'A-Z_')_RUSTFLAGS
        env+=(RUSTC_BOOTSTRAP=1 "$flags_var=-Clink-self-contained=no")
        std=('-Zbuild-std=std,panic_unwind')
    fi
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
        armv7)
            setup_zig
            env+=(PATH="$ZIG_VENV/bin:$PATH")
            cargo=(cargo zigbuild)
            ;;
    esac
    step "building $triple" >&2
    # crt-static is the musl targets' default; check() below catches a
    # RUSTFLAGS or a dependency that turns it off.
    # build() runs in a command substitution, where `set -e` does not
    # apply: without the `|| die`, a failed build went on to check (and
    # ship) a stale binary from an earlier run.
    rust env "${env[@]}" "${cargo[@]}" --release --locked -p edge-agent --target "$triple" "${std[@]}" >&2 ||
        die "cargo build for $triple failed (output above)"
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
        local q=qemu-$arch-static
        [ "$arch" = armv7 ] && q=qemu-arm-static
        need "$q" qemu-user-static
        run=("$q")
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
    triple=$(triple_of "$arch")
    out=$DIST/edge-agent-$arch-linux-${triple##*-linux-}
    cp "$bin" "$out.tmp" && mv -f "$out.tmp" "$out"
    built+=("$out")
done

step "sizes"
over=()
for out in "${built[@]}"; do
    bytes=$(stat -c %s "$out")
    awk -v f="$out" -v b="$bytes" 'BEGIN { printf "%-40s %9d bytes  %5.2f MiB\n", f, b, b / 1048576 }'
    # The budget (docs/ARCHITECTURE.md, budgets: <= 10 MB, read as 10,000,000
    # bytes) is for the x86_64 binary; the ARM ones come out smaller.
    case $out in
        *x86_64*) [ "$bytes" -le "$SIZE_BUDGET" ] || over+=("$out: $bytes bytes") ;;
    esac
done
[ ${#over[@]} -eq 0 ] || die "over the size budget of $SIZE_BUDGET bytes: ${over[*]} (see the size notes in Cargo.toml's [profile.release] and the README)"
