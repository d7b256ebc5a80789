#!/bin/sh
# /init of a kernel-matrix guest (scripts/kernel-matrix.sh builds the
# initramfs around it): mounts what the agent needs, starts the real static
# binary with the shipped config, does real things a rule or the deny lists
# must catch, and prints what the agent made of them between
# "=== BEGIN name" / "=== END name" markers and as "EAM key=value" lines on
# the console. The host checks them (scripts/kernel-matrix/check.py); this
# script judges nothing itself. Ends with poweroff.
# shellcheck shell=sh
PATH=/usr/local/bin:/bin:/sbin:/usr/bin:/usr/sbin
export PATH
/bin/busybox --install -s /bin

mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev 2>/dev/null
mkdir -p /dev/shm /run /tmp /var/lib /sys/fs/cgroup
mount -t tmpfs tmpfs /dev/shm
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /tmp
mount -t securityfs securityfs /sys/kernel/security 2>/dev/null
mount -t cgroup2 cgroup2 /sys/fs/cgroup 2>/dev/null
mount -t bpf bpf /sys/fs/bpf 2>/dev/null
mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null
ip link set lo up
hostname matrix

kv() { echo "EAM $1=$2"; }
section() { # section NAME FILE
    echo "=== BEGIN $1"
    cat "$2" 2>/dev/null
    echo "=== END $1"
}
# Milliseconds since boot (/proc/uptime has centiseconds; awk, because
# shell arithmetic reads a fraction like "08" as a bad octal number).
now_ms() {
    awk '{ printf "%d\n", $1 * 1000 }' /proc/uptime
}
# run NAME CMD...: run a real action, record its exit code.
run() {
    name=$1
    shift
    "$@" >/tmp/"$name".out 2>&1
    kv "rc_$name" "$?"
}

CONFIG=/etc/edge-agent/agent.toml
echo # the console's first line carries firmware escape codes
kv kernel "$(uname -r)"
kv machine "$(uname -m)"
kv lsm "$(cat /sys/kernel/security/lsm 2>/dev/null || echo none)"
kv btf "$([ -e /sys/kernel/btf/vmlinux ] && echo yes || echo no)"

# deny_open protects /etc/rancher/k3s/ (see below); it exists before the
# agent starts, as on a K3s node.
# /usr/local/bin/k3s (a busybox copy) is the writer it allows.
mkdir -p /etc/rancher/k3s
echo original >/etc/rancher/k3s/config.yaml
cp /bin/busybox /usr/local/bin/k3s

started=$(now_ms)
edge-agent run --config "$CONFIG" >/tmp/agent.log 2>&1 &
agent=$!
# Ready: every stage has left "starting" (the daemon's READY=1 moment).
while [ $(($(now_ms) - started)) -lt 300000 ]; do
    if edge-agent status --config "$CONFIG" >/tmp/status.txt 2>&1 &&
        ! grep -q 'STARTING' /tmp/status.txt && grep -qE '^[! ]*sensor ' /tmp/status.txt; then
        break
    fi
    if ! kill -0 "$agent" 2>/dev/null; then
        kv agent_died yes
        break
    fi
    usleep 100000
done
kv ready_ms $(($(now_ms) - started))

edge-agent sensor watch --json --config "$CONFIG" >/tmp/events.json 2>/tmp/watch.err &
watch=$!
# The watch stream is live once it shows an open of a marker file.
i=0
while [ $i -lt 300 ] && ! grep -q matrix-marker /tmp/events.json; do
    echo >/etc/matrix-marker
    usleep 100000
    i=$((i + 1))
done

# The actions. Each is what an attacker (or the deny lists' targets) does.
run exec /bin/busybox echo matrix-exec
run shadow cat /etc/shadow
run etc_write sh -c 'echo matrix >/etc/matrix-write'
run connect sh -c 'echo x | nc 127.0.0.1 9'
sleep 30 &
victim=$!
run ptrace /usr/local/bin/matrix-ptrace "$victim"
kill "$victim"
cp /bin/busybox /dev/shm/busybox
run shm /dev/shm/busybox echo from-shm
# deny_exec lists /usr/local/bin/matrix-denied: it must never run (it would
# leave /tmp/denied-ran behind).
cp /bin/busybox /usr/local/bin/matrix-denied
run denied_exec /usr/local/bin/matrix-denied touch /tmp/denied-ran
kv denied_exec_ran "$([ -e /tmp/denied-ran ] && echo yes || echo no)"
kv denied_exec_msg "$(tr '\n' ' ' </tmp/denied_exec.out)"
# The same file under another name (a hard link) is denied by its inode,
# which the sensor resolves again every second.
sleep 2
ln /usr/local/bin/matrix-denied /usr/local/busybox-renamed
run denied_link /usr/local/busybox-renamed touch /tmp/denied-link-ran
kv denied_link_ran "$([ -e /tmp/denied-link-ran ] && echo yes || echo no)"
# deny_open protects /etc/rancher/k3s/ from writers other than
# /usr/local/bin/k3s (a busybox here, called as its tee applet).
run denied_open sh -c 'echo changed >/etc/rancher/k3s/config.yaml'
kv denied_open_content "$(cat /etc/rancher/k3s/config.yaml)"
kv denied_open_msg "$(tr '\n' ' ' </tmp/denied_open.out)"
ln -s /usr/local/bin/k3s /tmp/tee
run allowed_open sh -c 'echo by-k3s | /tmp/tee /etc/rancher/k3s/allowed.yaml'
kv allowed_open_content "$(cat /etc/rancher/k3s/allowed.yaml 2>/dev/null)"
run read_open cat /etc/rancher/k3s/config.yaml

sleep 3
kill "$watch" 2>/dev/null
edge-agent status --json --config "$CONFIG" >/tmp/status.json 2>&1
edge-agent outbox --json --limit 500 --config "$CONFIG" >/tmp/outbox.json 2>&1
stopping=$(now_ms)
kill -TERM "$agent"
wait "$agent"
kv agent_exit "$?"
kv stop_ms $(($(now_ms) - stopping))

section status /tmp/status.json
section outbox /tmp/outbox.json
section events /tmp/events.json
section agent_log /tmp/agent.log
section watch_err /tmp/watch.err
echo "=== DONE"
poweroff -f
