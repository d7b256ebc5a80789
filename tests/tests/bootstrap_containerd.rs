//! The nydus containerd template for containerd 1.x (config version 2) is
//! accepted by a real containerd: Debian's `containerd` is started against
//! it, in a scratch directory with its own root, state and socket, and
//! lists the nydus proxy snapshotter.
//!
//! K3s (which would execute the template) cannot run here. The test does
//! K3s's part: it puts K3s's base template output (the fixture the unit
//! tests use, rendered from K3s's template source, see
//! agent/src/bootstrap/testdata/README.md) where the template says
//! `{{ template "base" . }}`, with the base's paths moved into the scratch
//! directory.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use edge_agent_tests::bootstrap::{
    Node, agent_section, k3s_base_v2_without_snapshotter, render_like_k3s, show,
};
use edge_agent_tests::{require_root, wait_for};

const TEMPLATE_V2: &str = "/var/lib/rancher/k3s/agent/etc/containerd/config.toml.tmpl";

struct Containerd(Child);

impl Drop for Containerd {
    fn drop(&mut self) {
        // SAFETY: kill() on our own child, which has not been reaped yet.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        if wait_for(Duration::from_secs(10), || self.0.try_wait().ok().flatten()).is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

#[test]
fn the_containerd_1_x_nydus_template_is_accepted_by_a_real_containerd() {
    require_root();
    // K3s v1.30 embeds containerd 1.7: config.toml.tmpl, config version 2.
    let node = Node::new(
        &agent_section("snapshotter = \"nydus\"\nk3s_version = \"v1.30.6+k3s1\"\n"),
        "",
    );
    node.token();
    let apply = node.bootstrap(&["apply"]);
    assert_eq!(apply.status.code(), Some(0), "{}", show(&apply));
    let dropin = node
        .read("/etc/rancher/k3s/config.yaml.d/50-edge-agent.yaml")
        .unwrap();
    assert!(
        dropin.contains("snapshotter: \"\""),
        "the base template must leave the CRI snapshotter table to ours:\n{dropin}"
    );
    let template = node.read(TEMPLATE_V2).expect("the v2 template is written");

    let dir = node.scratch.path().join("containerd");
    let data = dir.join("k3s");
    let state = dir.join("run");
    let base = k3s_base_v2_without_snapshotter()
        .replace("/var/lib/rancher/k3s", &data.to_string_lossy())
        .replace("/run/k3s/containerd", &state.to_string_lossy());
    let config = render_like_k3s(&template, &base);
    let config_path = dir.join("config.toml");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(&config_path, &config).unwrap();
    let socket = state.join("containerd.sock");

    let log = std::fs::File::create(dir.join("containerd.log")).unwrap();
    let child = Command::new("containerd")
        .arg("--config")
        .arg(&config_path)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("containerd is installed (scripts/deps.sh)");
    let mut ctd = Containerd(child);
    let log = || std::fs::read_to_string(dir.join("containerd.log")).unwrap_or_default();
    let up = wait_for(Duration::from_secs(30), || {
        if let Ok(Some(status)) = ctd.0.try_wait() {
            panic!(
                "containerd exited with {status}:\n{}\nconfig:\n{config}",
                log()
            );
        }
        socket.exists().then_some(())
    });
    assert!(
        up.is_some(),
        "containerd never opened its socket:\n{}",
        log()
    );

    let plugins = wait_for(Duration::from_secs(20), || {
        let out = Command::new("ctr")
            .arg("--address")
            .arg(&socket)
            .args(["plugins", "ls"])
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    })
    .unwrap_or_else(|| panic!("ctr plugins ls never answered:\n{}", log()));
    let nydus = plugins
        .lines()
        .find(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            w.first() == Some(&"io.containerd.snapshotter.v1") && w.get(1) == Some(&"nydus")
        })
        .unwrap_or_else(|| panic!("no nydus snapshotter in:\n{plugins}"));
    assert_eq!(nydus.split_whitespace().last(), Some("ok"), "{plugins}");
    let cri = plugins
        .lines()
        .find(|l| l.contains("io.containerd.grpc.v1") && l.split_whitespace().nth(1) == Some("cri"))
        .unwrap_or_else(|| panic!("no CRI plugin in:\n{plugins}"));
    assert_eq!(
        cri.split_whitespace().last(),
        Some("ok"),
        "{plugins}\n{}",
        log()
    );

    // What containerd made of the CRI settings.
    let dump = Command::new("containerd")
        .arg("--config")
        .arg(&config_path)
        .args(["config", "dump"])
        .output()
        .unwrap();
    assert!(
        dump.status.success(),
        "{}",
        String::from_utf8_lossy(&dump.stderr)
    );
    let t: toml::Table = String::from_utf8_lossy(&dump.stdout).parse().unwrap();
    let c = &t["plugins"]["io.containerd.grpc.v1.cri"]["containerd"];
    assert_eq!(c["snapshotter"].as_str(), Some("nydus"));
    assert_eq!(c["disable_snapshot_annotations"].as_bool(), Some(false));
    assert_eq!(c["discard_unpacked_layers"].as_bool(), Some(false));
    assert_eq!(
        t["proxy_plugins"]["nydus"]["address"].as_str(),
        Some("/run/containerd-nydus/containerd-nydus-grpc.sock")
    );
    drop(ctd);
}
