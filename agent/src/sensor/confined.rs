//! Reading a file that a container controls, as root, without letting the
//! container choose what is read.
//!
//! A container's `/etc/passwd` (or anything below its root) may be a
//! symlink to `/etc/shadow` meaning the host's, a symlink to `/dev/zero`, a
//! FIFO that never answers, or gigabytes. [`read_in_root`] opens the path
//! confined to the container's root (`openat2` with `RESOLVE_IN_ROOT`:
//! absolute symlinks and `..` resolve inside it, magic links are refused),
//! with `O_NONBLOCK` (a FIFO cannot stall the open), requires a regular
//! file and reads at most a cap. Kernels without `openat2` (before 5.6) get
//! a component-by-component walk with `O_NOFOLLOW` instead, which refuses
//! every symlink. [`read_beneath`] is the same for a host directory the
//! agent trusts less than its contents (a runtime's bundle directory):
//! no symlinks at all.
//!
//! Owns only the opening and reading. Never follows a path out of the root
//! it is given and never reads past the cap.

use std::io::Read;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag, open, openat, openat2};
use nix::sys::stat::{Mode, SFlag, fstat};

/// Why a confined read gave nothing.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConfinedError {
    #[error("{path} does not exist")]
    NotFound { path: String },
    #[error("{path} is not a regular file (a device, FIFO, socket or directory)")]
    NotRegular { path: String },
    #[error("{path} is larger than the {max} bytes read from such a file")]
    TooLarge { path: String, max: u64 },
    #[error("{path} leads through a symlink, which this kernel cannot confine (no openat2)")]
    Symlink { path: String },
    #[error("{path}: {source}")]
    Io { path: String, source: Errno },
}

/// Open flags for the file itself: read only, never block (a FIFO), never
/// become the controlling terminal.
fn file_flags() -> OFlag {
    OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_NOCTTY | OFlag::O_CLOEXEC
}

/// Read `rel` (a path inside the root, such as `etc/passwd`) from the
/// container whose root the host sees at `root`, at most `max` bytes.
pub(crate) fn read_in_root(root: &Path, rel: &str, max: u64) -> Result<Vec<u8>, ConfinedError> {
    read_confined(root, rel, max, ResolveFlag::RESOLVE_IN_ROOT)
}

/// Read `name` from directory `dir`, refusing symlinks anywhere below `dir`
/// (the directory itself is the caller's choice), at most `max` bytes.
pub(crate) fn read_beneath(dir: &Path, name: &str, max: u64) -> Result<Vec<u8>, ConfinedError> {
    read_confined(
        dir,
        name,
        max,
        ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_SYMLINKS,
    )
}

fn read_confined(
    root: &Path,
    rel: &str,
    max: u64,
    resolve: ResolveFlag,
) -> Result<Vec<u8>, ConfinedError> {
    let shown = format!("{}/{}", root.display(), rel.trim_start_matches('/'));
    let io = |source: Errno| match source {
        Errno::ENOENT | Errno::ENOTDIR => ConfinedError::NotFound {
            path: shown.clone(),
        },
        Errno::ELOOP => ConfinedError::Symlink {
            path: shown.clone(),
        },
        source => ConfinedError::Io {
            path: shown.clone(),
            source,
        },
    };
    let dir = open(
        root,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(io)?;
    let how = OpenHow::new()
        .flags(file_flags())
        .resolve(resolve | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    let fd = match openat2(dir.as_fd(), rel.trim_start_matches('/'), how) {
        Ok(fd) => fd,
        // Before 5.6 (or a seccomp filter that does not know the call).
        Err(Errno::ENOSYS) => walk_no_symlinks(dir, rel).map_err(io)?,
        Err(e) => return Err(io(e)),
    };
    let st = fstat(fd.as_fd()).map_err(io)?;
    if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT != SFlag::S_IFREG {
        return Err(ConfinedError::NotRegular { path: shown });
    }
    if st.st_size as u64 > max {
        return Err(ConfinedError::TooLarge { path: shown, max });
    }
    let mut out = Vec::with_capacity(st.st_size as usize);
    // The size may grow after fstat: never read more than the cap + 1.
    std::fs::File::from(fd)
        .take(max + 1)
        .read_to_end(&mut out)
        .map_err(|e| io(Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO))))?;
    if out.len() as u64 > max {
        return Err(ConfinedError::TooLarge { path: shown, max });
    }
    Ok(out)
}

/// The pre-openat2 fallback: one component at a time, `O_NOFOLLOW`, no
/// `..`; any symlink on the way is refused (ELOOP).
fn walk_no_symlinks(root: OwnedFd, rel: &str) -> Result<OwnedFd, Errno> {
    let parts: Vec<&str> = rel
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect();
    if parts.contains(&"..") {
        return Err(Errno::ELOOP);
    }
    let Some((last, dirs)) = parts.split_last() else {
        return Err(Errno::EISDIR);
    };
    let mut dir = root;
    for p in dirs {
        dir = openat(
            dir.as_fd(),
            *p,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?;
    }
    openat(
        dir.as_fd(),
        *last,
        file_flags() | OFlag::O_NOFOLLOW,
        Mode::empty(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root_with_passwd() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("etc")).unwrap();
        d
    }

    #[test]
    fn a_regular_file_inside_the_root_is_read() {
        let d = root_with_passwd();
        std::fs::write(d.path().join("etc/passwd"), "app:x:1000:1000::/:/bin/sh\n").unwrap();
        let got = read_in_root(d.path(), "etc/passwd", 1024).unwrap();
        assert_eq!(got, b"app:x:1000:1000::/:/bin/sh\n");
        // A relative symlink inside the root is fine.
        std::os::unix::fs::symlink("passwd", d.path().join("etc/group")).unwrap();
        assert!(read_in_root(d.path(), "/etc/group", 1024).is_ok());
    }

    #[test]
    fn an_absolute_symlink_resolves_inside_the_root_never_on_the_host() {
        let host = tempfile::tempdir().unwrap();
        let secret = host.path().join("host-secret");
        std::fs::write(&secret, "root:$6$hash:19000::::::\n").unwrap();
        let d = root_with_passwd();
        std::os::unix::fs::symlink(&secret, d.path().join("etc/passwd")).unwrap();
        let e = read_in_root(d.path(), "etc/passwd", 1024).unwrap_err();
        assert!(matches!(e, ConfinedError::NotFound { .. }), "{e}");
        // `..` cannot climb out either.
        std::os::unix::fs::symlink(
            "../../../../../../../../etc/hostname",
            d.path().join("etc/group"),
        )
        .unwrap();
        assert!(read_in_root(d.path(), "etc/group", 1024).is_err());
    }

    #[test]
    fn devices_fifos_and_huge_files_are_refused_without_blocking() {
        let d = root_with_passwd();
        let etc = d.path().join("etc");
        std::fs::create_dir(d.path().join("dev")).unwrap();
        // A device node inside the root, as a container could have.
        nix::sys::stat::mknod(
            &d.path().join("dev/zero"),
            SFlag::S_IFCHR,
            Mode::from_bits_truncate(0o666),
            nix::sys::stat::makedev(1, 5),
        )
        .unwrap();
        std::os::unix::fs::symlink("/dev/zero", etc.join("passwd")).unwrap();
        let e = read_in_root(d.path(), "etc/passwd", 1024).unwrap_err();
        assert!(matches!(e, ConfinedError::NotRegular { .. }), "{e}");
        nix::unistd::mkfifo(&etc.join("group"), Mode::from_bits_truncate(0o644)).unwrap();
        let e = read_in_root(d.path(), "etc/group", 1024).unwrap_err();
        assert!(matches!(e, ConfinedError::NotRegular { .. }), "{e}");
        let big = std::fs::File::create(etc.join("big")).unwrap();
        big.set_len(1 << 30).unwrap();
        let e = read_in_root(d.path(), "etc/big", 1 << 20).unwrap_err();
        assert!(matches!(e, ConfinedError::TooLarge { .. }), "{e}");
    }

    #[test]
    fn beneath_refuses_every_symlink() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("real.json"), "{}").unwrap();
        std::os::unix::fs::symlink("real.json", d.path().join("config.json")).unwrap();
        assert!(read_beneath(d.path(), "real.json", 10).is_ok());
        let e = read_beneath(d.path(), "config.json", 10).unwrap_err();
        assert!(matches!(e, ConfinedError::Symlink { .. }), "{e}");
    }

    #[test]
    fn the_fallback_walk_refuses_symlinks_and_dot_dot() {
        let d = root_with_passwd();
        std::fs::write(d.path().join("etc/passwd"), "x").unwrap();
        std::os::unix::fs::symlink("/etc/hostname", d.path().join("etc/group")).unwrap();
        let root = || open(d.path(), OFlag::O_PATH | OFlag::O_DIRECTORY, Mode::empty()).unwrap();
        assert!(walk_no_symlinks(root(), "etc/passwd").is_ok());
        assert_eq!(
            walk_no_symlinks(root(), "etc/group").unwrap_err(),
            Errno::ELOOP
        );
        assert_eq!(
            walk_no_symlinks(root(), "etc/../etc/passwd").unwrap_err(),
            Errno::ELOOP
        );
    }
}
