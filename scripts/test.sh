#!/usr/bin/env bash
# The whole test suite, as the README gives it:   sudo ./scripts/test.sh
# Installs what the tests need (Debian packages, rustup components), then:
# format check, clippy with warnings as errors, build, shellcheck, unit and
# integration tests. Integration tests run the real binary against the real
# kernel, a real mosquitto and real files, so they run as root.
#
# Under sudo without a Rust toolchain for root, everything cargo does runs as
# the user who ran sudo (scripts/toolchain.sh) and only the test executables
# run as root.
#
# EDGE_AGENT_SKIP_DEPS=1 skips the package step (for repeated local runs);
# EDGE_AGENT_TEST_THREADS sets the test threads per test binary (default 2).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
    echo "scripts/test.sh: the integration tests load eBPF programs and start brokers; run it as root (sudo)." >&2
    exit 1
fi

if [ "${EDGE_AGENT_SKIP_DEPS:-0}" != 1 ]; then
    ./scripts/deps.sh
fi
. scripts/toolchain.sh

export CARGO_TERM_COLOR=never
# Warnings are errors: clippy (all targets, `-D warnings`) reports every
# rustc warning too. RUSTFLAGS is left alone on purpose: setting it there
# would give the build a second copy of every artifact (cargo fingerprints
# RUSTFLAGS), doubling the target directory for no gain.
THREADS=${EDGE_AGENT_TEST_THREADS:-2}
step() { printf '\n==> %s\n' "$*"; }

step "cargo fmt --check"
rust cargo fmt --all -- --check
step "cargo clippy (warnings are errors)"
rust cargo clippy --workspace --all-targets --locked -- -D warnings
step "cargo build"
rust cargo build --workspace --all-targets --locked
step "shellcheck"
shellcheck -x install.sh scripts/*.sh .ci/run fuzz/sancov-rustc

step "cargo test"
if [ -z "$TOOLCHAIN_USER" ]; then
    cargo test --workspace --locked -- --test-threads="$THREADS"
else
    # Build the test executables as the toolchain's user, run them as root
    # from their package directory, as cargo test would.
    artifacts=$(mktemp)
    trap 'rm -f "$artifacts"' EXIT
    rust cargo test --workspace --locked --no-run --message-format=json >"$artifacts"
    executables=$(sed -n 's/.*"manifest_path":"\([^"]*\)".*"profile":{[^}]*"test":true[^}]*}.*"executable":"\([^"]*\)".*/\1 \2/p' "$artifacts")
    if [ -z "$executables" ]; then
        echo "scripts/test.sh: cargo built no test executables (see $artifacts)" >&2
        exit 1
    fi
    failed=()
    while read -r manifest exe; do
        dir=$(dirname "$manifest")
        printf '\n---- %s\n' "${exe#"$PWD"/}"
        if ! (cd "$dir" && CARGO_MANIFEST_DIR="$dir" "$exe" --test-threads="$THREADS"); then
            failed+=("$exe")
        fi
    done <<<"$executables"
    if [ "${#failed[@]}" -gt 0 ]; then
        printf '\nFAILED test executables:\n'
        printf '  %s\n' "${failed[@]}"
        exit 1
    fi
fi
step "all tests passed"
