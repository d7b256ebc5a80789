//! Build script: records the target triple for `edge-agent version`, and
//! compiles the eBPF sensor (`ebpf/sensor.bpf.c`) into the object the agent
//! embeds (`$OUT_DIR/sensor.bpf.o`, read by `sensor::loader`).
//!
//! The object is CO-RE: one build per target architecture (the
//! `__TARGET_ARCH_*` define only matters to libbpf's headers: x86, arm64,
//! arm), valid on every 64-bit kernel >= 5.8 with BTF. Needs `clang` and libbpf's headers (Debian:
//! `clang libbpf-dev`, which `scripts/deps.sh` installs). `CLANG` overrides
//! the compiler. DWARF is stripped when `llvm-strip` is there (BTF stays; it
//! is what the loader needs), which keeps the binary smaller.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let target = std::env::var("TARGET").unwrap_or_else(|_| "unknown".into());
    println!("cargo:rustc-env=EDGE_AGENT_TARGET={target}");
    build_ebpf();
}

fn build_ebpf() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let src_dir = manifest.join("../ebpf");
    for f in ["sensor.bpf.c", "abi.h", "kernel.h"] {
        println!("cargo:rerun-if-changed={}", src_dir.join(f).display());
    }
    println!("cargo:rerun-if-env-changed=CLANG");
    let arch = match std::env::var("CARGO_CFG_TARGET_ARCH").as_deref() {
        Ok("x86_64") => "x86",
        Ok("aarch64") => "arm64",
        // 32-bit ARM (armv7): the object builds, but the sensor refuses to
        // load it on a 32-bit kernel (sensor::loader says why).
        Ok("arm") => "arm",
        Ok(other) => panic!(
            "the eBPF sensor is built for x86_64, aarch64 and arm only, not {other}: add its __TARGET_ARCH_ name in agent/build.rs"
        ),
        Err(_) => panic!("CARGO_CFG_TARGET_ARCH is not set"),
    };
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR")).join("sensor.bpf.o");
    let clang = std::env::var("CLANG").unwrap_or_else(|_| "clang".into());
    let status = Command::new(&clang)
        .args(["-target", "bpf", &format!("-D__TARGET_ARCH_{arch}")])
        .args(["-O2", "-g", "-Wall", "-Werror"])
        .arg("-I")
        .arg(&src_dir)
        .arg("-c")
        .arg(src_dir.join("sensor.bpf.c"))
        .arg("-o")
        .arg(&out)
        .status()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run `{clang}` to build the eBPF sensor ({e}): install clang and libbpf-dev (scripts/deps.sh does), or set CLANG"
            )
        });
    assert!(
        status.success(),
        "`{clang}` failed to compile ebpf/sensor.bpf.c ({status}); see its messages above (libbpf headers come from Debian's libbpf-dev)"
    );
    strip_dwarf(&out);
}

/// Drop DWARF (not BTF) from the object; skipped when llvm-strip is absent.
fn strip_dwarf(obj: &Path) {
    for tool in [
        "llvm-strip",
        "llvm-strip-14",
        "llvm-strip-15",
        "llvm-strip-16",
    ] {
        if let Ok(s) = Command::new(tool).arg("--strip-debug").arg(obj).status()
            && s.success()
        {
            return;
        }
    }
    println!(
        "cargo:warning=llvm-strip not found: the embedded eBPF object keeps its DWARF (larger binary)"
    );
}
