#!/usr/bin/env bash
# Install what building and testing edge-agent needs on Debian 12.
# Idempotent; safe to run again.
set -euo pipefail

PACKAGES=(
    build-essential pkg-config git ca-certificates openssl
    # bootstrap: a real containerd (with runc) accepts the rendered nydus
    # config; preflight finds the tools of each kube-proxy mode.
    containerd runc nftables ipset iptables
    # metrics: promtool checks the endpoint; node_exporter is the reference.
    prometheus prometheus-node-exporter
    # outbox/uplink: a real broker for the tests, certificates made with openssl.
    mosquitto mosquitto-clients
    # eBPF sensor: clang builds ebpf/ (libbpf-dev has the headers, llvm's
    # llvm-strip drops DWARF); its tests run real runc containers.
    clang llvm libbpf-dev busybox-static util-linux
)

missing=()
for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
    echo "installing: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# The toolchain is pinned in rust-toolchain.toml; make sure its components are there.
rustup show active-toolchain >/dev/null
rustup component add rustfmt clippy >/dev/null
