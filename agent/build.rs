//! Build script: records the target triple for `edge-agent version`.
//! (The eBPF objects are compiled here too once `ebpf/` has programs.)

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let target = std::env::var("TARGET").unwrap_or_else(|_| "unknown".into());
    println!("cargo:rustc-env=EDGE_AGENT_TARGET={target}");
}
