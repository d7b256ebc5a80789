//! The eBPF sensor: loads the kernel programs (`ebpf/`), reads their ring
//! buffer, keeps the process table and container enrichment, and emits
//! [`crate::event::Event`]s for the rules engine.
//!
//! Owns the kernel programs and their maps, the kernel/user ABI mirror, and
//! everything that turns a kernel record into an event. Also the one
//! enforcement the agent does: the opt-in `deny_exec` and `deny_open`
//! lists, refused in BPF-LSM hooks where the kernel runs the BPF LSM (exec
//! otherwise killed at exec). Never evaluates rules and never writes to disk.
//!
//! Layout: `abi` (the ABI mirror, decoding with length checks), `probes`
//! (the probe table), `filters` (config -> kernel filter entries), `loader`
//! (aya: load, fill maps, attach, counters), `reader` (a running
//! [`Sensor`]: start-up order, `AsyncFd` ring reading), `decode` (records ->
//! events), `proctable`, `container`, `users` (enrichment), `enforce` (BPF-LSM
//! availability, deny_open resolution, modes), `alert` (what the sensor
//! reports), `stage` (the daemon stage).

pub mod abi;
mod alert;
mod bundles;
pub(crate) mod confined;
pub(crate) mod container;
pub(crate) mod decode;
pub(crate) mod dns;
pub(crate) mod enforce;
pub(crate) mod filters;
mod loader;
pub(crate) mod probes;
pub mod proctable;
mod reader;
mod stage;
pub(crate) mod users;

pub(crate) use alert::falco_time;
pub use decode::{Decoded, Enricher};
pub(crate) use reader::Sensor;
pub(crate) use stage::start;

/// Why the sensor could not start (or stopped). Each has a stable
/// [`SensorError::code`] for status and node events.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SensorError {
    #[error(
        "not privileged: loading eBPF programs needs root (or CAP_BPF, CAP_PERFMON and CAP_SYS_ADMIN for tracefs); run edge-agent as root"
    )]
    NotPrivileged,
    #[error(
        "this kernel has no BTF (/sys/kernel/btf/vmlinux is missing): the sensor needs a kernel built with CONFIG_DEBUG_INFO_BTF=y"
    )]
    NoBtf,
    #[error("kernel {found} is too old: the sensor needs Linux >= 5.8 with BTF")]
    KernelTooOld { found: String },
    #[error("the sensor does not run on this {machine} kernel with the {binary} build: {reason}")]
    UnsupportedArch {
        machine: String,
        binary: &'static str,
        reason: &'static str,
    },
    #[error(
        "tracefs is not available ({reason}); mount it with `mount -t tracefs nodev /sys/kernel/tracing` (the syscall tracepoints live there)"
    )]
    NoTracefs { reason: String },
    #[error("could not load {what}: {message}")]
    Load { what: String, message: String },
    #[error("the eBPF object has no program {0} (a build mismatch)")]
    MissingProgram(&'static str),
    #[error("the eBPF object has no map {0} (a build mismatch)")]
    MissingMap(&'static str),
    #[error("eBPF map {map}: {source}")]
    Map {
        map: &'static str,
        source: aya::maps::MapError,
    },
    #[error("required probe {probe} did not attach: {reason}")]
    Attach { probe: &'static str, reason: String },
    #[error("reading the ring buffer: {0}")]
    Ring(std::io::Error),
    #[error("the sensor's start-up panicked: {0}")]
    StartPanicked(tokio::task::JoinError),
}

impl SensorError {
    /// A stable code for scripts, status and node events.
    pub(crate) fn code(&self) -> &'static str {
        match self {
            SensorError::NotPrivileged => "not_privileged",
            SensorError::NoBtf => "no_btf",
            SensorError::KernelTooOld { .. } => "kernel_too_old",
            SensorError::UnsupportedArch { .. } => "unsupported_arch",
            SensorError::NoTracefs { .. } => "no_tracefs",
            SensorError::Load { .. }
            | SensorError::MissingProgram(_)
            | SensorError::MissingMap(_) => "load_failed",
            SensorError::Map { .. } => "map_failed",
            SensorError::Attach { .. } => "attach_failed",
            SensorError::Ring(_) => "ring_buffer_failed",
            SensorError::StartPanicked(_) => "load_failed",
        }
    }
}
