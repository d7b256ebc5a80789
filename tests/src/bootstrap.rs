//! Helpers for the bootstrap tests: a scratch node root next to the
//! scratch config, the bootstrap commands of the real binary, a stand-in
//! `k3s` binary, and K3s's containerd base template for feeding the
//! rendered nydus template to a real containerd.
//!
//! K3s itself cannot be installed here. Where a test needs "the installed
//! K3s", [`Node::fake_k3s`] puts a shell script at `<root>/usr/local/bin/k3s`
//! that prints exactly what `k3s --version` prints; the tests that use it
//! say so.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::{Scratch, agent_bin};

/// The real output of `k3s --version` for v1.31.6+k3s1 (the February 2025
/// release that moved K3s to containerd 2.0).
pub const K3S_VERSION_OUTPUT_1_31_6: &str =
    "k3s version v1.31.6+k3s1 (6a1e6fd6)\ngo version go1.22.12\n";

/// A desired state for an agent joining a server, kube-proxy in `mode`.
pub fn agent_section(extra: &str) -> String {
    format!(
        "role = \"agent\"\nserver = \"https://10.0.0.1:6443\"\ntoken_file = \"/etc/rancher/k3s/token\"\nnode_labels = [\"topology.kubernetes.io/zone=edge\"]\nkubelet_args = [\"max-pods=250\"]\n{extra}"
    )
}

/// A scratch config plus a scratch node root (`<scratch>/root`).
pub struct Node {
    pub scratch: Scratch,
}

impl Node {
    /// `bootstrap` is the body of `[bootstrap]` (without `root`, which is
    /// set to the scratch root), `tail` any further TOML (sub-tables).
    pub fn new(bootstrap: &str, tail: &str) -> Node {
        let scratch = Scratch::new("");
        std::fs::create_dir_all(scratch.path().join("root")).unwrap();
        let node = Node { scratch };
        node.configure(bootstrap, tail);
        node
    }

    pub fn configure(&self, bootstrap: &str, tail: &str) {
        self.scratch.write_config(&format!(
            "[bootstrap]\nroot = \"{}\"\n{bootstrap}\n{tail}",
            self.root().display()
        ));
    }

    pub fn root(&self) -> PathBuf {
        self.scratch.path().join("root")
    }

    /// `path` (absolute on the node) below the scratch root.
    pub fn at(&self, path: &str) -> PathBuf {
        self.root().join(path.trim_start_matches('/'))
    }

    pub fn read(&self, path: &str) -> Option<String> {
        std::fs::read_to_string(self.at(path)).ok()
    }

    pub fn write(&self, path: &str, content: &str, mode: u32) {
        let p = self.at(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, content).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    pub fn mode(&self, path: &str) -> u32 {
        std::fs::metadata(self.at(path))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777
    }

    /// The join token file, mode 0600.
    pub fn token(&self) {
        self.write(
            "/etc/rancher/k3s/token",
            "K10deadbeef::server:0123456789abcdef\n",
            0o600,
        );
    }

    /// A stand-in for the K3s binary (K3s cannot be installed here): a
    /// script printing `output` for `--version`, as the real one does.
    pub fn fake_k3s(&self, output: &str) {
        let script = format!(
            "#!/bin/sh\n# Stand-in for K3s in tests: prints what the real binary prints.\nif [ \"$1\" = \"--version\" ]; then printf '%s' '{output}'; exit 0; fi\nexit 1\n"
        );
        self.write("/usr/local/bin/k3s", &script, 0o755);
    }

    /// Run `edge-agent bootstrap <args>` against this node.
    pub fn bootstrap(&self, args: &[&str]) -> Output {
        self.bootstrap_env(args, &[])
    }

    pub fn bootstrap_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        Command::new(agent_bin())
            .arg("bootstrap")
            .args(args)
            .arg("--config")
            .arg(self.scratch.config_path())
            .envs(env.iter().copied())
            .output()
            .expect("run edge-agent bootstrap")
    }

    /// Every regular file below the root (node paths), sorted.
    pub fn files(&self) -> Vec<String> {
        let mut out = Vec::new();
        walk(&self.root(), &self.root(), &mut out);
        out.sort();
        out
    }
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            walk(root, &p, out);
        } else {
            out.push(format!("/{}", p.strip_prefix(root).unwrap().display()));
        }
    }
}

/// Exit code, stdout and stderr of a run, for assertion messages.
pub fn show(o: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// What K3s's own base containerd template (config version 2) renders for
/// an agent whose `snapshotter` setting is empty: the fixture the agent's
/// unit tests use, see `agent/src/bootstrap/testdata/README.md`.
pub fn k3s_base_v2_without_snapshotter() -> String {
    include_str!("../../agent/src/bootstrap/testdata/k3s-base-v2.toml")
        .replace("#@snapshotter-table@\n", "")
}

/// Execute the rendered template as K3s would for a node without
/// `--default-runtime` (the same substitution the agent's unit tests make):
/// the base goes in, the false `with` block goes out with the newline its
/// `{{-` trims.
pub fn render_like_k3s(template: &str, base: &str) -> String {
    let mut out = template.replace("{{ template \"base\" . }}", base);
    let open = "\n{{- with .NodeConfig.DefaultRuntime }}";
    if let Some(start) = out.find(open) {
        let end_tag = "\n{{- end }}";
        let end = out[start..].find(end_tag).expect("with has an end") + start + end_tag.len();
        out.replace_range(start..end, "");
    }
    assert!(!out.contains("{{"), "a template action is left:\n{out}");
    out
}
