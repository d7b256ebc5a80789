//! Fleet config on real nodes: real agents (the binary), a real mosquitto
//! running the shipped `configs/mosquitto/` files with mTLS and the ACL,
//! bundles made and published with the operator's CLI. What a node does
//! with each bundle is read where an operator reads it: the results on the
//! broker, the retained state message, `fleet results` and `fleet nodes`.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use edge_agent::fleet::bundle::{self, Payload, Target};
use edge_agent::fleet::keys::SigningKey;
use edge_agent_tests::fleet::{FLEET, Fleet, Watch, both};
use edge_agent_tests::{Daemon, SIGKILL, Scratch, status_json, wait_for};
use serde_json::Value;

/// Bundles go through the broker, a trial and the outbox: seconds on a
/// quiet machine, more on a busy one.
const LONG: Duration = Duration::from_secs(90);

fn results(f: &Fleet) -> Watch {
    f.watch(&format!("edge/{FLEET}/+/config/result"))
}

/// Wait for the result of `layer` version `version` from `node`.
fn result_for(w: &Watch, node: &str, layer: &str, version: u64) -> Value {
    w.wait(LONG, |t, v| {
        t == format!("edge/{FLEET}/{node}/config/result")
            && v["layer"] == layer
            && v["version"] == version
    })
    .unwrap_or_else(|| {
        panic!(
            "no result for {layer} v{version} from {node}; got {:#?}",
            w.json()
        )
    })
}

/// The fleet section of the node's `status --json`.
fn fleet_status(s: &Scratch) -> Value {
    status_json(s)["fleet"].clone()
}

fn effective_sha(s: &Scratch) -> String {
    fleet_status(s)["effective_sha256"]
        .as_str()
        .expect("effective_sha256")
        .to_string()
}

/// Start a node and wait until its uplink is connected (subscribed).
fn start(s: &Scratch) -> Daemon {
    start_with(s, &[])
}

fn start_with(s: &Scratch, env: &[(&str, &str)]) -> Daemon {
    let d = Daemon::start(s, env);
    let up = wait_for(LONG, || {
        let st = status_json(s);
        (st["stages"]["uplink"]["details"]["connected"] == true
            && st["stages"]["fleet"]["state"] == "running")
            .then_some(())
    });
    assert!(
        up.is_some(),
        "the node did not connect: {:#}\nlog:\n{}",
        status_json(s),
        d.log()
    );
    d
}

/// The operator's key, for bundles the CLI refuses to make.
fn operator_key(f: &Fleet) -> SigningKey {
    SigningKey::read(&f.key()).unwrap()
}

fn payload(target: Target, version: u64, overlay: &str) -> Payload {
    Payload {
        schema: bundle::SCHEMA,
        fleet: FLEET.into(),
        target,
        version,
        created_at: bundle::rfc3339(SystemTime::now()),
        expires_at: None,
        overlay: overlay.into(),
        rules: BTreeMap::new(),
    }
}

/// Publish raw bundle bytes as the operator on `topic`, retained.
fn publish_raw(f: &Fleet, topic: &str, bytes: &[u8]) {
    let (cert, key) = f.operator_cert();
    assert!(
        f.raw_publish(&cert, &key, topic, bytes, true),
        "mosquitto_pub"
    );
}

fn node_topic(node: &str) -> String {
    format!("edge/{FLEET}/{node}/config")
}

#[test]
fn group_and_node_layers_override_the_fleet_layer_in_order() {
    let f = Fleet::new();
    let s = f.node("n1", &["eu", "edge"], "[rules]\nmax_burst = 7\n");
    let _d = start(&s);
    let w = results(&f);
    let before = effective_sha(&s);
    for (target, version, overlay) in [
        (
            "fleet",
            3,
            "[rules]\nrate = 2.0\nmax_burst = 30\n[log]\nlevel = \"debug\"\n",
        ),
        // eu is published after edge, but node.groups puts it first: edge wins.
        ("group:edge", 4, "[rules]\nmax_burst = 50\n"),
        ("group:eu", 1, "[rules]\nmax_burst = 40\n"),
        ("node:n1", 7, "[log]\nlevel = \"warn\"\n"),
    ] {
        f.publish(&f.bundle(target, version, overlay, &[]));
        let r = result_for(&w, "n1", target, version);
        assert_eq!(r["outcome"], "applied", "{r:#}");
        assert_eq!(r["target"], target);
        for key in [
            "layer",
            "target",
            "version",
            "bundle_sha256",
            "outcome",
            "reasons",
            "effective_sha256",
            "time",
        ] {
            assert!(r.get(key).is_some(), "{key} missing: {r:#}");
        }
    }
    let fleet = fleet_status(&s);
    assert_eq!(
        fleet["layers"],
        serde_json::json!({"fleet": 3, "group:eu": 1, "group:edge": 4, "node:n1": 7}),
        "{fleet:#}"
    );
    assert_ne!(effective_sha(&s), before);

    // What the merged file says, and who said it.
    let out = s.cli(&["config", "show", "--effective", "--origin"]);
    assert!(out.status.success(), "{}", both(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    let line = |key: &str| {
        text.lines()
            .find(|l| l.starts_with(&format!("{key} = ")))
            .unwrap_or_else(|| panic!("{key} not shown:\n{text}"))
            .to_string()
    };
    assert!(
        line("rules.max_burst").contains("= 50")
            && line("rules.max_burst").ends_with("# group:edge v4"),
        "{text}"
    );
    assert!(
        line("rules.rate").contains("= 2.0") && line("rules.rate").ends_with("# fleet v3"),
        "{text}"
    );
    assert!(
        line("log.level").contains("\"warn\"") && line("log.level").ends_with("# node:n1 v7"),
        "{text}"
    );
    assert!(
        line("node.id").ends_with(&format!("# {}", s.config_path().display())),
        "{text}"
    );
    assert!(line("outbox.max_bytes").ends_with("# default"), "{text}");
    // The daemon runs exactly that config.
    assert!(
        text.contains(&format!("# effective_sha256 {}", effective_sha(&s))),
        "{text}"
    );
    // The local file was never rewritten.
    assert!(
        std::fs::read_to_string(s.config_path())
            .unwrap()
            .contains("max_burst = 7")
    );

    // The retained state message carries the versions and the hash.
    let state = f
        .operator_sees(&format!("edge/{FLEET}/n1/state"), 1)
        .pop()
        .expect("retained state");
    let doc: Value = serde_json::from_slice(&state.1).unwrap();
    assert_eq!(doc["fleet"]["layers"], fleet["layers"], "{doc:#}");
    assert_eq!(
        doc["fleet"]["effective_sha256"],
        effective_sha(&s),
        "{doc:#}"
    );

    // And `status` has a fleet line.
    let out = s.cli(&["status"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.lines()
            .any(|l| l.starts_with("fleet    fleet v3, group:eu v1, group:edge v4, node:n1 v7")),
        "{text}"
    );
}

#[test]
fn each_refusal_leaves_the_node_as_it_was_and_says_why() {
    let f = Fleet::new();
    let s = f.node("n1", &["eu"], "");
    let mut toml = std::fs::read_to_string(s.config_path()).unwrap();
    toml = toml.replace(
        "confirm_timeout = \"20s\"\n",
        "confirm_timeout = \"20s\"\nmax_bundle_bytes = \"8 KiB\"\n",
    );
    std::fs::write(s.config_path(), toml).unwrap();
    let _d = start(&s);
    let w = results(&f);
    f.publish(&f.bundle("node:n1", 5, "[rules]\nmax_burst = 9\n", &[]));
    assert_eq!(result_for(&w, "n1", "node:n1", 5)["outcome"], "applied");
    let before = effective_sha(&s);
    let layers = fleet_status(&s)["layers"].clone();
    let key = operator_key(&f);

    // The version in force again, with other content: a quiet no-op, no
    // result at all.
    let again = bundle::seal(
        &payload(Target::Node("n1".into()), 5, "[rules]\nmax_burst = 2\n"),
        &key,
    );
    let again_sha = bundle::sha256_hex(&again);
    publish_raw(&f, &node_topic("n1"), &again);
    let quiet = wait_for(LONG, || {
        let d = &fleet_status(&s);
        (status_json(&s)["stages"]["fleet"]["details"]["unchanged_total"] == 1).then_some(d.clone())
    });
    assert!(
        quiet.is_some(),
        "the equal version was not seen: {:#}",
        status_json(&s)
    );
    assert!(
        !w.json()
            .iter()
            .any(|(_, v)| v["bundle_sha256"] == again_sha),
        "an equal version was reported"
    );
    assert_eq!(
        effective_sha(&s),
        before,
        "an equal version changed the config"
    );

    // Each case: bytes, the topic, the layer, and what the reason says.
    let other_key = {
        let p = f.path().join("intruder.key");
        edge_agent::fleet::keys::generate(&p).unwrap();
        SigningKey::read(&p).unwrap()
    };
    let tampered = {
        let good = bundle::seal(&payload(Target::Node("n1".into()), 6, ""), &key);
        let mut env: Value = serde_json::from_slice(&good).unwrap();
        let other = bundle::seal(
            &payload(Target::Node("n1".into()), 6, "[rules]\nmax_burst = 1\n"),
            &key,
        );
        let other: Value = serde_json::from_slice(&other).unwrap();
        env["payload"] = other["payload"].clone();
        serde_json::to_vec(&env).unwrap()
    };
    let expired = {
        let mut p = payload(Target::Node("n1".into()), 8, "");
        p.expires_at = Some(bundle::rfc3339(
            SystemTime::now() - Duration::from_secs(3600),
        ));
        bundle::seal(&p, &key)
    };
    let big = {
        let mut p = payload(Target::Node("n1".into()), 9, "");
        p.rules
            .insert("big.yaml".into(), format!("# {}\n", "x".repeat(10_000)));
        bundle::seal(&p, &key)
    };
    let unsigned = {
        let good = bundle::seal(&payload(Target::Node("n1".into()), 6, ""), &key);
        let mut env: Value = serde_json::from_slice(&good).unwrap();
        env.as_object_mut().unwrap().remove("signature");
        serde_json::to_vec(&env).unwrap()
    };
    let other_fleet = {
        let mut p = payload(Target::Node("n1".into()), 7, "");
        p.fleet = "other-fleet".into();
        bundle::seal(&p, &key)
    };
    let cases: Vec<(&str, Vec<u8>, &str, &str)> = vec![
        ("bad signature", tampered, "node:n1", "bad signature"),
        ("missing signature", unsigned, "node:n1", "not signed"),
        (
            "untrusted key",
            bundle::seal(&payload(Target::Node("n1".into()), 7, ""), &other_key),
            "node:n1",
            "not in fleet.trusted_keys",
        ),
        (
            "replayed for another node",
            bundle::seal(&payload(Target::Node("n2".into()), 7, ""), &key),
            "node:n1",
            "node:n2",
        ),
        (
            "another fleet's bundle",
            other_fleet,
            "node:n1",
            "of fleet other-fleet",
        ),
        (
            "fleet bundle on a group topic",
            bundle::seal(&payload(Target::Fleet, 7, ""), &key),
            "group:eu",
            "arrived on the topic of group:eu",
        ),
        (
            "stale",
            bundle::seal(&payload(Target::Node("n1".into()), 4, ""), &key),
            "node:n1",
            "not above version 5",
        ),
        ("expired", expired, "node:n1", "expired"),
        ("oversized", big, "node:n1", "fleet.max_bundle_bytes"),
        (
            "forbidden key",
            bundle::seal(
                &payload(
                    Target::Node("n1".into()),
                    10,
                    "[uplink]\nurl = \"mqtts://evil:8883\"\n",
                ),
                &key,
            ),
            "node:n1",
            "node:n1 v10: uplink.url: a bundle may not set it",
        ),
        (
            "unknown key",
            bundle::seal(
                &payload(Target::Node("n1".into()), 11, "[rules]\nmax_bursts = 3\n"),
                &key,
            ),
            "node:n1",
            "node:n1 v11: rules.max_bursts",
        ),
        (
            "invalid merged config",
            bundle::seal(
                &payload(Target::Node("n1".into()), 12, "[rules]\nrate = -1.0\n"),
                &key,
            ),
            "node:n1",
            "node:n1 v12: rules.rate",
        ),
    ];
    // Every section and key that stays local, one bundle each.
    let forbidden = [
        (
            "[node]\ngroups = [\"x\"]\n",
            "node: a bundle may not set [node]",
        ),
        (
            "[paths]\nstate_dir = \"/tmp/x\"\n",
            "paths: a bundle may not set [paths]",
        ),
        (
            "[control]\ngroup = \"adm\"\n",
            "control: a bundle may not set [control]",
        ),
        (
            "[fleet]\ntrusted_keys = []\n",
            "fleet: a bundle may not set [fleet]",
        ),
        (
            "[uplink]\nca_file = \"/tmp/ca.pem\"\n",
            "uplink.ca_file: a bundle may not set it",
        ),
        (
            "[uplink]\ncert_file = \"/tmp/c.pem\"\n",
            "uplink.cert_file: a bundle may not set it",
        ),
        (
            "[uplink]\nkey_file = \"/tmp/c.key\"\n",
            "uplink.key_file: a bundle may not set it",
        ),
    ];
    let labels: Vec<String> = (0..forbidden.len())
        .map(|i| format!("node:n1 v{}: {}", 13 + i, forbidden[i].1))
        .collect();
    let mut cases = cases;
    for (i, (overlay, _)) in forbidden.iter().enumerate() {
        let version = 13 + i as u64;
        cases.push((
            "a key that stays local",
            bundle::seal(&payload(Target::Node("n1".into()), version, overlay), &key),
            "node:n1",
            &labels[i],
        ));
    }
    for (what, bytes, layer, reason) in cases {
        let topic = match layer {
            "group:eu" => format!("edge/{FLEET}/group/eu/config"),
            _ => node_topic("n1"),
        };
        let bundle_sha = bundle::sha256_hex(&bytes);
        publish_raw(&f, &topic, &bytes);
        let r = w
            .wait(LONG, |t, v| {
                t.ends_with("/n1/config/result") && v["bundle_sha256"] == bundle_sha
            })
            .unwrap_or_else(|| panic!("{what}: no result; got {:#?}", w.json()));
        let expected = if what == "stale" { "stale" } else { "refused" };
        assert_eq!(r["outcome"], expected, "{what}: {r:#}");
        assert_eq!(r["layer"], layer, "{what}: {r:#}");
        let reasons = r["reasons"].to_string();
        assert!(reasons.contains(reason), "{what}: {reasons}");
        assert_eq!(effective_sha(&s), before, "{what}: the config changed");
        assert_eq!(
            fleet_status(&s)["layers"],
            layers,
            "{what}: the layers changed"
        );
    }
}

#[test]
fn a_bundle_whose_rules_do_not_all_load_is_reverted() {
    let f = Fleet::new();
    let s = f.node("n1", &[], "");
    let _d = start(&s);
    let w = results(&f);
    let good_rule = "- rule: Fleet marker\n  desc: shipped by the fleet\n  condition: evt.type = openat and fd.name = /nonexistent/fleet-marker\n  output: marker (%fd.name)\n  priority: WARNING\n";
    f.publish(&f.bundle("fleet", 1, "", &[("50-fleet.yaml", good_rule)]));
    assert_eq!(result_for(&w, "n1", "fleet", 1)["outcome"], "applied");
    let sha = effective_sha(&s);
    let broken = format!(
        "{good_rule}- rule: Broken\n  desc: does not compile\n  condition: evt.type = openat and no.such.field = 1\n  output: never\n  priority: WARNING\n"
    );
    f.publish(&f.bundle("fleet", 2, "", &[("50-fleet.yaml", &broken)]));
    let r = result_for(&w, "n1", "fleet", 2);
    assert_eq!(r["outcome"], "reverted", "{r:#}");
    assert!(r["reasons"].to_string().contains("rules"), "{r:#}");
    assert_eq!(r["effective_sha256"], sha, "{r:#}");
    assert_eq!(effective_sha(&s), sha);
    assert_eq!(fleet_status(&s)["layers"]["fleet"], 1);
    // The rules stage runs the good set again.
    let out = s.cli(&["rules", "list", "--json"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("Fleet marker") && !text.contains("\"Broken\""),
        "{text}"
    );
    // The reverted version is decided: its retained copy is not tried again
    // after a restart. (A result the broker had not acknowledged before the
    // kill is sent again with its own seq: a copy, not another try.)
    drop(_d);
    let _d = start(&s);
    std::thread::sleep(Duration::from_secs(3));
    let tries: std::collections::BTreeSet<u64> = w
        .json()
        .into_iter()
        .filter(|(_, v)| v["layer"] == "fleet" && v["version"] == 2)
        .map(|(_, v)| v["seq"].as_u64().expect("seq"))
        .collect();
    assert_eq!(tries.len(), 1, "{:#?}", w.json());
}

#[test]
fn sigkill_during_the_trial_leaves_the_node_on_the_last_good_config_after_restart() {
    let f = Fleet::new();
    let s = f.node("n1", &[], "");
    let mut d = start_with(&s, &[("EDGE_AGENT_TEST_TRIAL_PAUSE_MS", "0")]);
    let w = results(&f);
    f.publish(&f.bundle("fleet", 1, "[rules]\nmax_burst = 11\n", &[]));
    assert_eq!(result_for(&w, "n1", "fleet", 1)["outcome"], "applied");
    let good = effective_sha(&s);
    drop(d);
    d = start_with(&s, &[("EDGE_AGENT_TEST_TRIAL_PAUSE_MS", "600000")]);
    f.publish(&f.bundle("fleet", 2, "[rules]\nmax_burst = 22\n", &[]));
    let on_trial = wait_for(LONG, || {
        let fleet = fleet_status(&s);
        (fleet["trial"]["version"] == 2).then_some(fleet)
    });
    assert!(on_trial.is_some(), "no trial: {:#}", status_json(&s));
    assert_ne!(
        effective_sha(&s),
        good,
        "the candidate runs during its trial"
    );
    d.signal(SIGKILL);
    d.wait_exit(Duration::from_secs(10)).expect("killed");
    drop(d);

    let _d = start(&s);
    let r = result_for(&w, "n1", "fleet", 2);
    assert_eq!(r["outcome"], "reverted", "{r:#}");
    assert!(
        r["reasons"]
            .to_string()
            .contains("stopped during the trial"),
        "{r:#}"
    );
    assert_eq!(effective_sha(&s), good);
    assert_eq!(fleet_status(&s)["layers"]["fleet"], 1);
    let out = s.cli(&["config", "show", "--effective", "--origin"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("rules.max_burst = 11"), "{text}");
}

#[test]
fn an_offline_node_catches_up_with_only_the_newest_retained_bundle_per_layer() {
    let f = Fleet::new();
    let s = f.node("n1", &["eu"], "");
    let w = results(&f);
    let layers = ["fleet", "group:eu", "node:n1"];
    let overlay = |layer: &str, v: u64| match layer {
        "fleet" => format!("[rules]\nmax_burst = {}\n", 10 + v),
        "group:eu" => format!("[rules]\nrate = {v}.5\n"),
        _ => format!("[metrics]\ninterval = \"{}s\"\n", 10 + v),
    };
    // The node knows the broker (its persistent session holds its
    // subscriptions) and has applied version 1 of every layer.
    let mut d = start(&s);
    for layer in layers {
        f.publish(&f.bundle(layer, 1, &overlay(layer, 1), &[]));
        assert_eq!(result_for(&w, "n1", layer, 1)["outcome"], "applied");
    }
    d.signal(edge_agent_tests::SIGTERM);
    d.wait_exit(Duration::from_secs(20)).expect("n1 stops");
    drop(d);

    // Three versions of each layer while it is away.
    for v in 2..=4 {
        for layer in layers {
            f.publish(&f.bundle(layer, v, &overlay(layer, v), &[]));
        }
    }
    let _d = start(&s);
    for layer in layers {
        assert_eq!(result_for(&w, "n1", layer, 4)["outcome"], "applied");
    }
    // Anything queued for its session would have come before the retained
    // copies; give a straggler time to show.
    std::thread::sleep(Duration::from_secs(3));
    let mut seen: Vec<(String, u64)> = w
        .json()
        .into_iter()
        .map(|(_, v)| {
            (
                v["layer"].as_str().unwrap().to_string(),
                v["version"].as_u64().unwrap(),
            )
        })
        .collect();
    seen.sort();
    let mut expected: Vec<(String, u64)> = layers
        .iter()
        .flat_map(|l| [(l.to_string(), 1), (l.to_string(), 4)])
        .collect();
    expected.sort();
    assert_eq!(
        seen,
        expected,
        "versions 2 and 3 of a layer were looked at: {:#?}",
        w.json()
    );
    assert_eq!(
        fleet_status(&s)["layers"],
        serde_json::json!({"fleet": 4, "group:eu": 4, "node:n1": 4})
    );
    let out = s.cli(&["config", "show", "--effective", "--origin"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("rules.max_burst = 14") && text.contains("rules.rate = 4.5"),
        "{text}"
    );
}

#[test]
fn fleet_results_and_fleet_nodes_show_what_the_nodes_did() {
    let f = Fleet::new();
    let n1 = f.node("n1", &[], "");
    let n2 = f.node("n2", &[], "");
    let _d1 = start(&n1);
    let mut d2 = start(&n2);
    let w = results(&f);
    // The live views, started before anything happened.
    let live_results = f.fleet_live(&["results", "--watch", "--node", "n1"]);
    let live_nodes = f.fleet_live(&["nodes", "--watch", "--json"]);
    let json_lines = |live: &edge_agent_tests::fleet::Live| -> Vec<Value> {
        live.lines()
            .iter()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
            .collect()
    };
    assert!(
        live_results
            .wait_line(LONG, |l| l.contains("has reported a config result yet"))
            .is_some(),
        "{:?}",
        live_results.lines()
    );
    let both_online = wait_for(LONG, || {
        let lines = json_lines(&live_nodes);
        ["n1", "n2"]
            .iter()
            .all(|n| {
                lines
                    .iter()
                    .any(|d| d["node"] == *n && d["state"] == "online")
            })
            .then_some(())
    });
    assert!(both_online.is_some(), "{:?}", live_nodes.lines());

    f.publish(&f.bundle("fleet", 1, "[rules]\nmax_burst = 12\n", &[]));
    result_for(&w, "n1", "fleet", 1);
    result_for(&w, "n2", "fleet", 1);
    // `results --watch --node n1` printed n1's result as it came, and only n1's.
    let line = live_results.wait_line(LONG, |l| l.contains("  n1  fleet v1  APPLIED"));
    assert!(line.is_some(), "{:?}", live_results.lines());
    // `nodes --watch --json`: a line per state change, both nodes on fleet v1.
    let both_v1 = wait_for(LONG, || {
        let lines = json_lines(&live_nodes);
        ["n1", "n2"]
            .iter()
            .all(|n| {
                lines
                    .iter()
                    .any(|d| d["node"] == *n && d["fleet"]["layers"]["fleet"] == 1)
            })
            .then_some(())
    });
    assert!(both_v1.is_some(), "{:?}", live_nodes.lines());
    // Wait until both retained state messages carry the layer.
    let carried = wait_for(LONG, || {
        let out = f.fleet(&["nodes", "--json"]);
        let doc: Value = serde_json::from_slice(&out.stdout).ok()?;
        let nodes = doc["nodes"].as_array()?.clone();
        (nodes.len() == 2 && nodes.iter().all(|n| n["fleet"]["layers"]["fleet"] == 1))
            .then_some(out)
    });
    let out = carried.expect("fleet nodes --json shows both nodes on fleet v1");
    assert_eq!(out.status.code(), Some(0), "{}", both(&out));

    let out = f.fleet(&["nodes"]);
    assert_eq!(out.status.code(), Some(0), "{}", both(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    for n in ["n1", "n2"] {
        let line = text
            .lines()
            .find(|l| l.starts_with(n))
            .unwrap_or_else(|| panic!("{text}"));
        assert!(
            line.contains("online")
                && line.contains("fleet v1")
                && line.contains("applied fleet v1"),
            "{line}"
        );
    }
    let out = f.fleet(&["results"]);
    assert_eq!(out.status.code(), Some(0), "{}", both(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        text.lines()
            .filter(|l| l.contains("fleet v1  APPLIED"))
            .count(),
        2,
        "{text}"
    );
    let out = f.fleet(&["results", "--node", "n2", "--json"]);
    let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["node"], "n2");

    // A refusal makes `results` and `nodes` exit 2.
    publish_raw(&f, &node_topic("n1"), b"not a bundle");
    result_for_sha(&w, "n1", &bundle::sha256_hex(b"not a bundle"));
    let settled = wait_for(LONG, || {
        let out = f.fleet(&["results"]);
        (out.status.code() == Some(2)).then_some(out)
    });
    let out = settled.expect("fleet results exits 2 after a refusal");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("REFUSED"),
        "{}",
        both(&out)
    );
    let out = f.fleet(&["nodes"]);
    assert_eq!(out.status.code(), Some(2), "{}", both(&out));

    // An offline node makes `nodes` exit 2 and shows as OFFLINE.
    d2.signal(edge_agent_tests::SIGTERM);
    d2.wait_exit(Duration::from_secs(20)).expect("n2 stops");
    let out = wait_for(LONG, || {
        let out = f.fleet(&["nodes"]);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .any(|l| l.starts_with("n2") && l.contains("OFFLINE"))
            .then_some(out)
    })
    .expect("n2 shows as offline");
    assert_eq!(out.status.code(), Some(2), "{}", both(&out));

    // The live views saw all of it: n1's refusal, n2 going offline; never
    // a result of n2 in n1's view.
    let refusal = live_results.wait_line(LONG, |l| l.contains("  n1  node:n1 -  REFUSED"));
    assert!(refusal.is_some(), "{:?}", live_results.lines());
    let offline = wait_for(LONG, || {
        json_lines(&live_nodes)
            .iter()
            .any(|d| d["node"] == "n2" && d["state"] == "offline")
            .then_some(())
    });
    assert!(offline.is_some(), "{:?}", live_nodes.lines());
    assert!(
        !live_results.lines().iter().any(|l| l.contains("  n2  ")),
        "{:?}",
        live_results.lines()
    );
    // Ctrl-C ends them cleanly.
    assert_eq!(live_results.interrupt(), Some(0));
    assert_eq!(live_nodes.interrupt(), Some(0));
}

fn result_for_sha(w: &Watch, node: &str, sha: &str) -> Value {
    w.wait(LONG, |t, v| {
        t.ends_with(&format!("/{node}/config/result")) && v["bundle_sha256"] == sha
    })
    .unwrap_or_else(|| panic!("no result for {sha}: {:#?}", w.json()))
}

#[test]
fn a_flood_of_junk_costs_a_few_results_and_the_next_good_bundle_still_applies() {
    let f = Fleet::new();
    let s = f.node("n1", &[], "");
    let _d = start(&s);
    let w = results(&f);
    let (cert, key) = f.operator_cert();
    let flood = std::time::Instant::now();
    for i in 0..200 {
        assert!(f.raw_publish(
            &cert,
            &key,
            &node_topic("n1"),
            format!("junk {i}").as_bytes(),
            false
        ));
    }
    f.publish(&f.bundle("node:n1", 1, "[rules]\nmax_burst = 13\n", &[]));
    let r = result_for(&w, "n1", "node:n1", 1);
    assert_eq!(r["outcome"], "applied", "{r:#}");
    // A burst of 10, then one every 6 s: the outbox sees that many at most,
    // however many junk messages came.
    let allowance = 10 + flood.elapsed().as_secs() / 6 + 1;
    let refused = w
        .json()
        .iter()
        .filter(|(_, v)| v["outcome"] == "refused")
        .count() as u64;
    assert!(
        refused <= allowance,
        "{refused} refusal results for 200 junk messages in {:?}",
        flood.elapsed()
    );
    let details = &status_json(&s)["stages"]["fleet"]["details"];
    let counted = details["refused_total"].as_u64().unwrap_or(0)
        + details["refusals_suppressed_total"].as_u64().unwrap_or(0);
    assert!(counted > 0, "{details:#}");
}

#[test]
fn a_fleet_wide_rules_change_makes_a_new_rule_fire_on_a_real_event() {
    edge_agent_tests::require_root();
    let f = Fleet::new();
    let s = f.node("n1", &[], "[sensor]\nenabled = true\n");
    let _d = start(&s);
    let sensor = wait_for(LONG, || {
        let st = status_json(&s);
        let state = st["stages"]["sensor"]["state"].as_str()?.to_string();
        (state != "starting").then_some(state)
    });
    assert!(
        matches!(sensor.as_deref(), Some("running" | "degraded")),
        "{:#}",
        status_json(&s)
    );
    let alerts = f.watch(&format!("edge/{FLEET}/n1/alerts"));
    let dir = tempfile::Builder::new()
        .prefix("ea-fleet-marker-")
        .tempdir()
        .unwrap();
    let marker = |name: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, b"x").unwrap();
        p.display().to_string()
    };
    let rule = format!(
        "- rule: Fleet marker written\n  desc: a rule the fleet shipped\n  condition: evt.type in (open, openat, openat2) and fd.name startswith {}/\n  output: fleet marker written (file=%fd.name proc=%proc.name)\n  priority: CRITICAL\n",
        dir.path().display()
    );
    let before = marker("before");
    std::thread::sleep(Duration::from_secs(2));
    let w = results(&f);
    f.publish(&f.bundle("fleet", 1, "", &[("60-fleet-marker.yaml", &rule)]));
    assert_eq!(result_for(&w, "n1", "fleet", 1)["outcome"], "applied");
    let after = marker("after");
    let alert = alerts
        .wait(LONG, |_, v| {
            v["rule"] == "Fleet marker written" && v["output_fields"]["fd.name"] == after
        })
        .unwrap_or_else(|| panic!("no alert for {after}: {:#?}", alerts.json()));
    assert_eq!(alert["priority"], "Critical", "{alert:#}");
    assert!(
        !alerts
            .json()
            .iter()
            .any(|(_, v)| v["output_fields"]["fd.name"] == before),
        "the rule fired before it was shipped"
    );
}
