//! Falco's own rules fire on the behaviours they describe. One daemon runs
//! with its real sensor and Falco's three official rule files
//! (`tests/data/falco/`, loaded as Falco loads them: stable, incubating,
//! sandbox); the test then does what each rule's `desc` warns about, the
//! way an attacker would, on this machine and in real runc containers
//! started through containerd, next to a benign look-alike, and reads the
//! alerts from the daemon's `rules.json_file`. Each action carries a token
//! (in its command line, its executable's path or the file it touches, all
//! of which Falco's outputs print), so an alert is traced to the action
//! that caused it even on a busy machine. Rules that no action here can
//! trigger are listed in `UNTESTABLE` with the reason.
//!
//! Needs root, containerd, runc, busybox-static, iproute2 and util-linux's
//! `unshare`/`setpriv`/`script`/`nsenter`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use edge_agent_tests::rules::repo_root;
use edge_agent_tests::sensor::{Containerd, DnsServer, copy_binary, start_with_sensor};
use edge_agent_tests::{Scratch, require_root, wait_for};
use serde_json::Value;

/// Where an action runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum At {
    /// On the node, as root, from the test's scratch directory.
    Host,
    /// In the node's own network namespace copy: `unshare --net`, with
    /// 192.0.2.1 (TEST-NET-1) on its loopback, so connections to a
    /// non-loopback address never leave the namespace.
    HostNetns,
    /// In an ordinary runc container (busybox).
    Container,
    /// In a privileged runc container.
    Privileged,
    /// As the entry process of a container of its own (`sh -c SCRIPT`), as
    /// the runtime starts it; `TtyEntry` with a terminal (`ctr run -t`
    /// under `script`), as `kubectl exec -it` gives one.
    Entry,
    TtyEntry,
    /// As `Entry`, in a privileged container.
    PrivilegedEntry,
    /// As `Entry`, in a container with the node's /etc bind-mounted
    /// (read-only) at /host-etc: a sensitive mount.
    MountEntry,
    /// As `Entry`, on the node's network (a `hostNetwork` pod), where the
    /// test's DNS server listens: `{dns}` in the script is its address
    /// and `{ip}` the address prefix (`127.54.N`) it gives out.
    HostNetEntry,
}

/// One behaviour: what an attacker does and a look-alike that must stay
/// quiet. `@` in a script is replaced by the case's token.
struct Case {
    rule: &'static str,
    attack: (At, &'static str),
    benign: (At, &'static str),
}

/// Host scripts run under `dash -c` with `$T` (the tools: copies of
/// `true`, `dash` and `falco-act` under the names rules look for) and `$W`
/// (a scratch directory below `/tmp/ea-fc-`). Container scripts run in
/// busybox `sh`; `/tmp/@` there is made for each case and `x NAME` links
/// busybox into it as `NAME`, so the token is in the executable's path.
const CASES: &[Case] = &[
    // ---- stable ----
    Case {
        rule: "Read sensitive file untrusted",
        attack: (At::Host, "$T/evilread -c 'read x < /etc/shadow; : @'"),
        benign: (At::Host, "$T/passwd -c 'read x < /etc/shadow; : @'"),
    },
    Case {
        rule: "Read sensitive file trusted after startup",
        attack: (At::Host, "$T/nginx -c 'sleep 6; read x < /etc/shadow; : @'"),
        benign: (At::Host, "$T/nginx -c 'read x < /etc/shadow; : @'"),
    },
    // A web server's path-traversal read: `exec` so that the reader's
    // parent is not a shell (the rule leaves shells' children alone).
    Case {
        rule: "Directory traversal monitored file read",
        attack: (
            At::Host,
            "mkdir $W/@ && exec $T/nginx -c 'read x < $W/@/../../../../etc/passwd'",
        ),
        benign: (
            At::Host,
            "mkdir $W/@ && exec $T/nginx -c 'read x < $W/@/../../../../usr/lib/os-release; read x < /etc/passwd; : @'",
        ),
    },
    Case {
        rule: "Run shell untrusted",
        attack: (At::Host, "$T/nginx -c 'sh -c \": @\"; true'"),
        benign: (At::Host, "$T/evilread -c 'sh -c \": @\"; true'"),
    },
    Case {
        rule: "System user interactive",
        attack: (
            At::Host,
            "setpriv --reuid=65534 --regid=65534 --clear-groups $T/login -c ': @'",
        ),
        benign: (At::Host, "$T/login -c ': @'"),
    },
    Case {
        rule: "Search Private Keys or Passwords",
        attack: (At::Host, "$T/grep -r 'BEGIN RSA PRIVATE' /nonexistent/@"),
        benign: (At::Host, "$T/grep -r 'BEGIN RSA PUBLIC' /nonexistent/@"),
    },
    Case {
        rule: "Remove Bulk Data from Disk",
        attack: (At::Host, "$T/shred -u $W/@"),
        benign: (At::Host, "$T/wipe -u $W/@"),
    },
    Case {
        rule: "Create Symlink Over Sensitive Files",
        attack: (At::Host, "ln -s /etc/shadow $W/@-link"),
        benign: (At::Host, "ln -s /etc/hostname $W/@-link"),
    },
    Case {
        rule: "Create Hardlink Over Sensitive Files",
        attack: (At::Container, "ln /etc/shadow /tmp/@-hard"),
        benign: (At::Container, "ln /etc/passwd /tmp/@-hard"),
    },
    Case {
        rule: "PTRACE anti-debug attempt",
        attack: (At::Host, "$T/falco-act traceme @"),
        benign: (At::Host, "$T/falco-act peek @"),
    },
    Case {
        rule: "PTRACE attached to process",
        attack: (At::Host, "$T/falco-act attach @"),
        benign: (At::Host, "$T/falco-act peek @"),
    },
    Case {
        rule: "Find AWS Credentials",
        attack: (
            At::Host,
            "$T/find /nonexistent/@ -path '*/.aws/credentials'",
        ),
        benign: (At::Host, "$T/find /nonexistent/@ -path '*/.aws/config'"),
    },
    Case {
        rule: "Execution from /dev/shm",
        attack: (
            At::Host,
            "cp $T/true /dev/shm/@ && /dev/shm/@; rm -f /dev/shm/@",
        ),
        benign: (At::Host, "cp $T/true $W/@ && $W/@"),
    },
    Case {
        rule: "Fileless execution via memfd_create",
        attack: (At::Host, "$T/falco-act memfd-exec @"),
        benign: (At::Host, "$T/falco-act memfd-only @"),
    },
    Case {
        rule: "Netcat Remote Code Execution in Container",
        attack: (At::Container, "x nc; /tmp/@/nc -e /bin/true 127.0.0.1 1"),
        benign: (At::Container, "x nc; /tmp/@/nc -w 1 127.0.0.1 1"),
    },
    Case {
        rule: "Terminal shell in container",
        attack: (At::TtyEntry, ": @"),
        benign: (At::Entry, ": @"),
    },
    Case {
        rule: "Packet socket created in container",
        attack: (
            At::Container,
            "x arping; /tmp/@/arping -c 1 -w 1 -I lo 127.0.0.1",
        ),
        benign: (At::Container, "x nc; /tmp/@/nc -w 1 127.0.0.1 1"),
    },
    Case {
        rule: "Clear Log Activities",
        attack: (At::Container, "mkdir -p /var/log; : > /var/log/@.log"),
        benign: (At::Container, "mkdir -p /var/log; echo x >> /var/log/@.log"),
    },
    Case {
        rule: "Debugfs Launched in Privileged Container",
        attack: (At::Privileged, "x debugfs; /tmp/@/debugfs -R stats"),
        benign: (At::Container, "x debugfs; /tmp/@/debugfs -R stats"),
    },
    Case {
        rule: "Detect release_agent File Container Escapes",
        attack: (At::Privileged, "echo x > /tmp/@/release_agent"),
        benign: (At::Container, "echo x > /tmp/@/release_agent"),
    },
    // ---- incubating ----
    Case {
        rule: "Modify Shell Configuration File",
        attack: (At::Host, "mkdir -p $W/@ && touch $W/@/.bashrc"),
        benign: (At::Host, "mkdir -p $W/@ && touch $W/@/.bashrc.orig"),
    },
    Case {
        rule: "Schedule Cron Jobs",
        attack: (At::Host, "$T/crontab -l @"),
        benign: (At::Host, "$T/anacron -l @"),
    },
    Case {
        rule: "Read ssh information",
        attack: (
            At::Container,
            "mkdir -p /root/.ssh; echo k > /root/.ssh/@; cat /root/.ssh/@",
        ),
        benign: (At::Container, "echo k > /tmp/@.pub; cat /tmp/@.pub"),
    },
    Case {
        rule: "DB program spawned process",
        attack: (At::Host, "$T/mysqld -c '$T/whoami @; true'"),
        benign: (At::Host, "$T/mysqld -c '$T/mysqld -c \": @\"; true'"),
    },
    Case {
        rule: "System procs network activity",
        attack: (At::HostNetns, "$T/sort connect @ 192.0.2.1 9999 tcp"),
        benign: (At::HostNetns, "$T/fetcher connect @ 192.0.2.1 9999 tcp"),
    },
    Case {
        rule: "Unexpected UDP Traffic",
        attack: (At::HostNetns, "$T/fetcher connect @ 192.0.2.1 9999 udp"),
        benign: (At::HostNetns, "$T/fetcher connect @ 192.0.2.1 53 udp"),
    },
    Case {
        rule: "Non sudo setuid",
        attack: (At::Host, "$T/falco-act setuid-root @"),
        benign: (At::Host, "$T/falco-act setuid-self @"),
    },
    Case {
        rule: "User mgmt binaries",
        attack: (At::Host, "$T/useradd -m @"),
        benign: (At::Host, "$T/useradd -D @"),
    },
    Case {
        rule: "Create files below dev",
        attack: (At::Host, "touch /dev/@; rm -f /dev/@"),
        benign: (At::Host, "touch /dev/shm/@; rm -f /dev/shm/@"),
    },
    Case {
        rule: "Launch Package Management Process in Container",
        attack: (At::Container, "x apk; /tmp/@/apk add xmrig"),
        benign: (At::Container, "x apkx; /tmp/@/apkx add xmrig"),
    },
    Case {
        rule: "Launch Suspicious Network Tool in Container",
        attack: (At::Container, "x nc; /tmp/@/nc -h"),
        benign: (At::Container, "x cat; /tmp/@/cat /dev/null"),
    },
    Case {
        rule: "Launch Suspicious Network Tool on Host",
        attack: (At::Host, "$T/nmap -sS @"),
        benign: (At::Host, "$T/ping -c 1 @"),
    },
    Case {
        rule: "Delete or rename shell history",
        attack: (At::Host, "mkdir -p $W/@ && : > $W/@/.bash_history"),
        benign: (At::Host, "mkdir -p $W/@ && echo ls >> $W/@/.bash_history"),
    },
    Case {
        rule: "Launch Remote File Copy Tools in Container",
        attack: (At::Container, "x scp; /tmp/@/scp /etc/passwd x:/tmp"),
        benign: (At::Container, "x cp; /tmp/@/cp /etc/passwd /tmp/@/p"),
    },
    Case {
        rule: "Mount Launched in Privileged Container",
        attack: (
            At::Privileged,
            "x mount; mkdir -p /mnt; /tmp/@/mount -t tmpfs none /mnt",
        ),
        benign: (At::Privileged, "x mount; /tmp/@/mount -V"),
    },
    Case {
        rule: "Launch Ingress Remote File Copy Tools in Container",
        attack: (
            At::Container,
            "x wget; /tmp/@/wget -q -T 1 -O /dev/null http://127.0.0.1:1/",
        ),
        benign: (At::Container, "x head; /tmp/@/head -c 0 /dev/null"),
    },
    Case {
        rule: "Read environment variable from /proc files",
        attack: (
            At::Container,
            "x cat; /tmp/@/cat /proc/1/environ > /dev/null",
        ),
        benign: (
            At::Container,
            "x cat; /tmp/@/cat /proc/1/status > /dev/null",
        ),
    },
    Case {
        rule: "Adding ssh keys to authorized_keys",
        attack: (
            At::Container,
            "mkdir -p /root/.ssh/@; echo k >> /root/.ssh/@/authorized_keys",
        ),
        benign: (
            At::Container,
            "mkdir -p /root/.ssh/@; echo k >> /root/.ssh/@/known_hosts",
        ),
    },
    Case {
        rule: "Backdoored library loaded into SSHD (CVE-2024-3094)",
        attack: (
            At::Host,
            "mkdir -p $W/@ && echo > $W/@/liblzma.so.5.6.0 && $T/sshd -c 'read x < $W/@/liblzma.so.5.6.0'",
        ),
        benign: (
            At::Host,
            "mkdir -p $W/@ && echo > $W/@/liblzma.so.5.4.5 && $T/sshd -c 'read x < $W/@/liblzma.so.5.4.5'",
        ),
    },
    // ---- sandbox ----
    Case {
        rule: "Update Package Repository",
        attack: (
            At::Container,
            "mkdir -p /etc/apt/sources.list.d; echo deb > /etc/apt/sources.list.d/@.list",
        ),
        benign: (
            At::Container,
            "mkdir -p /tmp/@; echo deb > /tmp/@/sources.list",
        ),
    },
    Case {
        rule: "Write below binary dir",
        attack: (At::Container, "echo x > /bin/@"),
        benign: (At::Container, "echo x > /tmp/@"),
    },
    Case {
        rule: "Modify binary dirs",
        attack: (At::Container, "echo x > /usr/bin/@; rm /usr/bin/@"),
        benign: (At::Container, "echo x > /tmp/@; rm /tmp/@"),
    },
    Case {
        rule: "Write below monitored dir",
        attack: (At::Container, "mkdir -p /lib; echo x > /lib/@"),
        benign: (At::Container, "mkdir -p /opt/lib; echo x > /opt/lib/@"),
    },
    Case {
        rule: "Write below etc",
        attack: (At::Container, "echo x > /etc/@"),
        benign: (At::Container, "echo x > /tmp/@"),
    },
    Case {
        rule: "Write below root",
        attack: (At::Container, "echo x > /@"),
        benign: (At::Container, "echo x > /tmp/@"),
    },
    Case {
        rule: "Write below rpm database",
        attack: (
            At::Container,
            "mkdir -p /var/lib/rpm; echo x > /var/lib/rpm/@",
        ),
        benign: (
            At::Container,
            "mkdir -p /var/lib/dpkg; echo x > /var/lib/dpkg/@",
        ),
    },
    Case {
        rule: "Detect crypto miners using the Stratum protocol",
        attack: (At::Host, "$T/true -o stratum+tcp://@:3333"),
        benign: (At::Host, "$T/true -o tcp://@:3333"),
    },
    Case {
        rule: "Kubernetes Client Tool Launched in Container",
        attack: (At::Container, "x kubectl; /tmp/@/kubectl get secrets"),
        benign: (At::Container, "x kubectx; /tmp/@/kubectx get secrets"),
    },
    Case {
        rule: "Sudo Potential Privilege Escalation",
        attack: (At::Host, "$T/sudo -s @ 'x\\'"),
        benign: (At::Host, "$T/sudo -s @ x"),
    },
    Case {
        rule: "Polkit Local Privilege Escalation Vulnerability (CVE-2021-4034)",
        attack: (
            At::Host,
            "mkdir -p $W/@ && cp $T/true $W/@/pkexec && $W/@/pkexec",
        ),
        benign: (
            At::Host,
            "mkdir -p $W/@ && cp $T/true $W/@/pkexec && $W/@/pkexec --version",
        ),
    },
    Case {
        rule: "Decoding Payload in Container",
        attack: (At::Container, "x base64; echo aGk= | /tmp/@/base64 -d"),
        benign: (At::Container, "x base64; echo hi | /tmp/@/base64"),
    },
    Case {
        rule: "Netcat/Socat Remote Code Execution on Host",
        attack: (At::Host, "$T/nc -e /bin/sh @ 1"),
        benign: (At::Host, "$T/nc -z @ 1"),
    },
    Case {
        rule: "Network Tool Executed During NPM Package Install",
        attack: (
            At::Container,
            "x npm; x nc; (exec -a sh /tmp/@/npm -c '/tmp/@/nc -h; true')",
        ),
        benign: (
            At::Container,
            "x npm; x cat; (exec -a sh /tmp/@/npm -c '/tmp/@/cat /dev/null; true')",
        ),
    },
    Case {
        rule: "Known Cryptominer Process Executed",
        attack: (At::Host, "$T/xmrig --donate-level 1 @"),
        benign: (At::Host, "$T/xmrig-notes @"),
    },
    Case {
        rule: "Web Server Spawned Shell",
        attack: (At::Host, "$T/nginx -c 'sh -c \": @\"; true'"),
        benign: (At::Host, "$T/nginx -c 'sh -c \"/usr/bin/true @\"; true'"),
    },
    Case {
        rule: "Web Server Spawned Suspicious Child Process",
        attack: (At::Host, "$T/nginx -c '$T/whoami @; true'"),
        benign: (At::Host, "$T/nginx -c '$T/whoami status @; true'"),
    },
    Case {
        rule: "Reverse Shell from Web Server",
        attack: (
            At::Host,
            "$T/nginx -c 'sh -c \"echo /dev/tcp/ @ > /dev/null\"; true'",
        ),
        benign: (
            At::Host,
            "$T/evilread -c 'sh -c \"echo /dev/tcp/ @ > /dev/null\"; true'",
        ),
    },
    Case {
        rule: "Privileged Container Device Access",
        attack: (At::Container, "echo x > /dev/sd@; cat /dev/sd@ > /dev/null"),
        benign: (At::Container, "echo x > /tmp/sd@; cat /tmp/sd@ > /dev/null"),
    },
    Case {
        rule: "Container Access to Host Sensitive Paths",
        attack: (At::Container, "mkdir -p /host/etc; echo x > /host/etc/@"),
        benign: (At::Container, "mkdir -p /hostx/etc; echo x > /hostx/etc/@"),
    },
    // ---- rules that load since the sensor's issue-14 events and fields ----
    Case {
        rule: "Set Setuid or Setgid bit",
        attack: (At::Host, "cp $T/true $W/@ && chmod u+s $W/@"),
        benign: (At::Host, "cp $T/true $W/@ && chmod u+x $W/@"),
    },
    Case {
        rule: "Change thread namespace",
        attack: (At::Host, "$T/falco-act setns @"),
        benign: (At::Host, "nsenter --net=/proc/self/ns/net $T/true @"),
    },
    Case {
        rule: "Change namespace privileges via unshare",
        attack: (At::Container, "x unshare; /tmp/@/unshare -U true"),
        benign: (At::Privileged, "x unshare; /tmp/@/unshare -U true"),
    },
    Case {
        rule: "BPF Program Not Profiled",
        attack: (At::Host, "$T/falco-act bpf-load @"),
        benign: (At::Host, "$T/bpftool bpf-load @"),
    },
    Case {
        rule: "Mkdir binary dirs",
        attack: (At::Container, "mkdir /usr/bin/@; rmdir /usr/bin/@"),
        benign: (At::Container, "mkdir -p /usr/local/bin/@"),
    },
    Case {
        rule: "Unprivileged Delegation of Page Faults Handling to a Userspace Process",
        attack: (At::Host, "$T/falco-act userfaultfd-nobody @"),
        benign: (At::Host, "$T/falco-act userfaultfd-root @"),
    },
    Case {
        rule: "Launch Privileged Container",
        attack: (At::PrivilegedEntry, ": @"),
        benign: (At::Entry, ": @"),
    },
    Case {
        rule: "Launch Sensitive Mount Container",
        attack: (At::MountEntry, ": @"),
        benign: (At::Entry, ": @"),
    },
    Case {
        rule: "Launch Excessively Capable Container",
        attack: (At::PrivilegedEntry, ": @"),
        benign: (At::Entry, ": @"),
    },
    Case {
        rule: "Program run with disallowed http proxy env",
        attack: (At::Host, "HTTP_PROXY=http://127.0.0.1:3128 $T/curl @"),
        benign: (At::Host, "NO_PROXY=127.0.0.1 $T/curl @"),
    },
    Case {
        rule: "Potential Local Privilege Escalation via Environment Variables Misuse",
        attack: (At::Host, "GLIBC_TUNABLES=glibc.malloc.mxfast=0 $T/true @"),
        benign: (At::Host, "MALLOC_ARENA_MAX=2 $T/true @"),
    },
    Case {
        rule: "Contact K8S API Server From Container",
        attack: (
            At::HostNetEntry,
            "mkdir -p /tmp/@; ln -f /bin/busybox /tmp/@/nc; \
             /bin/busybox nslookup kubernetes.default.svc.cluster.local {dns}; /tmp/@/nc -w 1 {ip}.2 443 </dev/null; true",
        ),
        benign: (
            At::HostNetEntry,
            "mkdir -p /tmp/@; ln -f /bin/busybox /tmp/@/nc; \
             /bin/busybox nslookup kubernetes-docs.example {dns}; /tmp/@/nc -w 1 {ip}.3 443 </dev/null; true",
        ),
    },
    Case {
        rule: "Contact EC2 Instance Metadata Service From Container",
        attack: (At::Privileged, "x nc; meta 169.254.169.254 @"),
        benign: (At::Privileged, "x nc; meta 169.254.169.253 @"),
    },
    Case {
        rule: "Contact cloud metadata service from container",
        attack: (At::Privileged, "x nc; meta 169.254.169.254 @"),
        benign: (At::Privileged, "x nc; meta 169.254.169.253 @"),
    },
    Case {
        rule: "Disallowed SSH Connection Non Standard Port",
        attack: (
            At::HostNetns,
            "(busybox nc -l -p 443 >/dev/null 2>&1 &) ; sleep 0.3; $T/ssh connect @ 192.0.2.1 443 tcp",
        ),
        benign: (
            At::HostNetns,
            "(busybox nc -l -p 22 >/dev/null 2>&1 &) ; sleep 0.3; $T/ssh connect @ 192.0.2.1 22 tcp",
        ),
    },
    Case {
        rule: "Basic Interactive Reconnaissance",
        attack: (At::Host, "script -qec 'exec $T/whoami @' /dev/null"),
        benign: (At::Host, "script -qec '$T/whoami @; true' /dev/null"),
    },
    // busybox nc takes everything after -e as the program to run, so the
    // address comes first.
    Case {
        rule: "Redirect STDOUT/STDIN to Network Connection in Container",
        attack: (
            At::Privileged,
            "x nc; ip link set lo up; (nc -l -p 5555 >/dev/null &); sleep 0.3; /tmp/@/nc 127.0.0.1 5555 -e /bin/true",
        ),
        benign: (
            At::Privileged,
            "x nc; ip link set lo up; (nc -l -p 5556 >/dev/null &); sleep 0.3; /tmp/@/nc -w 1 127.0.0.1 5556 </dev/null",
        ),
    },
    Case {
        rule: "Exfiltrating Artifacts via Kubernetes Control Plane",
        attack: (At::Entry, "exec tar cf /dev/null /root/@"),
        benign: (At::Entry, "tar cf /dev/null /root/@; true"),
    },
];

/// Loaded rules this test does not trigger, and why.
const UNTESTABLE: &[(&str, &str)] = &[
    (
        "Launch Disallowed Container",
        "Falco's file allows every container (macro allowed_containers is `container.id exists`) until the user narrows it",
    ),
    (
        "Linux Kernel Module Injection Detected",
        "this machine's kernel is built without loadable modules, so init_module never runs",
    ),
    (
        "Network Connection outside Local Subnet",
        "fires only for namespaces the user lists in namespace_scope_network_only_subnet, empty in Falco's file",
    ),
    (
        "Drop and execute new binary in container",
        "needs an overlayfs container root (the tests run runc on a plain directory, so no file is in an upper layer)",
    ),
];

/// Rules the three files ship disabled (`enabled: false`): Falco does not
/// run them either unless a user turns them on.
fn is_disabled_in_falco(rule: &str) -> bool {
    matches!(
        rule,
        "Unexpected inbound connection source"
            | "Read Shell Configuration File"
            | "Interpreted procs inbound network activity"
            | "Interpreted procs outbound network activity"
            | "Unexpected K8s NodePort Connection"
            | "Create Hidden Files or Directories"
            | "Detect outbound connections to common miner pool ports"
            | "Container Drift Detected (chmod)"
            | "Container Drift Detected (open+create)"
            | "Container Run as Root User"
            | "Java Process Class File Download"
            | "Modify Container Entrypoint"
    )
}

fn falco_files() -> Vec<PathBuf> {
    let dir = repo_root().join("tests/data/falco");
    [
        "falco_rules.yaml",
        "falco-incubating_rules.yaml",
        "falco-sandbox_rules.yaml",
    ]
    .iter()
    .map(|f| dir.join(f))
    .collect()
}

fn token(i: usize, attack: bool) -> String {
    // Not hexadecimal, so no container id or digest can contain it.
    format!("zq{i:02}{}", if attack { 'a' } else { 'b' })
}

/// The scratch directory, the tools in it, and the container script
/// prelude.
struct Stage {
    work: tempfile::TempDir,
}

impl Stage {
    fn new() -> Stage {
        let work = tempfile::Builder::new()
            .prefix("ea-fc-")
            .tempdir_in("/tmp")
            .unwrap();
        // Readable by nobody (System user interactive runs as it).
        set_mode(work.path(), 0o755);
        let tools = work.path().join("tools");
        std::fs::create_dir(&tools).unwrap();
        set_mode(&tools, 0o755);
        let act = falco_act_bin();
        for name in [
            "shred",
            "wipe",
            "grep",
            "find",
            "crontab",
            "anacron",
            "useradd",
            "nmap",
            "ping",
            "true",
            "whoami",
            "xmrig",
            "xmrig-notes",
            "sudo",
            "nc",
            "curl",
        ] {
            copy_binary("/bin/true", &tools, name);
        }
        for name in ["evilread", "passwd", "nginx", "mysqld", "sshd", "login"] {
            copy_binary("/bin/dash", &tools, name);
        }
        for name in ["falco-act", "sort", "fetcher", "ssh", "bpftool"] {
            copy_binary(act.to_str().unwrap(), &tools, name);
        }
        for e in std::fs::read_dir(&tools).unwrap() {
            set_mode(&e.unwrap().path(), 0o755);
        }
        Stage { work }
    }

    fn tools(&self) -> PathBuf {
        self.work.path().join("tools")
    }

    /// Run a host script to completion (a failure of the action itself is
    /// part of some behaviours; only a script that cannot start is fatal).
    fn host(&self, at: At, script: &str) -> std::process::Child {
        let mut cmd = match at {
            At::HostNetns => {
                let setup = "ip link set lo up && ip addr add 192.0.2.1/32 dev lo && \
                             (busybox nc -l -p 9999 >/dev/null 2>&1 &) && sleep 0.3; ";
                let mut c = Command::new("unshare");
                c.args(["--net", "/bin/dash", "-c"])
                    .arg(format!("{setup}{script}"));
                c
            }
            _ => {
                let mut c = Command::new("/bin/dash");
                c.arg("-c").arg(script);
                c
            }
        };
        // Only what the case sets: no proxy or loader variable of the
        // test's own environment reaches a look-alike.
        cmd.env_clear()
            .env(
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            )
            .env("T", self.tools())
            .env("W", self.work.path())
            .current_dir(self.work.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("dash runs")
    }
}

fn set_mode(p: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// `falco-act`, built next to the test binaries.
fn falco_act_bin() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .unwrap()
        .join("falco-act");
    assert!(bin.exists(), "{} is built with the tests", bin.display());
    bin
}

/// A busybox rootfs with what the container cases touch.
fn rootfs(ctrd: &Containerd, name: &str) -> PathBuf {
    let base = ctrd.busybox_rootfs_at(name);
    for d in ["root", "usr/bin", "mnt", "var"] {
        std::fs::create_dir_all(base.join(d)).unwrap();
    }
    for applet in [
        "mkdir", "ln", "rm", "mv", "cp", "echo", "true", "tar", "head", "base64", "nc",
    ] {
        let link = base.join("bin").join(applet);
        if !link.exists() {
            std::os::unix::fs::symlink("busybox", link).unwrap();
        }
    }
    std::fs::write(base.join("etc/shadow"), "root:*:19000:0:99999:7:::\n").unwrap();
    base
}

/// The container prelude: `x NAME` hard-links busybox to
/// `/tmp/<token>/NAME` (a hard link, so the token is in the real path of
/// the executable that Falco's outputs print).
/// `meta ADDR TOKEN` puts ADDR on the (privileged) container's loopback,
/// listens on its port 80 and connects to it with the token's `nc`: a
/// connection to a cloud metadata address that stays in the container.
const PRELUDE: &str = "x() { mkdir -p /tmp/$TOKEN; ln -f /bin/busybox /tmp/$TOKEN/$1; }\n\
    meta() { ip link set lo up; ip addr add $1/32 dev lo; (nc -l -p 80 >/dev/null &); sleep 0.3; \
    /tmp/$2/nc -w 1 $1 80 </dev/null; ip addr del $1/32 dev lo; }\n";

/// Where the container script is written in the rootfs: run from a file,
/// the shell's command line (printed as every child's `pcmdline`) names no
/// case's token.
const SCRIPT: &str = "/corpus.sh";

fn container_script(cases: &[(String, &str)]) -> String {
    let mut s = String::from(PRELUDE);
    for (tok, script) in cases {
        s.push_str(&format!(
            "TOKEN={tok}; mkdir -p /tmp/{tok}; ( {} ) >/dev/null 2>&1\n",
            script.replace('@', tok)
        ));
    }
    // Actions fail on purpose (no network, no such file); the run does not.
    s.push_str("true\n");
    s
}

fn read_alerts(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Rules whose alerts name `token`.
fn fired_for(alerts: &[Value], token: &str) -> BTreeSet<String> {
    alerts
        .iter()
        .filter(|a| a.to_string().contains(token))
        .filter_map(|a| a["rule"].as_str().map(str::to_string))
        .collect()
}

/// The rules Falco's three files define, as the agent's own loader loads
/// them (the same call the daemon and `rules check` make), by state.
fn catalog_by_state() -> BTreeMap<String, &'static str> {
    let loaded = edge_agent::rules::load_paths(&falco_files());
    for f in &loaded.set.files {
        assert!(f.error.is_none(), "{}: {:?}", f.path.display(), f.error);
    }
    let mut states = BTreeMap::new();
    for r in &loaded.set.catalog {
        // A later definition of a name replaces an earlier one, as in Falco.
        states.insert(r.name.clone(), r.state);
    }
    states
}

/// The coverage rule, as a value so that its own test can feed it a
/// catalog: every rule that loads has exactly one of a behaviour case or a
/// reason; every case and reason names a rule that loads (a stale entry
/// would hide a rule that stopped loading); every reason is one line.
fn coverage_gaps(
    states: &BTreeMap<String, &'static str>,
    cases: &[&str],
    reasons: &[(&str, &str)],
) -> Vec<String> {
    let mut gaps = Vec::new();
    let cased: BTreeSet<&str> = cases.iter().copied().collect();
    let reasoned: BTreeSet<&str> = reasons.iter().map(|(n, _)| *n).collect();
    for (name, state) in states {
        let (c, r) = (
            cased.contains(name.as_str()),
            reasoned.contains(name.as_str()),
        );
        match (*state, c, r) {
            ("loaded", false, false) => gaps.push(format!(
                "{name}: loads, but has neither a case nor a reason"
            )),
            (_, true, true) => gaps.push(format!("{name}: has both a case and a reason")),
            ("loaded", ..) | (_, false, false) => {}
            (state, ..) => gaps.push(format!(
                "{name}: is {state}, yet has a {}",
                if c { "case" } else { "reason" }
            )),
        }
    }
    for name in cased.iter().chain(&reasoned) {
        if !states.contains_key(*name) {
            gaps.push(format!("{name}: no rule of that name in Falco's files"));
        }
    }
    for (name, why) in reasons {
        if why.trim().is_empty() || why.contains('\n') {
            gaps.push(format!("{name}: the reason must be one non-empty line"));
        }
    }
    if cased.len() != cases.len() {
        gaps.push("a rule has more than one case".into());
    }
    if reasoned.len() != reasons.len() {
        gaps.push("a rule has more than one reason".into());
    }
    gaps
}

#[test]
fn every_loaded_falco_rule_has_a_behaviour_case_or_a_reason_it_cannot_run_here() {
    let states = catalog_by_state();
    let cases: Vec<&str> = CASES.iter().map(|c| c.rule).collect();
    let gaps = coverage_gaps(&states, &cases, UNTESTABLE);
    assert!(gaps.is_empty(), "coverage gaps: {gaps:#?}");
    for (name, state) in &states {
        if *state == "disabled" {
            assert!(
                is_disabled_in_falco(name),
                "{name} is disabled here but not in Falco's file"
            );
        }
    }
}

#[test]
fn the_coverage_rule_refuses_a_loaded_rule_without_a_case_and_stale_entries() {
    let states: BTreeMap<String, &'static str> = [
        ("A", "loaded"),
        ("B", "loaded"),
        ("C", "failed"),
        ("D", "disabled"),
    ]
    .into_iter()
    .map(|(n, s)| (n.to_string(), s))
    .collect();
    assert!(coverage_gaps(&states, &["A"], &[("B", "why")]).is_empty());
    let gaps = coverage_gaps(&states, &["A"], &[]);
    assert!(gaps.iter().any(|g| g.starts_with("B: loads")), "{gaps:?}");
    let gaps = coverage_gaps(&states, &["A", "C"], &[("B", "why")]);
    assert!(
        gaps.iter().any(|g| g.starts_with("C: is failed")),
        "{gaps:?}"
    );
    let gaps = coverage_gaps(&states, &["A", "Z"], &[("B", "why")]);
    assert!(gaps.iter().any(|g| g.starts_with("Z: no rule")), "{gaps:?}");
    let gaps = coverage_gaps(&states, &["A", "B"], &[("B", "why")]);
    assert!(
        gaps.iter().any(|g| g.starts_with("B: has both")),
        "{gaps:?}"
    );
    let gaps = coverage_gaps(&states, &["A"], &[("B", "")]);
    assert!(
        gaps.iter().any(|g| g.starts_with("B: the reason")),
        "{gaps:?}"
    );
}

#[test]
fn at_least_88_of_falcos_93_rules_compile() {
    let states = catalog_by_state();
    let compiled = states
        .values()
        .filter(|s| matches!(**s, "loaded" | "disabled"))
        .count();
    assert_eq!(states.len(), 93, "rules in Falco's three files");
    assert!(compiled >= 88, "{compiled} of 93 compile");
}

#[test]
fn the_falco_rules_that_do_not_compile_say_why_in_falcos_terms() {
    let loaded = edge_agent::rules::load_paths(&falco_files());
    let failed: BTreeMap<&str, &str> = loaded
        .errors()
        .map(|e| (e.name.as_str(), e.reason.as_str()))
        .collect();
    let expected: BTreeMap<&str, &str> = [(
        "Java Process Class File Download",
        "unknown field evt.buffer (the sensor does not capture the data",
    )]
    .into_iter()
    .collect();
    assert_eq!(
        failed.keys().collect::<Vec<_>>(),
        expected.keys().collect::<Vec<_>>(),
        "{failed:#?}"
    );
    for (rule, why) in expected {
        assert!(failed[rule].starts_with(why), "{rule}: {}", failed[rule]);
    }
}

#[test]
fn falcos_own_rules_fire_on_attacks_on_the_host_and_in_containers_and_not_on_look_alikes() {
    require_root();
    let stage = Stage::new();
    let mut ctrd = Containerd::start();
    let plain = rootfs(&ctrd, "plain");
    let privileged = rootfs(&ctrd, "privileged");
    let alerts_file = stage.work.path().join("alerts.jsonl");
    let files: Vec<String> = falco_files()
        .iter()
        .map(|f| format!("\"{}\"", f.display()))
        .collect();
    let s = Scratch::new(&format!(
        "[sensor]\nenabled = true\n\
         watch_open_prefixes = [\"/etc\", \"/root\", \"/home\", \"/proc/\", \"/dev\", \"/host\", \"{}\"]\n\
         runtime_state_dirs = [\"{}\"]\n\n\
         [rules]\nfiles = [{}]\nrate = 100000.0\nmax_burst = 100000\njson_file = \"{}\"\n",
        stage.work.path().display(),
        ctrd.task_state_dir().display(),
        files.join(", "),
        alerts_file.display()
    ));
    let d = start_with_sensor(&s);

    // The cluster DNS a hostNetwork pod asks (the sensor learns host names
    // from its answers): on loopback addresses of this run's own.
    let n = std::process::id() % 200 + 20;
    let dns_ip = std::net::Ipv4Addr::new(127, 53, n as u8, 1);
    let given = format!("127.54.{n}");
    let ip = |last: &str| format!("{given}.{last}").parse().unwrap();
    let _dns = DnsServer::start(
        dns_ip,
        &[
            ("kubernetes.default.svc.cluster.local", ip("2")),
            ("kubernetes-docs.example", ip("3")),
        ],
    );

    // Every case's attack and look-alike, host ones in parallel processes.
    let mut children = Vec::new();
    let mut in_plain = Vec::new();
    let mut in_privileged = Vec::new();
    let mut entries = Vec::new();
    for (i, c) in CASES.iter().enumerate() {
        for (attack, (at, script)) in [(true, c.attack), (false, c.benign)] {
            let tok = token(i, attack);
            match at {
                At::Host | At::HostNetns => {
                    children.push(stage.host(at, &script.replace('@', &tok)))
                }
                At::Container => in_plain.push((tok, script)),
                At::Privileged => in_privileged.push((tok, script)),
                At::Entry
                | At::TtyEntry
                | At::PrivilegedEntry
                | At::MountEntry
                | At::HostNetEntry => {
                    // A file of its own for the entry process to read.
                    std::fs::write(plain.join("root").join(&tok), "artifact\n").unwrap();
                    let script = script
                        .replace("{dns}", &dns_ip.to_string())
                        .replace("{ip}", &given);
                    entries.push((at, script.replace('@', &tok)))
                }
            }
        }
    }
    let nonce = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    for (name, root, script, extra) in [
        ("plain", &plain, container_script(&in_plain), &[][..]),
        (
            "privileged",
            &privileged,
            container_script(&in_privileged),
            &["--privileged"][..],
        ),
    ] {
        // Distinct in their first 12 digits (the short id the sensor keys on).
        let short = (nonce as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ name.len() as u64;
        let id = format!("{:012x}{:052x}", short & 0xffff_ffff_ffff, nonce);
        let cgroup = format!("/kubepods/besteffort/podfc{}/{id}", &id[24..32]);
        std::fs::write(root.join(SCRIPT.trim_start_matches('/')), script).unwrap();
        let out = ctrd.run_with(
            root,
            &id,
            &cgroup,
            &[
                ("io.kubernetes.cri.sandbox-name", "corpus"),
                ("io.kubernetes.cri.sandbox-namespace", "falco-corpus"),
                ("io.kubernetes.cri.container-name", name),
                (
                    "io.kubernetes.cri.image-name",
                    "docker.io/library/busybox:1.36",
                ),
            ],
            extra,
            &format!(". {SCRIPT}"),
        );
        assert!(
            out.status.success(),
            "ctr run ({name}) failed: {}\n{}\ncontainerd log:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            ctrd.log()
        );
    }
    for (n, (at, script)) in entries.iter().enumerate() {
        let short = (nonce as u64).wrapping_mul(0x2545_f491_4f6c_dd1d) ^ n as u64;
        let id = format!("{:012x}{:052x}", short & 0xffff_ffff_ffff, nonce);
        let cgroup = format!("/kubepods/besteffort/podfe{}/{id}", &id[..8]);
        let options: &[&str] = match at {
            At::PrivilegedEntry => &["--privileged"],
            At::MountEntry => &["--mount type=bind,src=/etc,dst=/host-etc,options=rbind:ro"],
            At::HostNetEntry => &["--net-host"],
            _ => &[],
        };
        let out = ctrd.run_entry(&plain, &id, &cgroup, *at == At::TtyEntry, options, script);
        assert!(
            out.status.success(),
            "ctr run ({script}) failed: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    for mut c in children {
        let _ = c.wait();
    }

    // Every attack's alert arrives; then the look-alikes have had as long.
    let expected: Vec<(usize, &str)> = CASES.iter().enumerate().map(|(i, c)| (i, c.rule)).collect();
    let settled = wait_for(Duration::from_secs(60), || {
        let alerts = read_alerts(&alerts_file);
        expected
            .iter()
            .all(|(i, rule)| fired_for(&alerts, &token(*i, true)).contains(*rule))
            .then_some(())
    });
    if settled.is_some() {
        std::thread::sleep(Duration::from_secs(3));
    }
    let alerts = read_alerts(&alerts_file);
    let mut report = BTreeMap::new();
    let mut failures = Vec::new();
    for (i, c) in CASES.iter().enumerate() {
        let fired = fired_for(&alerts, &token(i, true)).contains(c.rule);
        let quiet = !fired_for(&alerts, &token(i, false)).contains(c.rule);
        report.insert(c.rule, (fired, quiet));
        if !fired {
            failures.push(format!(
                "{} did not fire on its attack ({})",
                c.rule,
                token(i, true)
            ));
        }
        if !quiet {
            failures.push(format!(
                "{} fired on its look-alike ({})",
                c.rule,
                token(i, false)
            ));
        }
    }
    for (rule, (fired, quiet)) in &report {
        println!("{rule}: fired {fired}, look-alike quiet {quiet}");
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}\nalerts naming a token:\n{}\ndaemon log tail:\n{}",
        failures.len(),
        CASES.len(),
        failures.join("\n"),
        alerts
            .iter()
            .filter(|a| a.to_string().contains("zq"))
            .map(|a| format!("{} | {}", a["rule"], a["output"]))
            .collect::<Vec<_>>()
            .join("\n"),
        d.log()
            .lines()
            .rev()
            .take(40)
            .collect::<Vec<_>>()
            .join("\n")
    );
    let host: BTreeSet<&str> = CASES
        .iter()
        .filter(|c| matches!(c.attack.0, At::Host | At::HostNetns))
        .map(|c| c.rule)
        .collect();
    let container = CASES.len() - host.len();
    assert!(
        CASES.len() >= 45 && host.len() >= 10 && container >= 10,
        "{} rules: {} on the host, {container} in containers",
        CASES.len(),
        host.len()
    );
}
