//! The eBPF sensor: loads the kernel programs, reads the ring buffer, keeps
//! the process table and container enrichment, and emits [`crate::event::Event`]s.
//! Owns the kernel programs and their maps. Never evaluates rules.
//! (Built in the eBPF sensor issue.)
