// SPDX-License-Identifier: GPL-2.0
/*
 * sensor.bpf.c: the edge-agent's kernel programs.
 *
 * Turns process, file, network and privilege activity into records
 * (abi.h) on one ring buffer. Filters in the kernel what rules cannot use:
 * the agent's own process tree, excluded comms, read-only opens outside
 * the watched prefixes, excluded paths. Counts every record it sees, sends,
 * drops and loses, per CPU. Optionally kills a denied exec with SIGKILL
 * before the new image runs.
 *
 * Hooks, all tracepoints (no kprobes, fentry or LSM: the target kernels may
 * lack them):
 *   raw_tracepoint/sched_process_exec|fork|exit   process life cycle
 *   tracepoint/syscalls/sys_enter_*                 ea_sys_enter, generic:
 *                                                   remembers the arguments
 *   tracepoint/syscalls/sys_exit_*                  ea_sys_exit_{file,net,misc,proc}:
 *                                                   build the record with the result
 * The agent decides which syscalls are hooked: it fills `ea_syscalls`
 * (syscall number -> EA_EVT_*) for the running architecture.
 *
 * Optional BPF-LSM hooks (only where the kernel runs the bpf LSM; loaded
 * and attached separately, so the rest works without them):
 *   lsm/bprm_check_security   refuses a denied exec (deny_exec) before it
 *                             happens: the caller gets EPERM
 *   lsm/file_open             refuse opens and file creation below the
 *   lsm/inode_create          protected paths (deny_open)
 *
 * Never sleeps and never writes user memory. It changes what a syscall does
 * only when asked to: the opt-in SIGKILL of a denied exec where BPF-LSM is
 * missing, and the opt-in refusals of the LSM hooks.
 */
#include "kernel.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include "abi.h"

char LICENSE[] SEC("license") = "GPL";

/* Strings start only below EA_DATA_MAX; one string is at most EA_STR_MAX,
 * a path component at most EA_NAME_MAX, so the data area is twice as large
 * and no write can leave it. */
#define EA_DATA_MASK (EA_DATA_MAX - 1)
#define EA_BUF_MASK (2 * EA_DATA_MAX - 1)

/* `v & mask`, done where the verifier sees it: clang drops a mask it can
 * prove redundant, and the verifier then loses the bound. */
#define BOUND(v, mask)                                              \
	({                                                          \
		__u64 __v = (v);                                    \
		asm volatile("%0 &= %1" : "+r"(__v) : "i"(mask));   \
		__v;                                                \
	})
#define EA_NAME_MAX 256
#define EA_SOCKADDR_MAX 112
/* Bytes of a path the deny-list hash covers (the agent refuses longer entries). */
#define EA_DENY_PATH_MAX 256
/* Pid namespaces nest at most 32 deep (MAX_PID_NS_LEVEL). */
#define EA_PID_LEVELS 32

struct ea_scratch {
	struct ea_record rec;
	char data[2 * EA_DATA_MAX];
	__u64 names[EA_WALK_DEPTH];
	struct ea_lpm_key key;
	__u8 sockaddr[EA_SOCKADDR_MAX];
	__u32 hide;
};

/* What sys_enter remembers for sys_exit (per thread). */
struct ea_pending {
	__u32 type;
	__u32 watch;         /* data calls: EA_WATCH_* */
	__u64 args[6];
};

/* What a data call (sendto, recvmsg, ...) is kept for. */
#define EA_WATCH_PEER 0x1 /* a datagram to or from a peer this fd has not named */
#define EA_WATCH_DNS 0x2  /* maybe a DNS answer: from port 53, or sent from it */

#define SOCK_DGRAM 2

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 8 << 20); /* the agent sets ring_buffer_bytes */
} ea_events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, EA_CNT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} ea_counters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct ea_scratch);
} ea_scratch SEC(".maps");

/* Threads inside a hooked syscall. LRU, so a thread killed mid-syscall
 * cannot leak an entry. 8192 threads in hooked syscalls at once is far
 * beyond an edge node's load. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 8192);
	__type(key, __u64);
	__type(value, struct ea_pending);
} ea_pending SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, EA_SYSCALL_MAX);
	__type(key, __u32);
	__type(value, __u32);
} ea_syscalls SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct ea_config);
} ea_config SEC(".maps");

/* The agent and its descendants (tgids). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u32);
	__type(value, __u8);
} ea_own_tgids SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 256);
	__type(key, char[EA_COMM_LEN]);
	__type(value, __u8);
} ea_exclude_comms SEC(".maps");

/* cgroup v2 ids of the cgroups in exclude_cgroups and every cgroup below
 * them (user space walks the subtrees and keeps this current). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u64);
	__type(value, __u8);
} ea_exclude_cgroups SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 256);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct ea_lpm_key);
	__type(value, __u8);
} ea_open_prefixes SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 256);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct ea_lpm_key);
	__type(value, __u8);
} ea_exclude_paths SEC(".maps");

/* The peer each socket fd last sent to or received from, for the data
 * calls (sendto, recvfrom, ...): only a new peer makes a record. Keyed by
 * tgid << 32 | fd; the socket pointer tells a reused fd number from the
 * old socket. LRU: a closed fd's entry ages out, no close hook needed. */
struct ea_peer {
	__u64 sk;
	__u16 family;
	__u16 port;
	__u32 _pad;
	__u8 addr[16];
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 8192);
	__type(key, __u64);
	__type(value, struct ea_peer);
} ea_peers SEC(".maps");

/* FNV-1a hashes of denied executable paths (EA_DENY_SEED_PATH) and names
 * (EA_DENY_SEED_NAME). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u64);
	__type(value, __u8);
} ea_deny_exec SEC(".maps");

/* The inodes of deny_exec entries given as full paths (rule 0): a hard
 * link, a bind mount or a path too deep to read back names the same file. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 512);
	__type(key, struct ea_inode_key);
	__type(value, __u8);
} ea_deny_exec_inodes SEC(".maps");

/* deny_open: the protected files and directories (inode -> rule index),
 * what each rule refuses, and the executables each rule lets through
 * (keyed by inode and rule). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, EA_DENY_OPEN_RULES);
	__type(key, struct ea_inode_key);
	__type(value, __u32);
} ea_deny_open_inodes SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, EA_DENY_OPEN_RULES);
	__type(key, __u32);
	__type(value, struct ea_deny_open_rule);
} ea_deny_open_rules SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, struct ea_inode_key);
	__type(value, __u8);
} ea_deny_open_allow SEC(".maps");

/* ---- small helpers ------------------------------------------------------ */

static __always_inline void count(__u32 idx)
{
	__u64 *v = bpf_map_lookup_elem(&ea_counters, &idx);
	if (v)
		__sync_fetch_and_add(v, 1);
}

static __always_inline struct ea_scratch *scratch(void)
{
	__u32 zero = 0;
	return bpf_map_lookup_elem(&ea_scratch, &zero);
}

static __always_inline int is_own(__u32 tgid)
{
	return bpf_map_lookup_elem(&ea_own_tgids, &tgid) != 0;
}

static __always_inline int comm_excluded(void)
{
	char comm[EA_COMM_LEN] = {};
	bpf_get_current_comm(comm, sizeof(comm));
	return bpf_map_lookup_elem(&ea_exclude_comms, comm) != 0;
}

static __always_inline __u32 config_flags(void)
{
	__u32 zero = 0;
	struct ea_config *c = bpf_map_lookup_elem(&ea_config, &zero);
	return c ? c->flags : 0;
}

/* Excluded by name or by cgroup (counted); the current task. */
static __always_inline int excluded(void)
{
	if (comm_excluded()) {
		count(EA_CNT_FILTERED_COMM);
		return 1;
	}
	if (config_flags() & EA_CFG_EXCLUDE_CGROUPS) {
		__u64 cg = bpf_get_current_cgroup_id();
		if (bpf_map_lookup_elem(&ea_exclude_cgroups, &cg)) {
			count(EA_CNT_FILTERED_CGROUP);
			return 1;
		}
	}
	return 0;
}

/* Wake the reader only when a batch has built up, or for a kill (the
 * reader polls every EA_POLL_MS anyway). */
static __always_inline __u64 wakeup_flags(__u16 rec_flags)
{
	__u32 zero = 0;
	struct ea_config *c = bpf_map_lookup_elem(&ea_config, &zero);
	if (!c || !c->wakeup_bytes || (rec_flags & (EA_F_KILLED | EA_F_REFUSED)))
		return 0;
	if (bpf_ringbuf_query(&ea_events, BPF_RB_AVAIL_DATA) >= c->wakeup_bytes)
		return BPF_RB_FORCE_WAKEUP;
	return BPF_RB_NO_WAKEUP;
}

/* The common filters. Returns nonzero (and counts why) when the event of
 * the current task must not be sent. */
static __always_inline int filtered(__u32 tgid)
{
	if (is_own(tgid)) {
		count(EA_CNT_FILTERED_OWN);
		return 1;
	}
	return excluded();
}

static __always_inline void fill_header(struct ea_record *r, __u16 type,
					 struct task_struct *task)
{
	__u64 id = bpf_get_current_pid_tgid();
	const struct cred *cred = BPF_CORE_READ(task, cred);

	r->h.type = type;
	r->h.flags = 0;
	r->h.size = 0;
	r->h.ts_boot_ns = bpf_ktime_get_boot_ns();
	r->h.pid = id >> 32;
	r->h.tid = (__u32)id;
	r->h.ppid = BPF_CORE_READ(task, real_parent, tgid);
	r->h.uid = 0;
	r->h.gid = 0;
	bpf_core_read(&r->h.uid, sizeof(__u32), &cred->euid);
	bpf_core_read(&r->h.gid, sizeof(__u32), &cred->egid);
	r->h.loginuid = 0xffffffff;
	if (bpf_core_field_exists(task->loginuid))
		bpf_core_read(&r->h.loginuid, sizeof(__u32), &task->loginuid);
	r->h.cgroup_id = bpf_get_current_cgroup_id();
	r->h.res = 0;
	bpf_get_current_comm(r->h.comm, sizeof(r->h.comm));
	__builtin_memset(r->arg, 0, sizeof(r->arg));
	__builtin_memset(r->str, 0, sizeof(r->str));
	__builtin_memset(&r->sock, 0, sizeof(r->sock));
}

/* Send the record in `s` with `pos` bytes of data. A record the ring has no
 * room for is counted as lost, and reported by a LOSS record before the
 * next record this CPU manages to send. */
static __always_inline void submit(struct ea_scratch *s, __u32 pos)
{
	__u32 idx = EA_CNT_LOST_UNREPORTED;
	__u64 *unreported = bpf_map_lookup_elem(&ea_counters, &idx);

	if (unreported && *unreported) {
		/* Reserved in the ring rather than built on the stack: a record
		 * is more than half of the 512-byte BPF stack. */
		struct ea_record *loss = bpf_ringbuf_reserve(&ea_events, sizeof(*loss), 0);
		if (loss) {
			__builtin_memset(loss, 0, sizeof(*loss));
			loss->h.type = EA_EVT_LOSS;
			loss->h.size = sizeof(*loss);
			loss->h.ts_boot_ns = bpf_ktime_get_boot_ns();
			loss->arg[0] = *unreported;
			bpf_ringbuf_submit(loss, 0);
			*unreported = 0;
		}
	}

	__u64 size = sizeof(struct ea_record) + BOUND(pos, EA_BUF_MASK);
	s->rec.h.size = size;
	if (bpf_ringbuf_output(&ea_events, &s->rec, size, wakeup_flags(s->rec.h.flags)) == 0) {
		count(EA_CNT_SENT);
	} else {
		count(EA_CNT_LOST);
		if (unreported)
			__sync_fetch_and_add(unreported, 1);
	}
}

/* ---- strings into the data area ---------------------------------------- */

/*
 * `v`, with its range hidden from the verifier: it reads back an unknown
 * value from map memory. Offsets into the data area are bounded by checks
 * and masks anyway; hiding their exact range keeps the verifier from
 * tracking every possible combination of earlier string lengths, which
 * otherwise multiplies its states past its limit in the loops below.
 */
static __always_inline __u32 hide(struct ea_scratch *s, __u32 v)
{
	*(volatile __u32 *)&s->hide = v;
	return *(volatile __u32 *)&s->hide;
}

/* String `slot` is not complete (see EA_F_STR_CUT). */
static __always_inline void cut(struct ea_scratch *s, int slot)
{
	s->rec.h.flags |= EA_F_TRUNCATED | (EA_F_STR_CUT << slot);
}

/* Record string `slot` as the n bytes (NUL included) just read at `pos`;
 * returns the next free position. */
static __always_inline __u32 str_read(struct ea_scratch *s, int slot, __u32 pos, long n)
{
	if (n <= 0)
		return pos;
	if (n >= EA_STR_MAX)
		cut(s, slot);
	s->rec.str[slot].off = pos;
	s->rec.str[slot].len = n - 1;
	return pos + n;
}

static __always_inline __u32 put_user_str(struct ea_scratch *s, int slot,
					  const void *uptr, __u32 pos)
{
	pos = hide(s, pos);
	if (!uptr)
		return pos;
	if (pos >= EA_DATA_MAX) {
		cut(s, slot);
		return pos;
	}
	return str_read(s, slot, pos,
			bpf_probe_read_user_str(&s->data[BOUND(pos, EA_DATA_MASK)], EA_STR_MAX, uptr));
}

static __always_inline __u32 put_kernel_str(struct ea_scratch *s, int slot,
					    const void *kptr, __u32 pos)
{
	pos = hide(s, pos);
	if (!kptr)
		return pos;
	if (pos >= EA_DATA_MAX) {
		cut(s, slot);
		return pos;
	}
	return str_read(s, slot, pos,
			bpf_probe_read_kernel_str(&s->data[BOUND(pos, EA_DATA_MASK)], EA_STR_MAX, kptr));
}

/*
 * The path of `dentry` on `vfsmnt`, as seen from `root` (the task's root,
 * so a container's paths are relative to the container), written forward
 * ("/usr/bin/true") at `pos`. Walks up at most EA_WALK_DEPTH steps (a step
 * is a component or a mount crossing), then writes the components in order.
 *
 * Both loops are written so that every iteration reaches the next one in a
 * single verifier state: the components are kept by iteration number (0 for
 * a mount crossing) instead of a running count, and the write advances
 * `pos` arithmetically. A counter or a branch there makes the verifier's
 * work grow exponentially with the depth.
 */
static __always_inline __u32 put_path(struct ea_scratch *s, int slot, struct dentry *dentry,
				      struct vfsmount *vfsmnt, struct path *root, __u32 pos)
{
	struct dentry *root_dentry = BPF_CORE_READ(root, dentry);
	struct vfsmount *root_mnt = BPF_CORE_READ(root, mnt);
	__u64 mnt_off = bpf_core_field_offset(struct mount, mnt);
	struct mount *mnt = (struct mount *)((char *)vfsmnt - mnt_off);
	int complete = 0;

	if (!dentry)
		return pos;
	if (pos >= EA_DATA_MAX) {
		cut(s, slot);
		return pos;
	}

	__builtin_memset(s->names, 0, sizeof(s->names));
	for (int i = 0; i < EA_WALK_DEPTH; i++) {
		if (dentry == root_dentry && vfsmnt == root_mnt) {
			complete = 1;
			break;
		}
		struct dentry *mnt_root = BPF_CORE_READ(vfsmnt, mnt_root);
		if (dentry == mnt_root) {
			struct mount *parent = BPF_CORE_READ(mnt, mnt_parent);
			if (parent == mnt || !parent) {
				complete = 1;
				break;
			}
			dentry = BPF_CORE_READ(mnt, mnt_mountpoint);
			mnt = parent;
			vfsmnt = (struct vfsmount *)((char *)parent + mnt_off);
			continue;
		}
		struct dentry *up = BPF_CORE_READ(dentry, d_parent);
		if (up == dentry || !up) {
			complete = 1;
			break;
		}
		s->names[i] = (__u64)BPF_CORE_READ(dentry, d_name.name);
		dentry = up;
	}
	if (!complete)
		cut(s, slot);

	__u32 start = hide(s, pos);
	pos = start;
	for (int i = EA_WALK_DEPTH - 1; i >= 0; i--) {
		pos = hide(s, pos);
		if (pos >= EA_DATA_MAX) {
			cut(s, slot);
			break;
		}
		if (!s->names[i])
			continue;
		/* '/' then the name; a name that cannot be read leaves pos
		 * where it was, so the '/' is overwritten. */
		long r = bpf_probe_read_kernel_str(&s->data[BOUND(pos + 1, EA_BUF_MASK)],
						   EA_NAME_MAX, (const void *)s->names[i]);
		s->data[BOUND(pos, EA_DATA_MASK)] = '/';
		pos += r & ~(r >> 63);
	}
	if (pos == start) {
		s->data[BOUND(pos, EA_DATA_MASK)] = '/';
		pos++;
	}
	s->data[BOUND(pos, EA_BUF_MASK)] = 0;
	s->rec.str[slot].off = start;
	s->rec.str[slot].len = pos - start;
	return pos + 1;
}

static __always_inline __u32 put_file_path(struct ea_scratch *s, int slot, struct file *f,
					   struct task_struct *task, __u32 pos)
{
	if (!f)
		return pos;
	struct fs_struct *fs = BPF_CORE_READ(task, fs);
	return put_path(s, slot, BPF_CORE_READ(f, f_path.dentry), BPF_CORE_READ(f, f_path.mnt),
			&fs->root, pos);
}

/* The file behind `fd` in `task`, or NULL. */
static __always_inline struct file *fd_file(struct task_struct *task, __u64 fd)
{
	struct fdtable *fdt = BPF_CORE_READ(task, files, fdt);
	unsigned int max = BPF_CORE_READ(fdt, max_fds);
	struct file **fds = BPF_CORE_READ(fdt, fd);
	struct file *f = 0;

	if (fd >= max)
		return 0;
	bpf_probe_read_kernel(&f, sizeof(f), &fds[fd]);
	return f;
}

/* Fill rec.sock from the socket behind `f`. Returns its family, 0 if `f`
 * is not a socket. A unix socket's bound path goes to string `slot`. */
static __always_inline int put_sock(struct ea_scratch *s, int slot, struct file *f, __u32 *pos)
{
	if (!f)
		return 0;
	unsigned short mode = BPF_CORE_READ(f, f_inode, i_mode);
	if ((mode & S_IFMT) != S_IFSOCK)
		return 0;
	struct socket *sock = BPF_CORE_READ(f, private_data);
	struct sock *sk = BPF_CORE_READ(sock, sk);
	if (!sk)
		return 0;
	__u16 family = BPF_CORE_READ(sk, __sk_common.skc_family);
	struct ea_sock *o = &s->rec.sock;
	o->family = family;
	o->type = BPF_CORE_READ(sk, sk_type);
	o->proto = BPF_CORE_READ(sk, sk_protocol);
	o->state = BPF_CORE_READ(sk, __sk_common.skc_state);
	if (family == AF_INET) {
		bpf_core_read(o->laddr, 4, &sk->__sk_common.skc_rcv_saddr);
		bpf_core_read(o->raddr, 4, &sk->__sk_common.skc_daddr);
		o->lport = BPF_CORE_READ(sk, __sk_common.skc_num);
		o->rport = bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport));
	} else if (family == AF_INET6) {
		bpf_core_read(o->laddr, 16, &sk->__sk_common.skc_v6_rcv_saddr);
		bpf_core_read(o->raddr, 16, &sk->__sk_common.skc_v6_daddr);
		o->lport = BPF_CORE_READ(sk, __sk_common.skc_num);
		o->rport = bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport));
	} else if (family == AF_UNIX) {
		struct unix_address *addr = BPF_CORE_READ((struct unix_sock *)sk, addr);
		if (addr && *pos < EA_DATA_MAX) {
			int len = BPF_CORE_READ(addr, len) - 2;
			if (len > 0) {
				if (len > 108)
					len = 108;
				__u32 p = *pos;
				/* name[] is a flexible array of sockaddr_un, whose
				 * sun_path follows the 2-byte family (uapi). */
				const char *path = (const char *)addr +
						   bpf_core_field_offset(struct unix_address, name) + 2;
				bpf_probe_read_kernel(&s->data[BOUND(p, EA_DATA_MASK)], 108, path);
				s->data[BOUND(p + len, EA_BUF_MASK)] = 0;
				s->rec.str[slot].off = p;
				s->rec.str[slot].len = len;
				*pos = p + len + 1;
			}
		}
	}
	return family;
}

/* For a relative path in string 0, the directory it is relative to into
 * string 1: `dirfd`'s path, or the working directory for AT_FDCWD. */
static __always_inline __u32 put_base_dir(struct ea_scratch *s, __s32 dirfd,
					  struct task_struct *task, __u32 pos)
{
	if (!s->rec.str[0].len || s->data[BOUND(s->rec.str[0].off, EA_DATA_MASK)] == '/')
		return pos;
	struct fs_struct *fs = BPF_CORE_READ(task, fs);
	if (dirfd == AT_FDCWD)
		return put_path(s, 1, BPF_CORE_READ(fs, pwd.dentry), BPF_CORE_READ(fs, pwd.mnt),
				&fs->root, pos);
	return put_file_path(s, 1, fd_file(task, (__u32)dirfd), task, pos);
}

/* The remote end from a caller's sockaddr (user memory, `alen` bytes) into
 * rec.sock; a unix socket's path into string 0. */
static __always_inline void put_peer(struct ea_scratch *s, __u64 uaddr, __u64 alen, __u32 *pos)
{
	if (alen > EA_SOCKADDR_MAX)
		alen = EA_SOCKADDR_MAX;
	if (alen < 2 || bpf_probe_read_user(s->sockaddr, alen, (void *)uaddr) != 0)
		return;
	__u16 family = *(__u16 *)&s->sockaddr[0];
	struct ea_sock *o = &s->rec.sock;
	if (family == AF_INET && alen >= 8) {
		o->family = family;
		o->rport = bpf_ntohs(*(__u16 *)&s->sockaddr[2]);
		__builtin_memcpy(o->raddr, &s->sockaddr[4], 4);
	} else if (family == AF_INET6 && alen >= 24) {
		o->family = family;
		o->rport = bpf_ntohs(*(__u16 *)&s->sockaddr[2]);
		__builtin_memcpy(o->raddr, &s->sockaddr[8], 16);
	} else if (family == AF_UNIX && *pos < EA_DATA_MAX) {
		o->family = family;
		__u32 p = *pos;
		__u32 plen = alen - 2;
		if (plen > 108)
			plen = 108;
		bpf_probe_read_kernel(&s->data[BOUND(p, EA_DATA_MASK)], 108, &s->sockaddr[2]);
		s->data[BOUND(p + plen, EA_BUF_MASK)] = 0;
		s->rec.str[0].off = p;
		s->rec.str[0].len = plen;
		*pos = p + plen + 1;
	}
}

/* Is the peer in rec.sock other than the one this fd (this socket) last
 * named? Remembers it either way. */
static __always_inline int peer_changed(struct ea_scratch *s, __u64 pid_tgid, __u32 fd, __u64 sk)
{
	__u64 key = (pid_tgid & 0xffffffff00000000ULL) | fd;
	struct ea_peer now = {};
	struct ea_sock *o = &s->rec.sock;

	now.sk = sk;
	now.family = o->family;
	now.port = o->rport;
	__builtin_memcpy(now.addr, o->raddr, sizeof(now.addr));
	if (o->family == AF_UNIX)
		bpf_probe_read_kernel(now.addr, sizeof(now.addr), &s->sockaddr[2]);
	struct ea_peer *last = bpf_map_lookup_elem(&ea_peers, &key);
	if (last && last->sk == now.sk && last->family == now.family && last->port == now.port &&
	    *(__u64 *)&last->addr[0] == *(__u64 *)&now.addr[0] &&
	    *(__u64 *)&last->addr[8] == *(__u64 *)&now.addr[8])
		return 0;
	bpf_map_update_elem(&ea_peers, &key, &now, BPF_ANY);
	return 1;
}

/* Is the path string in the data area at [off, off+len) below a prefix in
 * `map`? Only absolute paths are compared. */
static __always_inline int data_below(struct ea_scratch *s, void *map, __u32 off, __u32 len)
{
	if (len == 0 || s->data[BOUND(off, EA_DATA_MASK)] != '/')
		return 0;
	if (len > EA_LPM_DATA)
		len = EA_LPM_DATA;
	bpf_probe_read_kernel(s->key.data, EA_LPM_DATA, &s->data[BOUND(off, EA_DATA_MASK)]);
	s->key.prefixlen = len * 8;
	return bpf_map_lookup_elem(map, &s->key) != 0;
}

/* ---- process life cycle -------------------------------------------------- */

static __always_inline __u64 fnv(__u64 h, __u8 c)
{
	return (h ^ c) * EA_FNV_PRIME;
}

/* Deny-list check on a NUL-terminated path in the data area: its full path
 * hash and its base name hash. */
static __always_inline int denied(struct ea_scratch *s, __u32 off, __u32 len)
{
	__u64 path = EA_DENY_SEED_PATH, name = EA_DENY_SEED_NAME;

	if (len == 0 || len > EA_DENY_PATH_MAX)
		return 0;
	off = hide(s, off);
	for (int i = 0; i < EA_DENY_PATH_MAX; i++) {
		if (i >= len)
			break;
		__u8 c = s->data[BOUND(off + i, EA_BUF_MASK)];
		path = fnv(path, c);
		name = c == '/' ? EA_DENY_SEED_NAME : fnv(name, c);
	}
	if (s->data[BOUND(off, EA_DATA_MASK)] == '/' && bpf_map_lookup_elem(&ea_deny_exec, &path))
		return 1;
	return bpf_map_lookup_elem(&ea_deny_exec, &name) != 0;
}

/* Is the executable `exe` a denied file, by inode? */
static __always_inline int denied_inode(struct file *exe)
{
	struct ea_inode_key k = {};
	struct inode *inode = BPF_CORE_READ(exe, f_inode);

	k.dev = BPF_CORE_READ(inode, i_sb, s_dev);
	k.ino = BPF_CORE_READ(inode, i_ino);
	return bpf_map_lookup_elem(&ea_deny_exec_inodes, &k) != 0;
}

/* EA_EXE_* flags of the executable `f`: overlayfs layer, memfd. */
static __always_inline __s64 exe_flags(struct file *f)
{
	__s64 flags = 0;
	struct dentry *dentry = BPF_CORE_READ(f, f_path.dentry);
	struct inode *inode = BPF_CORE_READ(f, f_inode);

	if (BPF_CORE_READ(dentry, d_sb, s_magic) == OVERLAYFS_SUPER_MAGIC) {
		/* struct ovl_inode embeds the VFS inode and keeps the upper
		 * dentry right after it (since 4.13); the overlay module's
		 * own BTF may not be loaded, so step over struct inode. */
		struct dentry *upper = 0;
		bpf_probe_read_kernel(&upper, sizeof(upper),
				      (char *)inode + bpf_core_type_size(struct inode));
		if (upper && BPF_CORE_READ(upper, d_inode))
			flags |= EA_EXE_UPPER_LAYER;
		else
			flags |= EA_EXE_LOWER_LAYER;
	}
	if (BPF_CORE_READ(inode, i_nlink) == 0) {
		char prefix[8] = {};
		bpf_probe_read_kernel(prefix, 6, BPF_CORE_READ(dentry, d_name.name));
		if (prefix[0] == 'm' && prefix[1] == 'e' && prefix[2] == 'm' && prefix[3] == 'f' &&
		    prefix[4] == 'd' && prefix[5] == ':')
			flags |= EA_EXE_FROM_MEMFD;
	}
	return flags;
}

/* Controlling terminal as a device number (new_encode_dev), 0 = none. */
static __always_inline __s64 tty_dev(struct task_struct *task)
{
	struct tty_struct *tty = BPF_CORE_READ(task, signal, tty);
	if (!tty)
		return 0;
	__u32 major = BPF_CORE_READ(tty, driver, major);
	__u32 minor = BPF_CORE_READ(tty, driver, minor_start) + BPF_CORE_READ(tty, index);
	return (minor & 0xff) | (major << 8) | ((minor & ~0xffu) << 12);
}

static __always_inline __s64 start_time(struct task_struct *task)
{
	if (bpf_core_field_exists(task->start_boottime))
		return BPF_CORE_READ(task, start_boottime);
	return BPF_CORE_READ((struct task_struct___pre55 *)task, real_start_time);
}

/* The number of `pid` in the pid namespace at `level` (0 = the host's);
 * 0 when it has none there. */
static __always_inline __u32 pid_nr_at(struct pid *pid, unsigned int level)
{
	__u32 nr = 0;

	if (!pid || level > EA_PID_LEVELS || BPF_CORE_READ(pid, level) < level)
		return 0;
	__u64 off = bpf_core_field_offset(struct pid, numbers) +
		    (__u64)level * bpf_core_type_size(struct upid) +
		    bpf_core_field_offset(struct upid, nr);
	bpf_probe_read_kernel(&nr, sizeof(nr), (char *)pid + off);
	return nr;
}

/* arg8 and arg9 of exec, setsid and setpgid records (see abi.h). */
static __always_inline void put_ids(struct ea_scratch *s, struct task_struct *task)
{
	struct pid *tp = BPF_CORE_READ(task, group_leader, thread_pid);
	unsigned int level = BPF_CORE_READ(tp, level);
	struct signal_struct *sig = BPF_CORE_READ(task, signal);
	struct pid *pgrp = BPF_CORE_READ(sig, pids[PIDTYPE_PGID]);
	struct pid *sess = BPF_CORE_READ(sig, pids[PIDTYPE_SID]);
	__u64 vpgid = pid_nr_at(pgrp, level);
	__u64 pgid = pid_nr_at(pgrp, 0);

	s->rec.arg[8] = (__u64)pid_nr_at(tp, level) | vpgid << 32;
	s->rec.arg[9] = (__u64)pid_nr_at(sess, 0) | pgid << 32;
}

/* The caller's effective, permitted and inheritable capabilities into
 * out[0..2]. kernel_cap_t is 8 bytes on every kernel the sensor runs on. */
static __always_inline void read_caps(struct task_struct *task, __u64 *out)
{
	const struct cred *cred = BPF_CORE_READ(task, cred);
	bpf_core_read(&out[0], sizeof(__u64), &cred->cap_effective);
	bpf_core_read(&out[1], sizeof(__u64), &cred->cap_permitted);
	bpf_core_read(&out[2], sizeof(__u64), &cred->cap_inheritable);
}

#define NS_PER_SEC 1000000000LL
#define NSEC_MASK 0x3fffffff

/* arg10-arg12 of exec records: the executable's inode number, ctime and
 * mtime. The time fields moved three times (6.6, 6.7, 6.11); CO-RE picks
 * the layout the running kernel has. */
static __always_inline void put_exe_inode(struct ea_scratch *s, struct inode *inode)
{
	__s64 csec, msec;
	__s64 cns, mns;

	if (!inode)
		return;
	if (bpf_core_field_exists(inode->i_ctime_sec)) {
		csec = BPF_CORE_READ(inode, i_ctime_sec);
		cns = BPF_CORE_READ(inode, i_ctime_nsec);
		msec = BPF_CORE_READ(inode, i_mtime_sec);
		mns = BPF_CORE_READ(inode, i_mtime_nsec);
	} else if (bpf_core_field_exists(((struct inode___67 *)inode)->__i_mtime)) {
		struct inode___67 *i = (void *)inode;
		csec = BPF_CORE_READ(i, __i_ctime.tv_sec);
		cns = BPF_CORE_READ(i, __i_ctime.tv_nsec);
		msec = BPF_CORE_READ(i, __i_mtime.tv_sec);
		mns = BPF_CORE_READ(i, __i_mtime.tv_nsec);
	} else if (bpf_core_field_exists(((struct inode___66 *)inode)->__i_ctime)) {
		struct inode___66 *i = (void *)inode;
		csec = BPF_CORE_READ(i, __i_ctime.tv_sec);
		cns = BPF_CORE_READ(i, __i_ctime.tv_nsec);
		msec = BPF_CORE_READ(i, i_mtime.tv_sec);
		mns = BPF_CORE_READ(i, i_mtime.tv_nsec);
	} else {
		struct inode___pre66 *i = (void *)inode;
		csec = BPF_CORE_READ(i, i_ctime.tv_sec);
		cns = BPF_CORE_READ(i, i_ctime.tv_nsec);
		msec = BPF_CORE_READ(i, i_mtime.tv_sec);
		mns = BPF_CORE_READ(i, i_mtime.tv_nsec);
	}
	/* Since 6.13 the ctime's nanoseconds carry a flag in bit 31
	 * (multigrain timestamps); nanoseconds fit in 30 bits. */
	s->rec.arg[10] = BPF_CORE_READ(inode, i_ino);
	s->rec.arg[11] = csec * NS_PER_SEC + (cns & NSEC_MASK);
	s->rec.arg[12] = msec * NS_PER_SEC + (mns & NSEC_MASK);
}

/* A block of user memory [start, end) (argv, the environment: NUL-separated
 * strings) as string `slot`, cut at EA_STR_MAX. */
static __always_inline __u32 put_user_block(struct ea_scratch *s, int slot, unsigned long start,
					    unsigned long end, __u32 pos)
{
	__u64 len = end - start;

	if (end <= start)
		return pos;
	if (len > EA_STR_MAX) {
		len = EA_STR_MAX;
		cut(s, slot);
	}
	pos = hide(s, pos);
	if (pos >= EA_DATA_MAX) {
		cut(s, slot);
		return pos;
	}
	if (bpf_probe_read_user(&s->data[BOUND(pos, EA_DATA_MASK)], len, (void *)start) != 0)
		return pos;
	s->rec.str[slot].off = pos;
	s->rec.str[slot].len = len;
	pos += len;
	s->data[BOUND(pos, EA_BUF_MASK)] = 0;
	return pos + 1;
}

SEC("raw_tracepoint/sched_process_exec")
int ea_exec(struct bpf_raw_tracepoint_args *ctx)
{
	struct task_struct *task = (struct task_struct *)ctx->args[0];
	struct linux_binprm *bprm = (struct linux_binprm *)ctx->args[2];
	__u64 id = bpf_get_current_pid_tgid();
	__u32 tgid = id >> 32;
	struct ea_scratch *s;

	count(EA_CNT_SEEN);
	if (is_own(tgid)) {
		count(EA_CNT_FILTERED_OWN);
		return 0;
	}
	s = scratch();
	if (!s)
		return 0;

	fill_header(&s->rec, EA_EVT_EXECVE, task);
	struct ea_pending *pe = bpf_map_lookup_elem(&ea_pending, &id);
	if (pe) {
		if (pe->type == EA_EVT_EXECVEAT) {
			s->rec.h.type = EA_EVT_EXECVEAT;
			s->rec.arg[4] = pe->args[4];
			s->rec.arg[5] = (__s32)pe->args[0];
		}
		/* The exec succeeded: its syscall exit has nothing to report.
		 * Any entry under this id goes, even another syscall's: after a
		 * thread's exec the process has only that thread, which took
		 * the leader's id, and a killed leader's entry would otherwise
		 * meet this exec's exit. */
		bpf_map_delete_elem(&ea_pending, &id);
	}

	struct file *exe = BPF_CORE_READ(bprm, file);
	struct fs_struct *fs = BPF_CORE_READ(task, fs);
	__u32 pos = put_path(s, 0, BPF_CORE_READ(exe, f_path.dentry),
			     BPF_CORE_READ(exe, f_path.mnt), &fs->root, 0);
	__u32 fpos = pos;
	pos = put_kernel_str(s, 3, BPF_CORE_READ(bprm, filename), pos);

	int kill = 0;
	if (config_flags() & EA_CFG_DENY_EXEC) {
		kill = denied(s, s->rec.str[0].off, s->rec.str[0].len);
		if (!kill && s->rec.str[3].len)
			kill = denied(s, fpos, s->rec.str[3].len);
		if (!kill)
			kill = denied_inode(exe);
	}
	if (kill) {
		bpf_send_signal(SIGKILL);
		s->rec.h.flags |= EA_F_KILLED;
		count(EA_CNT_KILLED);
	} else if (excluded()) {
		return 0;
	}

	struct mm_struct *mm = BPF_CORE_READ(task, mm);
	pos = put_user_block(s, 1, BPF_CORE_READ(mm, arg_start), BPF_CORE_READ(mm, arg_end), pos);
	pos = put_path(s, 2, BPF_CORE_READ(fs, pwd.dentry), BPF_CORE_READ(fs, pwd.mnt),
		       &fs->root, pos);
	struct kernfs_node *kn = BPF_CORE_READ(task, cgroups, dfl_cgrp, kn);
	struct kernfs_node *parent_kn = 0;
	if (bpf_core_field_exists(((struct kernfs_node___new *)kn)->__parent))
		parent_kn = BPF_CORE_READ((struct kernfs_node___new *)kn, __parent);
	else
		parent_kn = BPF_CORE_READ((struct kernfs_node___old *)kn, parent);
	pos = put_kernel_str(s, 4, BPF_CORE_READ(kn, name), pos);
	if (parent_kn)
		pos = put_kernel_str(s, 5, BPF_CORE_READ(parent_kn, name), pos);

	/* Last: the environment is the string most often cut. */
	pos = put_user_block(s, 6, BPF_CORE_READ(mm, env_start), BPF_CORE_READ(mm, env_end), pos);

	s->rec.arg[0] = exe_flags(exe);
	s->rec.arg[1] = tty_dev(task);
	s->rec.arg[2] = start_time(task);
	__u64 caps[3];
	read_caps(task, caps);
	s->rec.arg[3] = caps[0];
	s->rec.arg[6] = caps[1];
	s->rec.arg[7] = caps[2];
	put_ids(s, task);
	put_exe_inode(s, BPF_CORE_READ(exe, f_inode));
	submit(s, pos);
	return 0;
}

SEC("raw_tracepoint/sched_process_fork")
int ea_fork(struct bpf_raw_tracepoint_args *ctx)
{
	struct task_struct *parent = (struct task_struct *)ctx->args[0];
	struct task_struct *child = (struct task_struct *)ctx->args[1];
	__u32 child_pid = BPF_CORE_READ(child, pid);
	__u32 child_tgid = BPF_CORE_READ(child, tgid);
	__u64 id = bpf_get_current_pid_tgid();
	__u32 tgid = id >> 32;
	struct ea_scratch *s;

	if (child_pid != child_tgid)
		return 0; /* a new thread, not a new process */
	count(EA_CNT_SEEN);
	if (is_own(tgid)) {
		__u8 one = 1;
		bpf_map_update_elem(&ea_own_tgids, &child_tgid, &one, BPF_ANY);
		count(EA_CNT_FILTERED_OWN);
		return 0;
	}
	if (excluded())
		return 0;
	s = scratch();
	if (!s)
		return 0;
	fill_header(&s->rec, EA_EVT_CLONE, parent);
	struct ea_pending *pe = bpf_map_lookup_elem(&ea_pending, &id);
	if (pe && (pe->type == EA_EVT_CLONE || pe->type == EA_EVT_CLONE3 ||
		   pe->type == EA_EVT_FORK || pe->type == EA_EVT_VFORK)) {
		s->rec.h.type = pe->type;
		s->rec.arg[1] = pe->args[0];
		bpf_map_delete_elem(&ea_pending, &id);
	}
	s->rec.arg[0] = child_tgid;
	s->rec.h.res = child_tgid;
	/* The child's own ids: its pid in a new pid namespace is not its parent's. */
	put_ids(s, child);
	submit(s, 0);
	return 0;
}

SEC("raw_tracepoint/sched_process_exit")
int ea_exit(struct bpf_raw_tracepoint_args *ctx)
{
	struct task_struct *task = (struct task_struct *)ctx->args[0];
	__u32 tgid = BPF_CORE_READ(task, tgid);
	struct ea_scratch *s;

	/* Only the last thread of a process ends the process. */
	if (BPF_CORE_READ(task, signal, live.counter) != 0)
		return 0;
	count(EA_CNT_SEEN);
	if (is_own(tgid)) {
		bpf_map_delete_elem(&ea_own_tgids, &tgid);
		count(EA_CNT_FILTERED_OWN);
		return 0;
	}
	if (excluded())
		return 0;
	s = scratch();
	if (!s)
		return 0;
	fill_header(&s->rec, EA_EVT_PROCEXIT, task);
	s->rec.arg[0] = BPF_CORE_READ(task, exit_code);
	submit(s, 0);
	return 0;
}

/* ---- BPF-LSM enforcement --------------------------------------------------
 * The agent loads these only where /sys/kernel/security/lsm lists bpf. Each
 * returns the previous LSM program's verdict when that already refused. */

SEC("lsm/bprm_check_security")
int ea_lsm_exec(__u64 *ctx)
{
	struct linux_binprm *bprm = (struct linux_binprm *)ctx[0];
	int ret = (int)ctx[1];
	struct ea_scratch *s;

	if (ret)
		return ret;
	if (!(config_flags() & EA_CFG_DENY_EXEC) || is_own(bpf_get_current_pid_tgid() >> 32))
		return 0;
	s = scratch();
	if (!s)
		return 0;
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	fill_header(&s->rec, EA_EVT_REFUSED, task);
	struct file *exe = BPF_CORE_READ(bprm, file);
	struct fs_struct *fs = BPF_CORE_READ(task, fs);
	__u32 pos = put_path(s, 0, BPF_CORE_READ(exe, f_path.dentry),
			     BPF_CORE_READ(exe, f_path.mnt), &fs->root, 0);
	__u32 fpos = pos;
	pos = put_kernel_str(s, 3, BPF_CORE_READ(bprm, filename), pos);
	if (!denied(s, s->rec.str[0].off, s->rec.str[0].len) &&
	    !(s->rec.str[3].len && denied(s, fpos, s->rec.str[3].len)) && !denied_inode(exe))
		return 0;
	s->rec.h.flags |= EA_F_REFUSED;
	s->rec.h.res = -EPERM;
	s->rec.arg[0] = EA_LIST_EXEC;
	count(EA_CNT_REFUSED_EXEC);
	submit(s, pos);
	return -EPERM;
}

/*
 * The first deny_open rule that refuses `access` to `dentry` (on `vfsmnt`,
 * NULL when unknown) for the current executable: index + 1, or 0. Every
 * protected directory above the file counts (walking up across mounts, at
 * most EA_WALK_DEPTH steps), and each of them must let the access through.
 * Matching is by inode, so bind mounts and a container's view of a
 * protected directory are covered too.
 */
static __always_inline int open_refused(struct dentry *dentry, struct vfsmount *vfsmnt,
					__u32 access)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct inode *exe_inode = BPF_CORE_READ(task, mm, exe_file, f_inode);
	struct ea_inode_key exe = {};
	__u64 mnt_off = bpf_core_field_offset(struct mount, mnt);
	struct mount *mnt = (struct mount *)((char *)vfsmnt - mnt_off);

	exe.dev = BPF_CORE_READ(exe_inode, i_sb, s_dev);
	exe.ino = BPF_CORE_READ(exe_inode, i_ino);
	for (int i = 0; i < EA_WALK_DEPTH; i++) {
		struct ea_inode_key k = {};
		k.dev = BPF_CORE_READ(dentry, d_sb, s_dev);
		k.ino = BPF_CORE_READ(dentry, d_inode, i_ino);
		__u32 *rule = bpf_map_lookup_elem(&ea_deny_open_inodes, &k);
		if (rule) {
			__u32 idx = *rule;
			struct ea_deny_open_rule *r = bpf_map_lookup_elem(&ea_deny_open_rules, &idx);
			if (r && (r->access & access)) {
				exe.rule = idx;
				if (!r->has_allow || !bpf_map_lookup_elem(&ea_deny_open_allow, &exe))
					return idx + 1;
			}
		}
		if (vfsmnt && dentry == BPF_CORE_READ(vfsmnt, mnt_root)) {
			struct mount *parent = BPF_CORE_READ(mnt, mnt_parent);
			if (parent == mnt || !parent)
				break;
			dentry = BPF_CORE_READ(mnt, mnt_mountpoint);
			mnt = parent;
			vfsmnt = (struct vfsmount *)((char *)parent + mnt_off);
			continue;
		}
		struct dentry *up = BPF_CORE_READ(dentry, d_parent);
		if (up == dentry || !up)
			break;
		dentry = up;
	}
	return 0;
}

/* The access bits some rule refuses (0 when deny_open is off). */
static __always_inline __u32 deny_open_access(void)
{
	__u32 zero = 0;
	struct ea_config *c = bpf_map_lookup_elem(&ea_config, &zero);
	if (!c || !(c->flags & EA_CFG_DENY_OPEN))
		return 0;
	return c->deny_open_access;
}

/* Send the REFUSED record for an open or a creation; returns -EPERM. */
static __always_inline int refuse_open(int refused, __u32 access, struct dentry *dentry,
				       struct vfsmount *vfsmnt)
{
	struct ea_scratch *s = scratch();
	if (!s)
		return -EPERM;
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	fill_header(&s->rec, EA_EVT_REFUSED, task);
	s->rec.h.flags |= EA_F_REFUSED;
	s->rec.h.res = -EPERM;
	s->rec.arg[0] = EA_LIST_OPEN;
	s->rec.arg[1] = refused - 1;
	s->rec.arg[2] = access;
	struct fs_struct *fs = BPF_CORE_READ(task, fs);
	__u32 pos = put_path(s, 0, dentry, vfsmnt, &fs->root, 0);
	count(EA_CNT_REFUSED_OPEN);
	submit(s, pos);
	return -EPERM;
}

SEC("lsm/file_open")
int ea_lsm_open(__u64 *ctx)
{
	struct file *file = (struct file *)ctx[0];
	int ret = (int)ctx[1];

	if (ret)
		return ret;
	__u32 access = BPF_CORE_READ(file, f_mode) & (EA_ACCESS_READ | EA_ACCESS_WRITE);
	if (!(access & deny_open_access()) || is_own(bpf_get_current_pid_tgid() >> 32))
		return 0;
	struct dentry *dentry = BPF_CORE_READ(file, f_path.dentry);
	struct vfsmount *vfsmnt = BPF_CORE_READ(file, f_path.mnt);
	int refused = open_refused(dentry, vfsmnt, access);
	if (!refused)
		return 0;
	return refuse_open(refused, access, dentry, vfsmnt);
}

/* A new file in a protected directory (open with O_CREAT, mknod): refused
 * before it exists, as a write. Only the directory's own file system is
 * walked (the hook has no mount). */
SEC("lsm/inode_create")
int ea_lsm_create(__u64 *ctx)
{
	struct dentry *dentry = (struct dentry *)ctx[1];
	int ret = (int)ctx[3];

	if (ret)
		return ret;
	if (!(deny_open_access() & EA_ACCESS_WRITE) || is_own(bpf_get_current_pid_tgid() >> 32))
		return 0;
	struct dentry *dir = BPF_CORE_READ(dentry, d_parent);
	int refused = open_refused(dir, 0, EA_ACCESS_WRITE);
	if (!refused)
		return 0;
	return refuse_open(refused, EA_ACCESS_WRITE, dentry, 0);
}

/* ---- syscalls ------------------------------------------------------------ */

/* The data calls that name a peer. */
static __always_inline int is_data(__u32 t)
{
	return t == EA_EVT_SENDTO || t == EA_EVT_SENDMSG || t == EA_EVT_RECVFROM ||
	       t == EA_EVT_RECVMSG;
}

static __always_inline int is_recv(__u32 t)
{
	return t == EA_EVT_RECVFROM || t == EA_EVT_RECVMSG;
}

/* What data call `t` on `fd` of the current task is kept for (EA_WATCH_*),
 * 0 for the data path. A socket that is not connected names a peer when
 * the call gives an address; a connected one names none (a connected
 * UDP socket too). UDP to or from port 53 may carry a DNS answer: what a
 * socket receives from a server's port 53 (glibc's resolver connects its
 * socket first), or what a DNS server on the node sends from its own. */
static __always_inline __u32 data_watch(__u32 t, __u64 fd, int has_addr)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct file *f = fd_file(task, fd);
	struct socket *sock = BPF_CORE_READ(f, private_data);
	struct sock *sk = BPF_CORE_READ(sock, sk);
	__u32 watch = 0;

	if (!sk)
		return 0;
	int connected = BPF_CORE_READ(sk, __sk_common.skc_state) == TCP_ESTABLISHED;
	if (has_addr && !connected)
		watch |= EA_WATCH_PEER;
	if (BPF_CORE_READ(sk, sk_type) == SOCK_DGRAM) {
		if (is_recv(t)) {
			if (connected ? bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport)) ==
						EA_DNS_PORT
				      : has_addr)
				watch |= EA_WATCH_DNS;
		} else if (BPF_CORE_READ(sk, __sk_common.skc_num) == EA_DNS_PORT) {
			watch |= EA_WATCH_DNS;
		}
	}
	return watch;
}

/* ---- DNS answers ---------------------------------------------------------- */

#define EA_DNS_MASK 2047 /* a power of two minus one above EA_DNS_MAX */
_Static_assert(EA_DNS_MAX <= EA_DNS_MASK, "EA_DNS_MASK covers EA_DNS_MAX");

/* Send the DNS message that data call `t` (arguments `a`, result `ret`)
 * moved as a DNS record (abi.h), if it is an answer with answer records.
 * The record in `s` already holds the call's header and socket. */
static __always_inline void put_dns(struct ea_scratch *s, __u32 t, __u64 *a, __s64 ret)
{
	__u64 buf = a[1], cap = a[2];
	__u8 hdr[12];

	if (t == EA_EVT_SENDMSG || t == EA_EVT_RECVMSG) {
		/* struct user_msghdr: msg_iov at 16; the message is in the
		 * first iovec (what resolvers use). */
		__u64 iov = 0, first[2] = {};
		bpf_probe_read_user(&iov, sizeof(iov), (char *)a[1] + 16);
		if (!iov || bpf_probe_read_user(first, sizeof(first), (void *)iov) != 0)
			return;
		buf = first[0];
		cap = first[1];
	}
	__u64 n = ret;
	if (n > cap)
		n = cap;
	if (n > EA_DNS_MAX)
		n = EA_DNS_MAX;
	/* An answer (QR), without error (RCODE 0), with answer records: NXDOMAIN
	 * answers to a pod's search-domain walk and queries stay here. */
	if (n < sizeof(hdr) || bpf_probe_read_user(hdr, sizeof(hdr), (void *)buf) != 0 ||
	    !(hdr[2] & 0x80) || (hdr[3] & 0x0f) || !(hdr[6] | hdr[7])) {
		count(EA_CNT_FILTERED_ARGS);
		return;
	}
	n = BOUND(n, EA_DNS_MASK);
	if (bpf_probe_read_user(s->data, n, (void *)buf) != 0)
		return;
	s->data[n] = 0;
	s->rec.h.type = EA_EVT_DNS;
	s->rec.h.flags = 0;
	s->rec.arg[1] = !is_recv(t);
	__builtin_memset(s->rec.str, 0, sizeof(s->rec.str));
	s->rec.str[0].off = 0;
	s->rec.str[0].len = n;
	submit(s, n + 1);
}

static __always_inline int is_open(__u32 t)
{
	return t == EA_EVT_OPEN || t == EA_EVT_OPENAT || t == EA_EVT_OPENAT2 || t == EA_EVT_CREAT;
}

/* Is the NUL-terminated path in `p` (`n` bytes with its NUL, as
 * bpf_probe_read_user_str counts) /proc/<...>/environ? A read-only open of
 * a process's environment is reported whatever watch_open_prefixes holds:
 * secrets live in environments, while the rest of /proc (which ps and top
 * read thousands of times a second) stays filtered. A path cut at
 * EA_LPM_DATA never matches. */
static __always_inline int proc_environ(const __u8 *p, long n)
{
	const char tail[8] = {'/', 'e', 'n', 'v', 'i', 'r', 'o', 'n'};
	/* "/proc/" + one character + "/environ" + NUL */
	if (n < 16 || n >= EA_LPM_DATA)
		return 0;
	if (p[0] != '/' || p[1] != 'p' || p[2] != 'r' || p[3] != 'o' || p[4] != 'c' || p[5] != '/')
		return 0;
	__u32 end = (__u32)n - 9;
#pragma unroll
	for (int i = 0; i < 8; i++)
		if (p[BOUND(end + i, EA_LPM_DATA - 1)] != tail[i])
			return 0;
	return 1;
}

/* bpf() commands worth a record (EA_BPF_REPORTED_CMDS in abi.h). */
static __always_inline int bpf_cmd_reported(__u64 cmd)
{
	return cmd < 64 && (EA_BPF_REPORTED_CMDS & (1ULL << cmd));
}

/* prctl() options worth a record: those that rename a process (its main
 * thread) or change its privileges, dumpability or tracer. Queries
 * (PR_GET_*) and the rest stay in the kernel. */
static __always_inline int prctl_reported(__u64 option, __u64 pid_tgid)
{
	switch (option) {
	case 15: /* PR_SET_NAME: a thread naming itself changes no process's name */
		return (__u32)pid_tgid == pid_tgid >> 32;
	case 4:          /* PR_SET_DUMPABLE */
	case 8:          /* PR_SET_KEEPCAPS */
	case 22:         /* PR_SET_SECCOMP */
	case 24:         /* PR_CAPBSET_DROP */
	case 28:         /* PR_SET_SECUREBITS */
	case 35:         /* PR_SET_MM */
	case 36:         /* PR_SET_CHILD_SUBREAPER */
	case 38:         /* PR_SET_NO_NEW_PRIVS */
	case 47:         /* PR_CAP_AMBIENT */
	case 0x59616d61: /* PR_SET_PTRACER */
		return 1;
	}
	return 0;
}

SEC("tracepoint/syscalls/sys_enter")
int ea_sys_enter(struct ea_sys_enter_ctx *ctx)
{
	__u32 nr = ctx->nr;
	__u32 *type = bpf_map_lookup_elem(&ea_syscalls, &nr);
	if (!type || !*type)
		return 0;
	__u32 t = *type;
	__u64 id = bpf_get_current_pid_tgid();
	struct ea_pending pe = {};

	pe.type = t;
	/* Each syscall's tracepoint record holds only its own arguments, and
	 * the kernel refuses to attach a program whose direct context reads go
	 * past the record (fork has none). Copy all six with a helper instead;
	 * the slots a syscall does not have are never used. */
	bpf_probe_read_kernel(pe.args, sizeof(pe.args), &ctx->args[0]);

	/* dup2/dup3 matter only onto stdin, stdout, stderr; skip before counting. */
	if ((t == EA_EVT_DUP2 || t == EA_EVT_DUP3) && pe.args[1] > 2)
		return 0;
	/* The data calls matter only when they name a peer, on a socket that
	 * is not connected, or may carry a DNS answer; skip the data path
	 * before counting. */
	if (t == EA_EVT_SENDMSG || t == EA_EVT_RECVMSG) {
		/* struct user_msghdr: msg_name at 0, msg_namelen at 8. */
		__u64 hdr[2] = {};
		bpf_probe_read_user(hdr, sizeof(hdr), (void *)pe.args[1]);
		pe.args[3] = pe.args[2];
		pe.args[4] = hdr[0];
		pe.args[5] = t == EA_EVT_SENDMSG ? (__u32)hdr[1] : pe.args[1];
	}
	if (is_data(t)) {
		pe.watch = data_watch(t, pe.args[0], pe.args[4] != 0);
		if (!pe.watch)
			return 0;
	}
	if (t == EA_EVT_CLONE3) {
		__u64 flags = 0;
		bpf_probe_read_user(&flags, sizeof(flags), (void *)pe.args[0]);
		pe.args[0] = flags;
	}
	if (t == EA_EVT_CLONE || t == EA_EVT_CLONE3 || t == EA_EVT_FORK || t == EA_EVT_VFORK ||
	    t == EA_EVT_EXECVE || t == EA_EVT_EXECVEAT) {
		/* Consumed by the sched hooks, which count and filter; a failed
		 * exec is counted and filtered at its exit. */
		bpf_map_update_elem(&ea_pending, &id, &pe, BPF_ANY);
		return 0;
	}

	count(EA_CNT_SEEN);
	if (filtered(id >> 32))
		return 0;

	if ((t == EA_EVT_BPF && !bpf_cmd_reported(pe.args[0])) ||
	    (t == EA_EVT_PRCTL && !prctl_reported(pe.args[0], id))) {
		count(EA_CNT_FILTERED_ARGS);
		return 0;
	}
	if (t == EA_EVT_SETNS || t == EA_EVT_UNSHARE)
		/* Before the call: unshare(CLONE_NEWUSER) hands the caller
		 * every capability in its new namespace. */
		read_caps((struct task_struct *)bpf_get_current_task(), &pe.args[2]);

	if (is_open(t)) {
		__u64 flags, path;
		if (t == EA_EVT_OPEN) {
			flags = pe.args[1];
			path = pe.args[0];
			pe.args[2] = pe.args[1];
			pe.args[1] = pe.args[0];
			pe.args[0] = (__u64)AT_FDCWD;
			pe.args[3] = pe.args[2];
		} else if (t == EA_EVT_CREAT) {
			flags = O_CREAT | 1 /* O_WRONLY */ | O_TRUNC;
			path = pe.args[0];
			pe.args[3] = pe.args[1];
			pe.args[2] = flags;
			pe.args[1] = pe.args[0];
			pe.args[0] = (__u64)AT_FDCWD;
		} else if (t == EA_EVT_OPENAT2) {
			__u64 how[3] = {};
			bpf_probe_read_user(how, sizeof(how), (void *)pe.args[2]);
			flags = how[0];
			path = pe.args[1];
			pe.args[2] = how[0];
			pe.args[3] = how[1];
			pe.args[4] = how[2];
		} else {
			flags = pe.args[2];
			path = pe.args[1];
			pe.args[4] = 0;
		}
		/* Normalised: args[0] dirfd, [1] path, [2] flags, [3] mode, [4] resolve. */
		struct ea_scratch *s = scratch();
		if (!s)
			return 0;
		long n = bpf_probe_read_user_str(s->key.data, EA_LPM_DATA, (void *)path);
		if (n > 1 && s->key.data[0] == '/') {
			s->key.prefixlen = (n - 1) * 8;
			int readonly = (flags & O_ACCMODE) == O_RDONLY &&
				       !(flags & (O_CREAT | O_TRUNC | O_TMPFILE));
			if (readonly && !bpf_map_lookup_elem(&ea_open_prefixes, &s->key) &&
			    !proc_environ(s->key.data, n)) {
				count(EA_CNT_FILTERED_OPEN);
				return 0;
			}
			if (bpf_map_lookup_elem(&ea_exclude_paths, &s->key)) {
				count(EA_CNT_FILTERED_PATH);
				return 0;
			}
		}
	}
	bpf_map_update_elem(&ea_pending, &id, &pe, BPF_ANY);
	return 0;
}

/* The pending entry of the current thread for a syscall of one of the
 * types `want` accepts; copied out and removed. */
static __always_inline int take_pending(__u64 id, struct ea_pending *out)
{
	struct ea_pending *pe = bpf_map_lookup_elem(&ea_pending, &id);
	if (!pe)
		return 0;
	__builtin_memcpy(out, pe, sizeof(*out));
	bpf_map_delete_elem(&ea_pending, &id);
	return 1;
}

SEC("tracepoint/syscalls/sys_exit_file")
int ea_sys_exit_file(struct ea_sys_exit_ctx *ctx)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct ea_pending pe;
	struct ea_scratch *s;
	__u32 pos = 0;

	if (!take_pending(id, &pe))
		return 0;
	__u32 t = pe.type;
	s = scratch();
	if (!s)
		return 0;
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	fill_header(&s->rec, t, task);
	s->rec.h.res = ctx->ret;
	__u64 *a = pe.args;

	if (is_open(t)) {
		s->rec.arg[0] = a[2];
		s->rec.arg[1] = a[3];
		s->rec.arg[2] = (__s32)a[0];
		s->rec.arg[3] = a[4];
		pos = put_user_str(s, 0, (void *)a[1], pos);
	} else if (t == EA_EVT_MEMFD_CREATE) {
		s->rec.arg[0] = a[1];
		pos = put_user_str(s, 0, (void *)a[0], pos);
	} else if (t == EA_EVT_INIT_MODULE) {
		s->rec.arg[0] = a[1];
		pos = put_user_str(s, 0, (void *)a[2], pos);
	} else if (t == EA_EVT_FINIT_MODULE) {
		s->rec.arg[0] = (__s32)a[0];
		s->rec.arg[1] = a[2];
		pos = put_user_str(s, 0, (void *)a[1], pos);
		pos = put_file_path(s, 1, fd_file(task, (__u32)a[0]), task, pos);
	} else if (t == EA_EVT_MOUNT) {
		s->rec.arg[0] = a[3];
		pos = put_user_str(s, 0, (void *)a[0], pos);
		pos = put_user_str(s, 1, (void *)a[1], pos);
		pos = put_user_str(s, 2, (void *)a[2], pos);
	} else if (t == EA_EVT_UNLINK) {
		s->rec.arg[0] = AT_FDCWD;
		pos = put_user_str(s, 0, (void *)a[0], pos);
	} else if (t == EA_EVT_UNLINKAT) {
		s->rec.arg[0] = (__s32)a[0];
		s->rec.arg[1] = a[2];
		pos = put_user_str(s, 0, (void *)a[1], pos);
	} else if (t == EA_EVT_RENAME || t == EA_EVT_LINK) {
		s->rec.arg[0] = AT_FDCWD;
		s->rec.arg[1] = AT_FDCWD;
		pos = put_user_str(s, 0, (void *)a[0], pos);
		pos = put_user_str(s, 1, (void *)a[1], pos);
	} else if (t == EA_EVT_RENAMEAT || t == EA_EVT_RENAMEAT2 || t == EA_EVT_LINKAT) {
		s->rec.arg[0] = (__s32)a[0];
		s->rec.arg[1] = (__s32)a[2];
		s->rec.arg[2] = t == EA_EVT_RENAMEAT ? 0 : a[4];
		pos = put_user_str(s, 0, (void *)a[1], pos);
		pos = put_user_str(s, 1, (void *)a[3], pos);
	} else if (t == EA_EVT_SYMLINK) {
		s->rec.arg[0] = AT_FDCWD;
		pos = put_user_str(s, 0, (void *)a[0], pos);
		pos = put_user_str(s, 1, (void *)a[1], pos);
	} else if (t == EA_EVT_SYMLINKAT) {
		s->rec.arg[0] = (__s32)a[1];
		pos = put_user_str(s, 0, (void *)a[0], pos);
		pos = put_user_str(s, 1, (void *)a[2], pos);
	} else if (t == EA_EVT_CHMOD || t == EA_EVT_MKDIR) {
		s->rec.arg[0] = (__u16)a[1];
		s->rec.arg[1] = AT_FDCWD;
		pos = put_user_str(s, 0, (void *)a[0], pos);
	} else if (t == EA_EVT_FCHMOD) {
		s->rec.arg[0] = (__u16)a[1];
		s->rec.arg[1] = (__s32)a[0];
		pos = put_file_path(s, 0, fd_file(task, (__u32)a[0]), task, pos);
	} else if (t == EA_EVT_FCHMODAT || t == EA_EVT_FCHMODAT2 || t == EA_EVT_MKDIRAT) {
		s->rec.arg[0] = (__u16)a[2];
		s->rec.arg[1] = (__s32)a[0];
		s->rec.arg[2] = t == EA_EVT_FCHMODAT2 ? a[3] : 0;
		pos = put_user_str(s, 0, (void *)a[1], pos);
	} else if (t == EA_EVT_RMDIR) {
		s->rec.arg[1] = AT_FDCWD;
		pos = put_user_str(s, 0, (void *)a[0], pos);
	} else {
		return 0;
	}

	/* Where a relative path starts, while the process and its fds still
	 * exist (user space may read /proc too late, after a chdir, or not at
	 * all for a directory deeper than PATH_MAX). One call site: the walk
	 * is inlined, and the verifier pays for every copy. */
	if (is_open(t) || t == EA_EVT_CHMOD || t == EA_EVT_FCHMODAT || t == EA_EVT_FCHMODAT2 ||
	    t == EA_EVT_MKDIR || t == EA_EVT_MKDIRAT || t == EA_EVT_RMDIR)
		pos = put_base_dir(s, (__s32)s->rec.arg[is_open(t) ? 2 : 1], task, pos);

	/* exclude_paths for the paths only known now (opens were checked at entry). */
	if (!is_open(t) && t != EA_EVT_MOUNT && t != EA_EVT_MEMFD_CREATE &&
	    t != EA_EVT_INIT_MODULE && s->rec.str[0].len) {
		__u32 off = s->rec.str[0].off;
		__u32 len = s->rec.str[0].len;
		if (t == EA_EVT_SYMLINK || t == EA_EVT_SYMLINKAT) {
			off = s->rec.str[1].off;
			len = s->rec.str[1].len;
		}
		if (data_below(s, &ea_exclude_paths, off, len)) {
			count(EA_CNT_FILTERED_PATH);
			return 0;
		}
	}
	submit(s, pos);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_net")
int ea_sys_exit_net(struct ea_sys_exit_ctx *ctx)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct ea_pending pe;
	struct ea_scratch *s;
	__u32 pos = 0;
	__s64 ret = ctx->ret;

	if (!take_pending(id, &pe))
		return 0;
	__u32 t = pe.type;
	__u64 *a = pe.args;
	if (t == EA_EVT_DUP && (ret < 0 || ret > 2))
		return 0;
	s = scratch();
	if (!s)
		return 0;
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	fill_header(&s->rec, t, task);
	s->rec.h.res = ret;

	if (t == EA_EVT_CONNECT) {
		s->rec.arg[0] = (__s32)a[0];
		put_sock(s, 0, fd_file(task, (__u32)a[0]), &pos);
		put_peer(s, a[1], a[2], &pos);
	} else if (t == EA_EVT_LISTEN) {
		s->rec.arg[0] = (__s32)a[0];
		s->rec.arg[1] = (__s32)a[1];
		put_sock(s, 0, fd_file(task, (__u32)a[0]), &pos);
	} else if (is_data(t)) {
		if (ret < 0) {
			count(EA_CNT_FILTERED_ARGS);
			return 0;
		}
		/* a[4]: the caller's sockaddr; a[5]: its length (sendto,
		 * sendmsg) or where the kernel wrote it (recvfrom: socklen_t *,
		 * recvmsg: the msghdr). */
		__u32 alen = a[5];
		if (t == EA_EVT_RECVFROM)
			bpf_probe_read_user(&alen, sizeof(alen), (void *)a[5]);
		else if (t == EA_EVT_RECVMSG)
			bpf_probe_read_user(&alen, sizeof(alen), (char *)a[5] + 8);
		struct file *f = fd_file(task, (__u32)a[0]);
		struct socket *sock = BPF_CORE_READ(f, private_data);
		__u64 sk = (__u64)BPF_CORE_READ(sock, sk);
		s->rec.arg[0] = (__s32)a[0];
		s->rec.arg[1] = (__u32)a[3];
		put_sock(s, 0, f, &pos);
		put_peer(s, a[4], alen, &pos);
		int peer = (pe.watch & EA_WATCH_PEER) && peer_changed(s, id, (__u32)a[0], sk);
		int dns = (pe.watch & EA_WATCH_DNS) &&
			  (is_recv(t) ? s->rec.sock.rport : s->rec.sock.lport) == EA_DNS_PORT;
		if (!peer && !dns) {
			count(EA_CNT_FILTERED_ARGS);
			return 0;
		}
		if (peer)
			submit(s, pos);
		if (dns)
			put_dns(s, t, a, ret);
		return 0;
	} else if (t == EA_EVT_ACCEPT || t == EA_EVT_ACCEPT4) {
		s->rec.arg[0] = (__s32)a[0];
		s->rec.arg[1] = t == EA_EVT_ACCEPT4 ? a[3] : 0;
		if (ret >= 0)
			put_sock(s, 0, fd_file(task, ret), &pos);
	} else if (t == EA_EVT_DUP || t == EA_EVT_DUP2 || t == EA_EVT_DUP3) {
		s->rec.arg[0] = (__s32)a[0];
		s->rec.arg[1] = t == EA_EVT_DUP ? ret : (__s32)a[1];
		s->rec.arg[2] = t == EA_EVT_DUP3 ? a[2] : 0;
		struct file *f = fd_file(task, (__u32)a[0]);
		if (!put_sock(s, 0, f, &pos))
			pos = put_file_path(s, 0, f, task, pos);
	} else if (t == EA_EVT_SOCKET) {
		s->rec.arg[0] = a[0];
		s->rec.arg[1] = a[1];
		s->rec.arg[2] = a[2];
	} else {
		return 0;
	}
	submit(s, pos);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_misc")
int ea_sys_exit_misc(struct ea_sys_exit_ctx *ctx)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct ea_pending pe;
	struct ea_scratch *s;

	if (!take_pending(id, &pe))
		return 0;
	__u32 t = pe.type;
	if (t != EA_EVT_PTRACE && t != EA_EVT_SETUID && t != EA_EVT_SETGID &&
	    t != EA_EVT_SETREUID && t != EA_EVT_SETREGID && t != EA_EVT_SETRESUID &&
	    t != EA_EVT_SETRESGID)
		return 0;
	s = scratch();
	if (!s)
		return 0;
	fill_header(&s->rec, t, (struct task_struct *)bpf_get_current_task());
	s->rec.h.res = ctx->ret;
	if (t == EA_EVT_PTRACE) {
		s->rec.arg[0] = pe.args[0];
		s->rec.arg[1] = (__s32)pe.args[1];
	} else {
		/* ids as unsigned 32-bit values; (uid_t)-1 means "unchanged" */
		s->rec.arg[0] = (__u32)pe.args[0];
		if (t != EA_EVT_SETUID && t != EA_EVT_SETGID)
			s->rec.arg[1] = (__u32)pe.args[1];
		if (t == EA_EVT_SETRESUID || t == EA_EVT_SETRESGID)
			s->rec.arg[2] = (__u32)pe.args[2];
	}
	submit(s, 0);
	return 0;
}

/* Process and privilege changes: failed execs (a successful one is sent by
 * sched_process_exec), namespaces, bpf(), userfaultfd, prctl, sessions. */
SEC("tracepoint/syscalls/sys_exit_proc")
int ea_sys_exit_proc(struct ea_sys_exit_ctx *ctx)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct ea_pending pe;
	struct ea_scratch *s;
	__u32 pos = 0;
	__s64 ret = ctx->ret;

	if (!take_pending(id, &pe))
		return 0;
	__u32 t = pe.type;
	__u64 *a = pe.args;
	if (t == EA_EVT_EXECVE || t == EA_EVT_EXECVEAT) {
		if (ret >= 0)
			return 0;
		count(EA_CNT_SEEN);
		if (filtered(id >> 32))
			return 0;
	}
	s = scratch();
	if (!s)
		return 0;
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	fill_header(&s->rec, t, task);
	s->rec.h.res = ret;

	if (t == EA_EVT_EXECVE) {
		pos = put_user_str(s, 3, (void *)a[0], pos);
		put_ids(s, task);
	} else if (t == EA_EVT_EXECVEAT) {
		s->rec.arg[4] = a[4];
		s->rec.arg[5] = (__s32)a[0];
		pos = put_user_str(s, 3, (void *)a[1], pos);
		put_ids(s, task);
	} else if (t == EA_EVT_SETNS || t == EA_EVT_UNSHARE) {
		if (t == EA_EVT_SETNS) {
			s->rec.arg[0] = (__s32)a[0];
			s->rec.arg[1] = (__u32)a[1];
		} else {
			s->rec.arg[0] = (__u32)a[0];
		}
		s->rec.arg[2] = a[2];
		s->rec.arg[3] = a[3];
		s->rec.arg[4] = a[4];
	} else if (t == EA_EVT_BPF || t == EA_EVT_USERFAULTFD) {
		s->rec.arg[0] = (__u32)a[0];
	} else if (t == EA_EVT_PRCTL) {
		s->rec.arg[0] = (__u32)a[0];
		s->rec.arg[1] = a[1];
		if (a[0] == 15 /* PR_SET_NAME */) {
			long n = bpf_probe_read_user_str(s->data, EA_COMM_LEN, (void *)a[1]);
			pos = str_read(s, 0, 0, n);
		}
	} else if (t == EA_EVT_SETSID) {
		put_ids(s, task);
	} else if (t == EA_EVT_SETPGID) {
		s->rec.arg[0] = (__s32)a[0];
		s->rec.arg[1] = (__s32)a[1];
		put_ids(s, task);
	} else {
		return 0;
	}
	submit(s, pos);
	return 0;
}
