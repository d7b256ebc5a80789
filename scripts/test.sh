#!/usr/bin/env bash
# The whole test suite, as the README gives it:   sudo ./scripts/test.sh
# Installs what the tests need (Debian packages, rustup components), then:
# format check, clippy with warnings as errors, build, unit and integration
# tests. Integration tests run the real binary against the real kernel, a
# real mosquitto and real files, so this runs as root.
# EDGE_AGENT_SKIP_DEPS=1 skips the package step (for repeated local runs).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
    echo "scripts/test.sh: the integration tests load eBPF programs and start brokers; run it as root (sudo)." >&2
    exit 1
fi

if [ "${EDGE_AGENT_SKIP_DEPS:-0}" != 1 ]; then
    ./scripts/deps.sh
fi

export CARGO_TERM_COLOR=never
step() { printf '\n==> %s\n' "$*"; }

step "cargo fmt --check"
cargo fmt --all -- --check
step "cargo clippy (warnings are errors)"
cargo clippy --workspace --all-targets --locked -- -D warnings
step "cargo build"
RUSTFLAGS="${RUSTFLAGS:-} -D warnings" cargo build --workspace --all-targets --locked
step "cargo test"
cargo test --workspace --locked -- --test-threads="${EDGE_AGENT_TEST_THREADS:-2}"
step "all tests passed"
