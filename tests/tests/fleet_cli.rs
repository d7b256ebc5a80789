//! The operator's side of fleet config against a real mosquitto running the
//! shipped `configs/mosquitto/` files: keys, bundles, publishing, and the
//! ACL that keeps nodes from publishing config.

use std::process::Command;

use edge_agent_tests::fleet::{FLEET, Fleet, both};

#[test]
fn keygen_writes_keys_openssl_reads_and_bundle_signs_with_a_key_openssl_made() {
    let f = Fleet::new();
    let out = Command::new("openssl")
        .args(["pkey", "-pubout", "-in"])
        .arg(f.key())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", both(&out));
    assert_eq!(out.stdout, std::fs::read(f.public_key()).unwrap());

    let theirs = f.path().join("openssl.key");
    let out = Command::new("openssl")
        .args(["genpkey", "-algorithm", "ed25519", "-out"])
        .arg(&theirs)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", both(&out));
    let bundle = f.path().join("b.json");
    let out = f.fleet(&[
        "bundle",
        "--target",
        "fleet",
        "--version",
        "1",
        "--key",
        theirs.to_str().unwrap(),
        "--out",
        bundle.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", both(&out));
    assert!(bundle.exists());
}

#[test]
fn a_published_bundle_is_retained_on_its_targets_topic_byte_for_byte() {
    let f = Fleet::new();
    let rules = [("50-fleet.yaml", "- list: fleet_list\n  items: [a]\n")];
    let targets = [
        ("fleet", "all/config"),
        ("group:eu", "group/eu/config"),
        ("node:n1", "n1/config"),
    ];
    let mut files = Vec::new();
    for (target, _) in targets {
        let b = f.bundle(target, 3, "[metrics]\ninterval = \"10s\"\n", &rules);
        f.publish(&b);
        files.push(b);
    }
    let seen = f.operator_sees(&format!("edge/{FLEET}/#"), 2);
    for ((_, suffix), file) in targets.iter().zip(&files) {
        let topic = format!("edge/{FLEET}/{suffix}");
        let got: Vec<_> = seen.iter().filter(|(t, _)| *t == topic).collect();
        assert_eq!(got.len(), 1, "{topic}: {seen:?}");
        assert_eq!(got[0].1, std::fs::read(file).unwrap(), "{topic}");
    }
}

#[test]
fn bundle_refuses_an_overlay_that_sets_what_stays_local_and_writes_nothing() {
    let f = Fleet::new();
    for (overlay, key) in [
        ("[node]\nid = \"x\"\n", "node"),
        ("[uplink]\nurl = \"mqtts://elsewhere:8883\"\n", "uplink.url"),
        ("[fleet]\ntrusted_keys = []\n", "fleet"),
        ("[metrix]\ninterval = \"1s\"\n", "metrix"),
        ("[metrics]\ninterval = \"often\"\n", "metrics.interval"),
    ] {
        let o = f.path().join("overlay.toml");
        std::fs::write(&o, overlay).unwrap();
        let out_file = f.path().join("refused.json");
        let out = f.fleet(&[
            "bundle",
            "--target",
            "fleet",
            "--version",
            "1",
            "--overlay",
            o.to_str().unwrap(),
            "--key",
            f.key().to_str().unwrap(),
            "--out",
            out_file.to_str().unwrap(),
        ]);
        assert_eq!(out.status.code(), Some(78), "{overlay}: {}", both(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(&format!("overlay.toml: {key}")),
            "{overlay}: {err}"
        );
        assert!(!out_file.exists(), "{overlay}: a bundle was written");
    }
}

#[test]
fn publish_refuses_a_bundle_of_another_fleet_and_a_file_that_is_no_bundle() {
    let f = Fleet::new();
    let other = f.path().join("other.json");
    let out = f.fleet(&[
        "bundle",
        "--fleet",
        "other-fleet",
        "--target",
        "fleet",
        "--version",
        "1",
        "--key",
        f.key().to_str().unwrap(),
        "--out",
        other.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", both(&out));
    let out = f.fleet(&["publish", other.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", both(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("other-fleet"),
        "{}",
        both(&out)
    );

    let junk = f.path().join("junk.json");
    std::fs::write(&junk, "{\"hello\": 1}").unwrap();
    let out = f.fleet(&["publish", junk.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", both(&out));
    assert!(f.operator_sees(&format!("edge/{FLEET}/#"), 1).is_empty());
}

#[test]
fn the_shipped_acl_lets_a_node_publish_below_its_own_topics_but_never_config_nor_read_another_nodes()
 {
    let f = Fleet::new();
    let (n1_cert, n1_key) = f.node_cert("n1");
    let (n2_cert, n2_key) = f.node_cert("n2");
    // The operator's bundle for n2, retained.
    let b = f.bundle("node:n2", 1, "", &[]);
    f.publish(&b);
    for topic in [
        format!("edge/{FLEET}/n2/config"),
        format!("edge/{FLEET}/all/config"),
        format!("edge/{FLEET}/group/eu/config"),
        format!("edge/{FLEET}/n1/config"),
        format!("edge/{FLEET}/n2/alerts"),
    ] {
        f.raw_publish(&n1_cert, &n1_key, &topic, b"forged by n1", true);
    }
    let seen = f.operator_sees(&format!("edge/{FLEET}/#"), 2);
    let forged: Vec<_> = seen.iter().filter(|(_, p)| p == b"forged by n1").collect();
    assert!(forged.is_empty(), "the broker took {forged:?}");
    let n2_config = seen
        .iter()
        .find(|(t, _)| *t == format!("edge/{FLEET}/n2/config"));
    assert_eq!(
        n2_config.map(|(_, p)| p.clone()),
        Some(std::fs::read(&b).unwrap())
    );

    // n1 reads its own config topics, never n2's; n2 reads its bundle.
    let n1_reads = f.sees(&n1_cert, &n1_key, &format!("edge/{FLEET}/n2/config"), 1);
    assert!(n1_reads.is_empty(), "{n1_reads:?}");
    let n2_reads = f.sees(&n2_cert, &n2_key, &format!("edge/{FLEET}/n2/config"), 1);
    assert_eq!(n2_reads.len(), 1, "{n2_reads:?}");
    // Nor anything else of n2's: its retained state, even through a
    // wildcard (the operator does see it).
    assert!(f.raw_publish(
        &n2_cert,
        &n2_key,
        &format!("edge/{FLEET}/n2/state"),
        b"n2's state",
        true
    ));
    let n1_all = f.sees(&n1_cert, &n1_key, &format!("edge/{FLEET}/#"), 2);
    assert!(
        !n1_all.iter().any(|(t, _)| t.contains("/n2/")),
        "n1 read {n1_all:?}"
    );
    let op_all = f.operator_sees(&format!("edge/{FLEET}/n2/state"), 1);
    assert_eq!(
        op_all.iter().map(|(_, p)| p.as_slice()).collect::<Vec<_>>(),
        [b"n2's state".as_slice()]
    );
    // n1's publish to its own alerts, live.
    let (op_cert, op_key) = f.operator_cert();
    let watcher = f.sees_later(&op_cert, &op_key, &format!("edge/{FLEET}/n1/alerts"), 3);
    std::thread::sleep(std::time::Duration::from_millis(1000));
    f.raw_publish(
        &n1_cert,
        &n1_key,
        &format!("edge/{FLEET}/n1/alerts"),
        b"n1's own",
        false,
    );
    let got = watcher.join().unwrap();
    assert!(got.iter().any(|(_, p)| p == b"n1's own"), "{got:?}");
}

#[test]
fn fleet_commands_without_an_ops_file_say_to_pass_one() {
    let out = Command::new(edge_agent_tests::agent_bin())
        .args(["fleet", "nodes", "--config", "/nonexistent/ops.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78), "{}", both(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--config ops.toml"),
        "{}",
        both(&out)
    );
}
