/* SPDX-License-Identifier: Apache-2.0 */
/*
 * abi.h: the only definition of what crosses the kernel/user boundary.
 *
 * Everything the kernel programs (sensor.bpf.c) hand to the agent, and
 * everything the agent writes into the programs' maps, is declared here.
 * The Rust side (agent/src/sensor/abi.rs) mirrors these types and asserts
 * their sizes and field offsets at compile time; a unit test there reads
 * this file and checks that every EA_EVT_ and EA_CNT_ value matches.
 *
 * Rules for changing it:
 *   - Event type ids (EA_EVT_*) are never renumbered and never reused. A
 *     retired id stays reserved; a new event gets the next free number.
 *   - Records only grow at the end of the data area; fixed parts change
 *     only together with EA_ABI_VERSION (the loader refuses a mismatch).
 *   - Integers are in the host's byte order, except where a field says
 *     "network order".
 */
#ifndef EA_ABI_H
#define EA_ABI_H

/* Bumped when a fixed layout below changes. The agent embeds the object
 * built from this tree, so the two cannot disagree at run time; the number
 * tells readers of recorded data which layout they hold. */
#define EA_ABI_VERSION 2

/* ---- event type ids (stable) ------------------------------------------- */
#define EA_EVT_LOSS 1          /* arg0 = records this CPU lost since its last loss record */
#define EA_EVT_EXECVE 2
#define EA_EVT_EXECVEAT 3
#define EA_EVT_CLONE 4
#define EA_EVT_CLONE3 5
#define EA_EVT_FORK 6
#define EA_EVT_VFORK 7
#define EA_EVT_PROCEXIT 8
#define EA_EVT_OPEN 9
#define EA_EVT_OPENAT 10
#define EA_EVT_OPENAT2 11
#define EA_EVT_CREAT 12
#define EA_EVT_CONNECT 13
#define EA_EVT_ACCEPT 14
#define EA_EVT_ACCEPT4 15
#define EA_EVT_PTRACE 16
#define EA_EVT_SETUID 17
#define EA_EVT_SETGID 18
#define EA_EVT_SETREUID 19
#define EA_EVT_SETREGID 20
#define EA_EVT_SETRESUID 21
#define EA_EVT_SETRESGID 22
#define EA_EVT_INIT_MODULE 23
#define EA_EVT_FINIT_MODULE 24
#define EA_EVT_MEMFD_CREATE 25
#define EA_EVT_MOUNT 26
#define EA_EVT_UNLINK 27
#define EA_EVT_UNLINKAT 28
#define EA_EVT_RENAME 29
#define EA_EVT_RENAMEAT 30
#define EA_EVT_RENAMEAT2 31
#define EA_EVT_SYMLINK 32
#define EA_EVT_SYMLINKAT 33
#define EA_EVT_LINK 34
#define EA_EVT_LINKAT 35
#define EA_EVT_DUP 36
#define EA_EVT_DUP2 37
#define EA_EVT_DUP3 38
#define EA_EVT_SOCKET 39
#define EA_EVT_CHMOD 40
#define EA_EVT_FCHMOD 41
#define EA_EVT_FCHMODAT 42
#define EA_EVT_FCHMODAT2 43    /* becomes evt.type fchmodat (with its flags) */
#define EA_EVT_MKDIR 44
#define EA_EVT_MKDIRAT 45
#define EA_EVT_RMDIR 46
#define EA_EVT_SETNS 47
#define EA_EVT_UNSHARE 48
#define EA_EVT_BPF 49
#define EA_EVT_USERFAULTFD 50
#define EA_EVT_PRCTL 51
#define EA_EVT_SETSID 52
#define EA_EVT_SETPGID 53
#define EA_EVT_LISTEN 54
#define EA_EVT_SENDTO 55
#define EA_EVT_SENDMSG 56
#define EA_EVT_RECVFROM 57
#define EA_EVT_RECVMSG 58
#define EA_EVT_DNS 59          /* internal: a DNS answer for the agent's name cache, no evt.type */
#define EA_EVT_REFUSED 60      /* a BPF-LSM hook refused an exec or an open (not an evt.type) */
#define EA_EVT_MAX 61          /* one past the highest id; sizes per-type tables */

/* ---- per-CPU counters (index into the `ea_counters` map) ---------------- */
#define EA_CNT_SEEN 0          /* hook runs that could have produced a record */
#define EA_CNT_SENT 1          /* records written to the ring buffer */
#define EA_CNT_LOST 2          /* records the ring buffer had no room for */
#define EA_CNT_FILTERED_OWN 3  /* dropped: the agent's own process tree */
#define EA_CNT_FILTERED_COMM 4 /* dropped: comm in exclude_comms */
#define EA_CNT_FILTERED_OPEN 5 /* dropped: read-only open outside watch_open_prefixes */
#define EA_CNT_FILTERED_PATH 6 /* dropped: path below exclude_paths */
#define EA_CNT_KILLED 7        /* denied execs killed with SIGKILL */
#define EA_CNT_LOST_UNREPORTED 8 /* internal: losses not yet sent as EA_EVT_LOSS */
#define EA_CNT_FILTERED_CGROUP 9 /* dropped: task in a cgroup of exclude_cgroups */
#define EA_CNT_FILTERED_ARGS 10 /* dropped: arguments no rule reads (bpf map access, prctl
				 * queries, data to or from the peer a socket last named) */
#define EA_CNT_REFUSED_EXEC 11 /* execs refused by the BPF-LSM hook (deny_exec) */
#define EA_CNT_REFUSED_OPEN 12 /* opens refused by the BPF-LSM hook (deny_open) */
#define EA_CNT_MAX 13

/* ---- bounds ------------------------------------------------------------ */
#define EA_COMM_LEN 16
#define EA_NARG 16             /* integer slots per record */
#define EA_NSTR 8              /* string slots per record */
#define EA_DATA_MAX 8192       /* no string starts at or after this data offset (power of two) */
#define EA_STR_MAX 4096        /* one string (PATH_MAX); argv and the environment are cut here too */
#define EA_WALK_DEPTH 32       /* path components a dentry walk follows */
#define EA_LPM_DATA 128        /* bytes of a path a prefix map compares */
#define EA_SYSCALL_MAX 512     /* syscall numbers the `ea_syscalls` map covers */
#define EA_DNS_MAX 1232        /* bytes of a DNS message copied: the EDNS buffer size resolvers
				* advertise by default (DNS flag day 2020); a larger answer is
				* cut, and the records that fit are still read */
#define EA_DNS_PORT 53
#define EA_DENY_OPEN_RULES 64  /* deny_open rules at most */

/* ---- record header flags (ea_header.flags) ----------------------------- */
#define EA_F_TRUNCATED 0x1     /* some string was cut at its bound */
#define EA_F_KILLED 0x2        /* exec: the deny list matched; SIGKILL was sent */
#define EA_F_REFUSED 0x4       /* REFUSED: a BPF-LSM hook returned -EPERM */
/* Bits 8-15, one per string slot: (EA_F_STR_CUT << n) is set when string n
 * is not complete. A string read from memory was cut at EA_STR_MAX or at the
 * end of the data area (it holds the string's start); a path walked up from
 * a dentry stopped after EA_WALK_DEPTH steps before reaching the root (it
 * holds the path's last components). EA_F_TRUNCATED is set too. */
#define EA_F_STR_CUT 0x100

/* ---- exec flags (arg0 of exec records; Falco's EXE_* values) ------------ */
#define EA_EXE_WRITABLE 0x1
#define EA_EXE_UPPER_LAYER 0x2
#define EA_EXE_FROM_MEMFD 0x4
#define EA_EXE_LOWER_LAYER 0x8

/* ---- config flags (ea_config.flags) ------------------------------------ */
#define EA_CFG_DENY_EXEC 0x1   /* kill execs that match `ea_deny_exec` */
#define EA_CFG_EXCLUDE_CGROUPS 0x2 /* `ea_exclude_cgroups` has entries */
#define EA_CFG_DENY_OPEN 0x4   /* refuse opens that `ea_deny_open_inodes` protects (BPF-LSM) */

/* ---- deny lists (arg0 of EA_EVT_REFUSED records) ------------------------ */
#define EA_LIST_EXEC 1
#define EA_LIST_OPEN 2

/* ---- deny_open access (ea_deny_open_rule.access; the f_mode bits) -------- */
#define EA_ACCESS_READ 0x1     /* FMODE_READ */
#define EA_ACCESS_WRITE 0x2    /* FMODE_WRITE */

/* Seeds for the two deny-list hashes (FNV-1a 64 over the bytes). */
#define EA_DENY_SEED_PATH 0xcbf29ce484222325ULL
#define EA_DENY_SEED_NAME 0x84222325cbf29ce4ULL
#define EA_FNV_PRIME 0x100000001b3ULL

/* Key of `ea_deny_open_inodes` (a protected file or directory) and, with
 * `rule`, of `ea_deny_open_allow` (an executable a rule lets through).
 * Files are matched by inode, not by name, so every path to them counts
 * (bind mounts, a container's view). `dev` is the kernel's s_dev
 * (major << 20 | minor), not stat's encoding. */
struct ea_inode_key {
	__u32 dev;
	__u32 rule;          /* 0 in ea_deny_open_inodes */
	__u64 ino;
};

/* Value of `ea_deny_open_rules[rule]`. */
struct ea_deny_open_rule {
	__u32 access;        /* EA_ACCESS_* bits the rule refuses */
	__u32 has_allow;     /* 1 when some executables are let through */
};

/* A string in a record's data area: `off` bytes after the fixed part, `len`
 * bytes long, not counting the NUL that follows it. len 0 = absent or empty. */
struct ea_str {
	__u16 off;
	__u16 len;
};

/* Common to every record. 72 bytes. */
struct ea_header {
	__u16 type;          /* EA_EVT_* */
	__u16 flags;         /* EA_F_* */
	__u32 size;          /* bytes in the whole record: fixed part + data */
	__u64 ts_boot_ns;    /* bpf_ktime_get_boot_ns() */
	__u32 pid;           /* tgid of the caller */
	__u32 tid;           /* pid (thread id) of the caller */
	__u32 ppid;          /* tgid of real_parent */
	__u32 uid;           /* effective uid */
	__u32 gid;           /* effective gid */
	__u32 loginuid;      /* audit login uid; 0xffffffff = unset or unknown */
	__u64 cgroup_id;     /* cgroup v2 id (bpf_get_current_cgroup_id) */
	__s64 res;           /* syscall result; exec/fork/exit: 0 */
	char comm[EA_COMM_LEN];
};

/* The socket behind an fd (connect, accept, dup). 48 bytes. family 0 = none. */
struct ea_sock {
	__u16 family;        /* AF_INET, AF_INET6, AF_UNIX, ... */
	__u16 type;          /* SOCK_STREAM, SOCK_DGRAM, ... */
	__u16 proto;         /* IPPROTO_TCP, IPPROTO_UDP, ... */
	__u16 lport;         /* local port, host order */
	__u16 rport;         /* remote port, host order */
	__u8 state;          /* the kernel's sk_state (TCP_ESTABLISHED = 1 also for connected UDP) */
	__u8 _pad0;
	__u16 _pad[2];
	__u8 laddr[16];      /* local address, network order; IPv4 in bytes 0-3 */
	__u8 raddr[16];      /* remote address */
};

/*
 * One record. 280 bytes of fixed part, then `h.size - sizeof(struct
 * ea_record)` bytes of string data. What arg[] and str[] hold per type:
 *
 *   EXECVE/EXECVEAT  arg0 EA_EXE_* flags, arg1 tty (new_encode_dev), arg2
 *                    process start (boot ns), arg3 effective capabilities,
 *                    arg4 execveat flags, arg5 execveat dirfd, arg6 permitted
 *                    and arg7 inheritable capabilities, arg8/arg9 process ids
 *                    (below), arg10 the executable's inode number, arg11 its
 *                    ctime and arg12 its mtime (Unix ns);
 *                    str0 executable path (from mm->exe_file, relative to the
 *                    process's root), str1 argv (NUL-separated), str2 cwd,
 *                    str3 filename as passed to exec, str4 cgroup v2 leaf name,
 *                    str5 its parent's name, str6 the environment
 *                    (NUL-separated, cut at EA_STR_MAX)
 *                    A failed exec (res < 0) is sent from the syscall's exit
 *                    by the caller, whose image did not change: only str3,
 *                    arg4, arg5, arg8 and arg9 are filled.
 *   CLONE/CLONE3/FORK/VFORK  (sent by the parent) arg0 child tgid, arg1 clone
 *                    flags, arg8/arg9 the child's process ids; res child tgid
 *   PROCEXIT         arg0 task exit_code (wait status encoding)
 *   OPEN/OPENAT/OPENAT2/CREAT  arg0 flags, arg1 mode, arg2 dirfd, arg3
 *                    openat2 resolve; str0 path as passed, and for a
 *                    relative one str1 the directory it starts from (as
 *                    for CHMOD below); res fd or -errno
 *   CONNECT          arg0 fd; sock: remote from the caller's sockaddr, local
 *                    from the socket (state after the call); str0 unix
 *                    socket path
 *   ACCEPT/ACCEPT4   arg0 listening fd, arg1 accept4 flags; sock from the new
 *                    fd; str0 unix socket path; res new fd
 *   PTRACE           arg0 request, arg1 target pid
 *   SETUID/SETGID    arg0 id
 *   SETREUID/SETREGID  arg0 real, arg1 effective
 *   SETRESUID/SETRESGID  arg0 real, arg1 effective, arg2 saved
 *   INIT_MODULE      arg0 image length; str0 module parameters
 *   FINIT_MODULE     arg0 fd, arg1 flags; str0 module parameters, str1 path
 *                    of the file behind fd
 *   MEMFD_CREATE     arg0 flags; str0 name
 *   MOUNT            arg0 flags; str0 source, str1 target, str2 fstype
 *   UNLINK/UNLINKAT  arg0 dirfd, arg1 flags; str0 path
 *   RENAME/RENAMEAT/RENAMEAT2  arg0 olddirfd, arg1 newdirfd, arg2 flags;
 *                    str0 old path, str1 new path
 *   SYMLINK/SYMLINKAT  arg0 newdirfd; str0 target, str1 link path
 *   LINK/LINKAT      arg0 olddirfd, arg1 newdirfd, arg2 flags; str0 old
 *                    path, str1 new path
 *   DUP/DUP2/DUP3    arg0 oldfd, arg1 newfd, arg2 flags; sock of oldfd; str0
 *                    path of oldfd's file when it is not a socket. Only sent
 *                    when the new fd is 0, 1 or 2.
 *   SOCKET           arg0 domain, arg1 type (with flags), arg2 protocol
 *   CHMOD/FCHMOD/FCHMODAT/FCHMODAT2  arg0 mode, arg1 dirfd (fchmod: the fd;
 *                    chmod: AT_FDCWD), arg2 fchmodat2 flags; str0 path as
 *                    passed (fchmod: the path of the file behind the fd)
 *   MKDIR/MKDIRAT    arg0 mode, arg1 dirfd (mkdir: AT_FDCWD); str0 path
 *   RMDIR            arg1 AT_FDCWD; str0 path
 *                    For these, when str0 is relative, str1 is the directory
 *                    it starts from (dirfd's path, or the working directory).
 *   SETNS            arg0 fd, arg1 nstype; arg2-arg4 the caller's effective,
 *                    permitted and inheritable capabilities before the call
 *   UNSHARE          arg0 flags; arg2-arg4 capabilities as for SETNS
 *   BPF              arg0 cmd. Only the commands that create, load, pin or
 *                    attach objects are sent (EA_BPF_REPORTED_CMDS); map
 *                    reads and writes, the bulk of bpf() calls, are counted
 *                    in EA_CNT_FILTERED_ARGS.
 *   USERFAULTFD      arg0 flags
 *   PRCTL            arg0 option, arg1 arg2 as an integer; str0 the new name
 *                    for PR_SET_NAME. Only the options that change a
 *                    process's name (from its main thread), privileges or
 *                    tracing are sent
 *                    (ea_prctl_reported()); the rest are counted in
 *                    EA_CNT_FILTERED_ARGS.
 *   LISTEN           arg0 fd, arg1 backlog; sock from the fd
 *   SENDTO/SENDMSG/RECVFROM/RECVMSG  arg0 fd, arg1 flags; sock: local end
 *                    from the socket, remote end from the address the call
 *                    names; res bytes moved. Sent only for a socket that is
 *                    not connected, with an address, when that address is
 *                    not the one this fd last named (Falco's
 *                    fd.name_changed): the first datagram to or from each
 *                    new peer. The rest, the data path, stays in the
 *                    kernel (counted in EA_CNT_FILTERED_ARGS when the peer
 *                    is unchanged or the call failed).
 *   DNS              (internal: never an event) a DNS answer that a UDP socket
 *                    received from port 53, or sent from its own port 53 (a
 *                    resolver or DNS server on the node answering):
 *                    arg0 fd, arg1 1 when sent from port 53, 0 when received;
 *                    sock as for RECVFROM; str0 the message, its first
 *                    EA_DNS_MAX bytes. Only answers (QR set, RCODE 0, at least
 *                    one answer record) are sent; the agent learns from
 *                    them which host names the node resolved to which
 *                    addresses (fd.sip.name). Sent from the data calls'
 *                    exits, also on a connected socket (glibc's resolver
 *                    connects its socket), besides the call's own record.
 *   SETSID           arg8/arg9 the process's ids after the call
 *   SETPGID          arg0 pid, arg1 pgid as passed; arg8/arg9 the caller's
 *                    ids after the call
 *   REFUSED          arg0 EA_LIST_*, arg1 deny_open rule index, arg2 the
 *                    open's EA_ACCESS_* bits; res -EPERM. EXEC: str0 the
 *                    refused executable's path, str3 the filename given to
 *                    exec. OPEN: str0 the refused file's path. Both: the
 *                    header is the caller's (before the exec).
 *   LOSS             arg0 number of records lost
 * Process ids (exec, fork, setsid, setpgid): arg8 = vpid | vpgid << 32 (in the
 * process's own pid namespace; vpgid 0 when the group leader is outside
 * it), arg9 = sid | pgid << 32 (as the host sees them).
 * Unused arg/str slots are zero.
 */
struct ea_record {
	struct ea_header h;
	__s64 arg[EA_NARG];
	struct ea_str str[EA_NSTR];
	struct ea_sock sock;
};

/* bpf() commands sent as BPF records, a bit per cmd: BPF_MAP_CREATE (0),
 * BPF_PROG_LOAD (5), BPF_OBJ_PIN (6), BPF_PROG_ATTACH (8), BPF_PROG_DETACH
 * (9), BPF_RAW_TRACEPOINT_OPEN (17), BPF_BTF_LOAD (18), BPF_LINK_CREATE
 * (28), BPF_LINK_UPDATE (29), BPF_ENABLE_STATS (32), BPF_ITER_CREATE (33),
 * BPF_LINK_DETACH (34), BPF_PROG_BIND_MAP (35), BPF_TOKEN_CREATE (36). */
#define EA_BPF_REPORTED_CMDS 0x1f30060361ULL

/* The `ea_config` map's only entry. */
struct ea_config {
	__u32 flags;         /* EA_CFG_* */
	/* Wake the reader once this many bytes wait in the ring buffer; below
	 * that it polls on its own (every EA_POLL_MS). Waking on every record
	 * costs more than the record. 0 = wake on every record. */
	__u32 wakeup_bytes;
	/* EA_ACCESS_* bits some deny_open rule refuses (a cheap first test). */
	__u32 deny_open_access;
	__u32 _pad;
};

/* How often the reader drains the ring buffer without a wakeup (ms). */
#define EA_POLL_MS 50

/* Key of the `ea_open_prefixes` and `ea_exclude_paths` LPM maps: a path
 * prefix, prefixlen in bits. Stored with a trailing '/' so that "/etc"
 * matches "/etc/passwd" and not "/etcd". */
struct ea_lpm_key {
	__u32 prefixlen;
	__u8 data[EA_LPM_DATA];
};

/* The `ea_syscalls` array maps a syscall number (this architecture's) to
 * the __u32 EA_EVT_* id it produces; 0 = not hooked. The agent fills it, so
 * one object serves every architecture. */

/* The Rust mirror asserts the same numbers. */
_Static_assert(sizeof(struct ea_header) == 72, "ea_header is 72 bytes");
_Static_assert(__builtin_offsetof(struct ea_header, ts_boot_ns) == 8, "ea_header.ts_boot_ns");
_Static_assert(__builtin_offsetof(struct ea_header, cgroup_id) == 40, "ea_header.cgroup_id");
_Static_assert(__builtin_offsetof(struct ea_header, res) == 48, "ea_header.res");
_Static_assert(__builtin_offsetof(struct ea_header, comm) == 56, "ea_header.comm");
_Static_assert(sizeof(struct ea_sock) == 48, "ea_sock is 48 bytes");
_Static_assert(__builtin_offsetof(struct ea_sock, state) == 10, "ea_sock.state");
_Static_assert(__builtin_offsetof(struct ea_sock, laddr) == 16, "ea_sock.laddr");
_Static_assert(sizeof(struct ea_record) == 280, "ea_record is 280 bytes");
_Static_assert(__builtin_offsetof(struct ea_record, arg) == 72, "ea_record.arg");
_Static_assert(__builtin_offsetof(struct ea_record, str) == 200, "ea_record.str");
_Static_assert(__builtin_offsetof(struct ea_record, sock) == 232, "ea_record.sock");
_Static_assert(sizeof(struct ea_lpm_key) == 4 + EA_LPM_DATA, "ea_lpm_key is packed");
_Static_assert(sizeof(struct ea_inode_key) == 16, "ea_inode_key is 16 bytes");
_Static_assert(sizeof(struct ea_deny_open_rule) == 8, "ea_deny_open_rule is 8 bytes");

#endif /* EA_ABI_H */
