/* SPDX-License-Identifier: Apache-2.0 */
/*
 * kernel.h: the few kernel types the sensor reads, declared minimally.
 *
 * Every struct carries preserve_access_index, so clang records each field
 * access as a CO-RE relocation and the loader (aya) rewrites the offsets
 * for the running kernel from its BTF. Only the fields used are declared;
 * their order and the struct sizes here do not matter. This replaces a
 * generated multi-megabyte vmlinux.h and keeps one object valid for every
 * kernel >= 5.8 with BTF, on x86_64 and arm64.
 */
#ifndef EA_KERNEL_H
#define EA_KERNEL_H

typedef unsigned char __u8;
typedef signed char __s8;
typedef unsigned short __u16;
typedef short __s16;
typedef unsigned int __u32;
typedef int __s32;
typedef unsigned long long __u64;
typedef long long __s64;
typedef __u16 __be16;
typedef __u32 __be32;
typedef __u32 __wsum;

/* The map types and flags the object uses (uapi/linux/bpf.h). */
enum {
	BPF_MAP_TYPE_HASH = 1,
	BPF_MAP_TYPE_ARRAY = 2,
	BPF_MAP_TYPE_PERCPU_ARRAY = 6,
	BPF_MAP_TYPE_LRU_HASH = 9,
	BPF_MAP_TYPE_LPM_TRIE = 11,
	BPF_MAP_TYPE_RINGBUF = 27,
};
#define BPF_F_NO_PREALLOC 1
#define BPF_ANY 0
#define BPF_RB_NO_WAKEUP 1
#define BPF_RB_FORCE_WAKEUP 2
#define BPF_RB_AVAIL_DATA 0

#define SIGKILL 9
#define EPERM 1
#define AT_FDCWD -100
#define O_ACCMODE 3
#define O_RDONLY 0
#define O_CREAT 0100
#define O_TRUNC 01000
#define O_TMPFILE 020200000
#define S_IFMT 00170000
#define S_IFSOCK 0140000
#define S_IFREG 0100000
#define AF_UNIX 1
#define AF_INET 2
#define AF_INET6 10
#define TCP_ESTABLISHED 1 /* also a connected UDP socket's state */
#define OVERLAYFS_SUPER_MAGIC 0x794c7630

#define PRESERVE __attribute__((preserve_access_index))

struct qstr {
	union {
		struct {
			__u32 hash;
			__u32 len;
		};
		__u64 hash_len;
	};
	const unsigned char *name;
} PRESERVE;

struct super_block {
	__u32 s_dev;
	unsigned long s_magic;
} PRESERVE;

struct timespec64 {
	__s64 tv_sec;
	long tv_nsec;
} PRESERVE;

/* Since 6.11 the times are split into seconds and nanoseconds. */
struct inode {
	unsigned short i_mode;
	unsigned int i_nlink;
	struct super_block *i_sb;
	unsigned long i_ino;
	__s64 i_mtime_sec;
	__s64 i_ctime_sec;
	__u32 i_mtime_nsec;
	__u32 i_ctime_nsec;
} PRESERVE;

/* Before 6.6. */
struct inode___pre66 {
	struct timespec64 i_mtime;
	struct timespec64 i_ctime;
} PRESERVE;

/* 6.6 hid i_ctime behind accessors; 6.7 did the same to i_mtime. */
struct inode___66 {
	struct timespec64 i_mtime;
	struct timespec64 __i_ctime;
} PRESERVE;

struct inode___67 {
	struct timespec64 __i_mtime;
	struct timespec64 __i_ctime;
} PRESERVE;

struct dentry {
	struct dentry *d_parent;
	struct qstr d_name;
	struct inode *d_inode;
	struct super_block *d_sb;
} PRESERVE;

struct vfsmount {
	struct dentry *mnt_root;
} PRESERVE;

struct mount {
	struct mount *mnt_parent;
	struct dentry *mnt_mountpoint;
	struct vfsmount mnt;
} PRESERVE;

struct path {
	struct vfsmount *mnt;
	struct dentry *dentry;
} PRESERVE;

struct file {
	struct path f_path;
	struct inode *f_inode;
	unsigned int f_mode;
	void *private_data;
} PRESERVE;

struct fdtable {
	unsigned int max_fds;
	struct file **fd;
} PRESERVE;

struct files_struct {
	struct fdtable *fdt;
} PRESERVE;

struct fs_struct {
	struct path root;
	struct path pwd;
} PRESERVE;

struct mm_struct {
	unsigned long arg_start;
	unsigned long arg_end;
	unsigned long env_start;
	unsigned long env_end;
	struct file *exe_file;
} PRESERVE;

typedef struct {
	__u32 val;
} kuid_t;

typedef struct {
	__u32 val;
} kgid_t;

/* A u64 since 6.3, two u32 before; both are read as 8 bytes. */
typedef struct {
	__u64 val;
} kernel_cap_t;

struct cred {
	kuid_t euid;
	kgid_t egid;
	kernel_cap_t cap_inheritable;
	kernel_cap_t cap_permitted;
	kernel_cap_t cap_effective;
} PRESERVE;

struct tty_driver {
	int major;
	int minor_start;
} PRESERVE;

struct tty_struct {
	int index;
	struct tty_driver *driver;
} PRESERVE;

typedef struct {
	int counter;
} atomic_t;

/* enum pid_type, stable since 4.19. */
#define PIDTYPE_PGID 2
#define PIDTYPE_SID 3
#define PIDTYPE_MAX 4

struct upid {
	int nr;
} PRESERVE;

struct pid {
	unsigned int level;
	struct upid numbers[1];
} PRESERVE;

struct signal_struct {
	atomic_t live;
	struct tty_struct *tty;
	struct pid *pids[PIDTYPE_MAX];
} PRESERVE;

struct kernfs_node {
	const char *name;
} PRESERVE;

/* The parent link was renamed in 6.15; CO-RE picks whichever exists. */
struct kernfs_node___new {
	struct kernfs_node *__parent;
} PRESERVE;

struct kernfs_node___old {
	struct kernfs_node *parent;
} PRESERVE;

struct cgroup {
	struct kernfs_node *kn;
} PRESERVE;

struct css_set {
	struct cgroup *dfl_cgrp;
} PRESERVE;

struct task_struct {
	int pid;
	int tgid;
	int exit_code;
	struct task_struct *real_parent;
	struct task_struct *group_leader;
	struct mm_struct *mm;
	const struct cred *cred;
	struct fs_struct *fs;
	struct files_struct *files;
	struct signal_struct *signal;
	struct css_set *cgroups;
	struct pid *thread_pid;
	__u64 start_boottime;
	kuid_t loginuid;
} PRESERVE;

/* task_struct before 5.5 named the boot-time start field differently. */
struct task_struct___pre55 {
	__u64 real_start_time;
} PRESERVE;

struct linux_binprm {
	struct file *file;
	const char *filename;
} PRESERVE;

struct in6_addr {
	__u8 s6_addr[16];
} PRESERVE;

struct sock_common {
	__be32 skc_daddr;
	__be32 skc_rcv_saddr;
	__be16 skc_dport;
	__u16 skc_num;
	unsigned short skc_family;
	volatile unsigned char skc_state;
	struct in6_addr skc_v6_daddr;
	struct in6_addr skc_v6_rcv_saddr;
} PRESERVE;

struct sock {
	struct sock_common __sk_common;
	__u16 sk_type;
	__u16 sk_protocol;
} PRESERVE;

struct socket {
	struct sock *sk;
} PRESERVE;

struct sockaddr_un {
	unsigned short sun_family;
	char sun_path[108];
} PRESERVE;

struct unix_address {
	int len;
	struct sockaddr_un name[];
} PRESERVE;

struct unix_sock {
	struct unix_address *addr;
} PRESERVE;

struct clone_args {
	__u64 flags;
} PRESERVE;

/* Syscall tracepoint contexts (syscalls/sys_enter_* and sys_exit_*): the
 * same layout for every syscall and architecture. */
struct ea_sys_enter_ctx {
	__u64 _common;
	__s32 nr;
	__u32 _pad;
	__u64 args[6];
};

struct ea_sys_exit_ctx {
	__u64 _common;
	__s32 nr;
	__u32 _pad;
	__s64 ret;
};

/* Raw tracepoint context: the tracepoint's arguments as u64s. */
struct bpf_raw_tracepoint_args {
	__u64 args[0];
};

#endif /* EA_KERNEL_H */
