//! Helpers for the rules engine's integration tests.

use std::path::PathBuf;

/// The repository root (the tests crate lives in `tests/`).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The shipped rule files, as a glob the agent expands.
pub fn shipped_rules_glob() -> String {
    repo_root()
        .join("configs/rules/*.yaml")
        .display()
        .to_string()
}

/// Falco's stable rules: the vendored copy, always present in a clone.
pub fn falco_rules() -> PathBuf {
    repo_root().join("tests/data/falco/falco_rules.yaml")
}

/// An execve event as `sensor watch --json` prints it: `proc` with its
/// ancestors, optionally in a container.
pub fn exec_event(
    name: &str,
    args: &[&str],
    tty: u32,
    container: Option<&str>,
) -> serde_json::Value {
    let mut e = serde_json::json!({
        "evt": {"type": "execve", "time": 1_764_000_000_000_000_000u64, "num": 7},
        "proc": {"pid": 4242, "ppid": 4000, "name": name, "exe": name,
                 "exepath": format!("/bin/{name}"), "args": args, "tty": tty},
        "ancestors": [{"pid": 4000, "ppid": 1, "name": "runc:[2:INIT]", "exepath": "/usr/bin/runc"}],
        "user": {"uid": 0, "gid": 0, "name": "root"},
    });
    if let Some(image) = container {
        e["container"] = serde_json::json!({
            "id": "0123456789ab", "name": "web", "image_repository": image,
            "pod_name": "web-1", "pod_namespace": "default",
        });
    }
    e
}
