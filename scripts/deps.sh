#!/usr/bin/env bash
# Install what building and testing edge-agent needs on Debian 12, as root.
# Idempotent; safe to run again. scripts/test.sh runs it first.
# Each area appends the Debian packages its tests need to PACKAGES.
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(
    # foundation: building; install.sh and the unit (groupadd, setpriv,
    # runuser, systemd-analyze, shellcheck); the static builds (.ci/run):
    # musl-gcc, a venv for zig, qemu to run the aarch64 binary. The fuzz
    # step (scripts/fuzz.sh) needs only build-essential's g++ (libFuzzer).
    build-essential pkg-config git ca-certificates openssl
    passwd util-linux systemd shellcheck
    file musl-tools python3-venv qemu-user-static
    # bootstrap: a real containerd (with runc) accepts the rendered nydus
    # config; preflight finds the tools of each kube-proxy mode.
    containerd runc nftables ipset iptables
    # metrics: promtool checks the endpoint; node_exporter is the reference.
    prometheus prometheus-node-exporter
    # outbox/uplink: a real broker for the tests, certificates made with openssl.
    mosquitto mosquitto-clients
    # eBPF sensor: clang builds ebpf/ (libbpf-dev has the headers, llvm's
    # llvm-strip drops DWARF); its tests run real runc containers and list
    # attached probes with bpftool.
    clang llvm libbpf-dev busybox-static util-linux bpftool
    # Falco corpus behaviour test: a network namespace of its own (unshare,
    # ip) and dash copies playing nginx, sshd, mysqld.
    iproute2 dash
    # kernel matrix (scripts/kernel-matrix.sh, .ci/run): Debian's kernels
    # booted under qemu with a busybox initramfs; debian-archive-keyring
    # checks the kernel packages apt downloads.
    qemu-system-x86 qemu-system-arm cpio debian-archive-keyring
)

if [ "$(id -u)" -ne 0 ]; then
    echo "scripts/deps.sh: installing Debian packages needs root: sudo ./scripts/deps.sh" >&2
    exit 1
fi

missing=()
for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
    echo "installing: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# The toolchain is pinned in rust-toolchain.toml (rustup installs it on first
# use); make sure the components the checks use are there.
. scripts/toolchain.sh
rust rustup show active-toolchain >/dev/null
rust rustup component add rustfmt clippy >/dev/null
