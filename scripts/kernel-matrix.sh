#!/usr/bin/env bash
# The kernels edge nodes run, each booted under qemu with the real static
# binary, the shipped config (uplink off) and real actions:
#
#   ./scripts/kernel-matrix.sh                 every kernel below
#   ./scripts/kernel-matrix.sh 6.1-x86_64      some of them (names below)
#
#   name          Debian kernel (suite)             binary                                  expected
#   6.1-x86_64    linux-image-cloud-amd64 (bookworm) dist/edge-agent-x86_64-linux-musl       sensor, BPF-LSM enforcement
#   6.1-arm64     linux-image-cloud-arm64 (bookworm) dist/edge-agent-aarch64-linux-musl      sensor, SIGKILL fallback (no BPF trampoline on arm64 before 6.4)
#   5.10-x86_64   linux-image-cloud-amd64 (bullseye) dist/edge-agent-x86_64-linux-musl       sensor, SIGKILL fallback (bpf not in its LSM list)
#   6.1-armmp     linux-image-armmp (bookworm)       dist/edge-agent-armv7-linux-musleabihf  no sensor (32-bit), the rest runs
#
# Each guest is a busybox initramfs: /init (scripts/kernel-matrix/init.sh)
# starts `edge-agent run`, waits until every stage has started, then execs,
# reads /etc/shadow, writes below /etc, connects, ptrace-attaches, execs from
# /dev/shm, runs a denied executable and writes into a denied directory.
# scripts/kernel-matrix/check.py reads what the agent reported (status, the
# outbox's alerts, `sensor watch` events) and prints one line per kernel.
# Exit status 1 when any kernel misses an expectation.
#
# Kernels and busybox come from Debian's archive as packages, through apt
# with a private configuration under target/kernels/ (the machine's own apt
# sources and architectures are not touched); they stay cached there, and
# the package index is refreshed when it is a week old. Missing dist/
# binaries are built with scripts/build-static.sh. Needs qemu-system-x86,
# qemu-system-arm, cpio, busybox-static, python3 (scripts/deps.sh) and zig
# (scripts/zig.sh, for the small ptrace helper).
set -euo pipefail
cd "$(dirname "$0")/.."

CACHE=$PWD/target/kernels
MIRROR=${EDGE_AGENT_DEBIAN_MIRROR:-}
VM_TIMEOUT=${EDGE_AGENT_MATRIX_TIMEOUT:-600}

die() {
    echo "kernel-matrix.sh: $*" >&2
    exit 1
}
step() { printf '\n==> %s\n' "$*" >&2; }

# name: suite deb-arch meta-package agent-arch lsm-expected sensor-expected
declare -A KERNELS=(
    [6.1-x86_64]="bookworm amd64 linux-image-cloud-amd64 x86_64 yes yes"
    # bpf is in its LSM list, but arm64 6.1 has no BPF trampoline (ftrace
    # direct calls came in 6.4): LSM programs do not attach (ENOTSUPP).
    [6.1-arm64]="bookworm arm64 linux-image-cloud-arm64 aarch64 no yes"
    [5.10-x86_64]="bullseye amd64 linux-image-cloud-amd64 x86_64 no yes"
    [6.1-armmp]="bookworm armhf linux-image-armmp armv7 no no"
)
ORDER=(6.1-x86_64 6.1-arm64 5.10-x86_64 6.1-armmp)

names=("$@")
[ ${#names[@]} -gt 0 ] || names=("${ORDER[@]}")
for n in "${names[@]}"; do
    [ -n "${KERNELS[$n]:-}" ] || die "unknown kernel '$n' (one of: ${ORDER[*]})"
done
[ "$(id -u)" -eq 0 ] || die "run it as root (apt downloads into target/kernels)"
for tool in cpio python3 qemu-system-x86_64 qemu-system-aarch64 qemu-system-arm; do
    command -v "$tool" >/dev/null || die "$tool not found: sudo ./scripts/deps.sh installs it"
done
[ -x /bin/busybox ] || die "/bin/busybox not found: sudo apt-get install busybox-static"

. scripts/toolchain.sh
. scripts/zig.sh

# The Debian mirror the machine itself uses (deb822 or one-line sources).
mirror() {
    if [ -n "$MIRROR" ]; then
        echo "$MIRROR"
        return
    fi
    local m
    m=$(cat /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null |
        grep -oE 'https?://[^ ]+/debian/?( |$)' | grep -v security | head -1 | tr -d ' ')
    echo "${m:-http://deb.debian.org/debian}"
}

# apt with a private configuration for one suite: its own sources list,
# index, cache and architectures.
APT_OPTS=()
apt_for() { # apt_for SUITE: sets APT_OPTS, refreshes the index when stale
    local suite=$1 dir=$CACHE/apt-$1
    mkdir -p "$dir/lists/partial" "$dir/cache/archives/partial"
    echo "deb [arch=amd64,arm64,armhf signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $(mirror) $suite main" >"$dir/sources.list"
    touch "$dir/status"
    APT_OPTS=(-o "Dir::Etc::sourcelist=$dir/sources.list" -o Dir::Etc::sourceparts=/dev/null
        -o "Dir::State::Lists=$dir/lists" -o "Dir::State::status=$dir/status"
        -o "Dir::Cache=$dir/cache" -o APT::Architecture=amd64
        -o APT::Architectures::=amd64 -o APT::Architectures::=arm64 -o APT::Architectures::=armhf
        -o Acquire::Languages=none -o Acquire::IndexTargets::deb::DEP-11::DefaultEnabled=false
        -o Acquire::IndexTargets::deb::DEP-11-icons::DefaultEnabled=false
        -o Acquire::IndexTargets::deb::DEP-11-icons-small::DefaultEnabled=false
        -o APT::Sandbox::User=root)
    if [ ! -e "$dir/updated" ] || [ -n "$(find "$dir/updated" -mtime +7)" ]; then
        step "apt index for $suite (private, under $dir)"
        apt-get -qq "${APT_OPTS[@]}" update >&2 || die "apt-get update for $suite failed"
        touch "$dir/updated"
    fi
}

# fetch NAME: target/kernels/NAME/{vmlinuz,busybox} for that kernel.
fetch() {
    local name=$1 suite debarch meta arch
    read -r suite debarch meta arch _ <<<"${KERNELS[$name]}"
    local dir=$CACHE/$name
    apt_for "$suite"
    local pkg
    pkg=$(apt-cache "${APT_OPTS[@]}" depends "$meta:$debarch" 2>/dev/null |
        sed -n 's/^ *Depends: \(linux-image-[0-9][^: ]*\).*/\1/p' | head -1)
    [ -n "$pkg" ] || die "no kernel package behind $meta:$debarch in $suite"
    if [ "$(cat "$dir/package" 2>/dev/null)" != "$pkg" ]; then
        step "downloading $pkg:$debarch ($suite)"
        rm -rf "$dir" && mkdir -p "$dir/deb" "$dir/x"
        (cd "$dir/deb" && apt-get -qq "${APT_OPTS[@]}" download "$pkg:$debarch" >&2) ||
            die "apt-get download $pkg:$debarch failed"
        dpkg-deb -x "$dir"/deb/linux-image-*.deb "$dir/x"
        cp "$dir"/x/boot/vmlinuz-* "$dir/vmlinuz"
        if [ "$debarch" != amd64 ]; then
            (cd "$dir/deb" && apt-get -qq "${APT_OPTS[@]}" download "busybox-static:$debarch" >&2) ||
                die "apt-get download busybox-static:$debarch failed"
            dpkg-deb -x "$dir"/deb/busybox-static_*.deb "$dir/x"
            cp "$dir/x/bin/busybox" "$dir/busybox"
        fi
        rm -rf "$dir/deb" "$dir/x"
        echo "$pkg" >"$dir/package"
    fi
    [ -e "$dir/busybox" ] || cp /bin/busybox "$dir/busybox"
}

binary_of() { # binary_of AGENT-ARCH
    case $1 in
        armv7) echo dist/edge-agent-armv7-linux-musleabihf ;;
        *) echo "dist/edge-agent-$1-linux-musl" ;;
    esac
}

helper() { # helper AGENT-ARCH: prints the path of the static ptrace helper
    local arch=$1 zt out=$CACHE/helpers/$1/matrix-ptrace
    case $arch in
        x86_64) zt=x86_64-linux-musl ;;
        aarch64) zt=aarch64-linux-musl ;;
        armv7) zt=arm-linux-musleabihf ;;
    esac
    if [ ! -x "$out" ] || [ scripts/kernel-matrix/ptrace.c -nt "$out" ]; then
        setup_zig
        mkdir -p "$(dirname "$out")"
        zig cc -target "$zt" -static -Os -s -o "$out" scripts/kernel-matrix/ptrace.c >&2 ||
            die "zig cc could not build the ptrace helper for $arch"
    fi
    echo "$out"
}

# initramfs NAME: the guest's initramfs (gzip cpio) path.
initramfs() {
    local name=$1 arch
    read -r _ _ _ arch _ <<<"${KERNELS[$name]}"
    local root=$CACHE/$name/root out=$CACHE/$name/initrd.gz
    rm -rf "$root"
    mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,usr/local/bin,etc/edge-agent/rules,proc,sys,dev,run,tmp,var/lib,root}
    cp "$CACHE/$name/busybox" "$root/bin/busybox"
    ln -s busybox "$root/bin/sh" # for /init's #!; it installs the other applets
    cp "$(binary_of "$arch")" "$root/usr/local/bin/edge-agent"
    cp "$(helper "$arch")" "$root/usr/local/bin/matrix-ptrace"
    cp scripts/kernel-matrix/init.sh "$root/init"
    chmod 0755 "$root/init" "$root/bin/busybox" "$root/usr/local/bin/"*
    cp configs/rules/*.yaml "$root/etc/edge-agent/rules/"
    # The shipped config, with alerts also written to a file, and the deny
    # lists the guest's actions run into.
    sed -e 's|^deny_exec = \[\]|deny_exec = ["/usr/local/bin/matrix-denied"]|' \
        configs/agent.toml >"$root/etc/edge-agent/agent.toml"
    cat >>"$root/etc/edge-agent/agent.toml" <<'EOF'

[[sensor.deny_open]]
path = "/etc/rancher/k3s/"
allow = ["/usr/local/bin/k3s"]
EOF
    grep -q 'matrix-denied' "$root/etc/edge-agent/agent.toml" || die "configs/agent.toml has no 'deny_exec = []' line to set"
    printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' >"$root/etc/passwd"
    printf 'root:x:0:\nedge-agent:x:990:\nnogroup:x:65534:\n' >"$root/etc/group"
    printf 'root:*:19000:0:99999:7:::\n' >"$root/etc/shadow"
    chmod 0600 "$root/etc/shadow"
    (cd "$root" && find . | cpio -o -H newc --quiet | gzip -1) >"$out"
    echo "$out"
}

boot() { # boot NAME: runs the guest, console to target/kernels/NAME/console.log
    local name=$1 arch
    read -r _ _ _ arch _ <<<"${KERNELS[$name]}"
    local dir=$CACHE/$name initrd
    initrd=$(initramfs "$name")
    local append="panic=-1 quiet loglevel=1"
    local qemu
    case $arch in
        x86_64) qemu=(qemu-system-x86_64 -cpu max -append "console=ttyS0 $append") ;;
        aarch64) qemu=(qemu-system-aarch64 -M virt -cpu cortex-a72 -append "console=ttyAMA0 $append") ;;
        armv7) qemu=(qemu-system-arm -M virt -cpu cortex-a15 -append "console=ttyAMA0 $append") ;;
    esac
    timeout "$VM_TIMEOUT" "${qemu[@]}" -accel tcg -smp 2 -m 768 -nographic -no-reboot \
        -kernel "$dir/vmlinuz" -initrd "$initrd" </dev/null >"$dir/console.log" 2>&1 || true
}

for name in "${names[@]}"; do
    read -r _ _ _ arch _ <<<"${KERNELS[$name]}"
    bin=$(binary_of "$arch")
    if [ ! -x "$bin" ]; then
        step "$bin is missing: building it"
        ./scripts/build-static.sh "$arch" >&2
    fi
    fetch "$name"
done

failed=0
started_all=$(date +%s)
for name in "${names[@]}"; do
    read -r _ _ _ _ lsm sensor <<<"${KERNELS[$name]}"
    t0=$(date +%s)
    boot "$name"
    secs=$(($(date +%s) - t0))
    python3 scripts/kernel-matrix/check.py --name "$name" --lsm "$lsm" --sensor "$sensor" \
        --seconds "$secs" "$CACHE/$name/console.log" || failed=1
done
echo "kernel matrix: ${#names[@]} kernel(s) in $(($(date +%s) - started_all)) s; consoles under $CACHE/<name>/console.log"
exit "$failed"
