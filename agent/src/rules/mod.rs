//! The rules engine: Falco's rule language over [`crate::event::Event`]s,
//! alerts into the outbox. Owns loading, compiling and evaluating rules.
//! Never reads the kernel or the disk on the hot path.
//! (Built in the rules engine issue.)
