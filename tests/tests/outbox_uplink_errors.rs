//! The uplink when the broker and the agent do not trust each other, or the
//! broker refuses the node: a clear error in status and log, retries with
//! backoff (not a hot loop), and nothing lost.

use std::time::{Duration, Instant};

use edge_agent_tests::broker::{
    AgentAccess, Broker, Certs, Subscriber, certs_and_broker, free_port, inject, stage,
    uplink_toml, wait_stage,
};
use edge_agent_tests::{Daemon, Scratch};
use serde_json::Value;

const LONG: Duration = Duration::from_secs(60);

/// Start an agent against `broker` with the given CA and client identity,
/// queue five alerts, and wait until the uplink reports `code`.
fn failing(
    scratch: &Scratch,
    url: &str,
    ca: &std::path::Path,
    cert: &std::path::Path,
    key: &std::path::Path,
    code: &str,
) -> (Daemon, Value) {
    scratch.write_config(&uplink_toml(url, ca, (cert, key)));
    let d = scratch.start();
    let queued = inject(scratch, "alert", 5, 100).unwrap();
    assert!(queued.iter().all(Option::is_some));
    let st = wait_stage(scratch, "uplink", LONG, |s| {
        s["details"]["last_error_code"] == code
    });
    (d, st)
}

/// Connection attempts over a few seconds: a retry loop with backoff makes
/// a handful, a hot loop thousands.
fn assert_backs_off(scratch: &Scratch) {
    let before = stage(scratch, "uplink")["details"]["reconnects_total"]
        .as_u64()
        .unwrap();
    let started = Instant::now();
    std::thread::sleep(Duration::from_secs(6));
    let after = stage(scratch, "uplink")["details"]["reconnects_total"]
        .as_u64()
        .unwrap();
    let made = after - before;
    assert!(
        made <= 6,
        "{made} attempts in {:?}: no backoff",
        started.elapsed()
    );
    assert!(after >= 2, "it keeps retrying");
    let next = stage(scratch, "uplink")["details"]["next_retry_secs"].clone();
    assert!(
        next.is_u64(),
        "status says when the next attempt is: {next}"
    );
}

fn assert_nothing_lost(scratch: &Scratch) {
    wait_stage(scratch, "outbox", LONG, |s| {
        s["details"]["records_waiting_by_class"]["alert"].as_u64() == Some(5)
    });
}

#[test]
fn an_agent_that_does_not_trust_the_broker_says_so_backs_off_and_keeps_its_records() {
    let scratch = Scratch::new("");
    let (certs, broker) = certs_and_broker(scratch.path());
    let (d, st) = failing(
        &scratch,
        &broker.agent_url(),
        &certs.rogue_ca(),
        &certs.client_cert(),
        &certs.client_key(),
        "tls_server_untrusted",
    );
    let msg = st["last_error"]["message"].as_str().unwrap();
    eprintln!("an untrusted broker shows as: {msg}");
    assert!(
        msg.contains("uplink.ca_file") && msg.contains("rogue-ca.pem"),
        "{msg}"
    );
    assert_eq!(st["state"], "degraded");
    assert!(
        st["summary"].as_str().unwrap().contains("NOT CONNECTED"),
        "{st}"
    );
    assert!(d.log().contains("uplink.ca_file"), "logged: {}", d.log());
    assert_backs_off(&scratch);
    assert_nothing_lost(&scratch);
}

#[test]
fn a_client_certificate_the_broker_does_not_trust_is_reported_with_backoff() {
    let scratch = Scratch::new("");
    let (certs, broker) = certs_and_broker(scratch.path());
    scratch.write_config(&uplink_toml(
        &broker.agent_url(),
        &certs.ca(),
        (&certs.rogue_client_cert(), &certs.rogue_client_key()),
    ));
    let d = scratch.start();
    assert!(
        inject(&scratch, "alert", 5, 100)
            .unwrap()
            .iter()
            .all(Option::is_some)
    );
    let st = wait_stage(&scratch, "uplink", LONG, |s| {
        s["details"]["reconnects_total"].as_u64().unwrap_or(0) >= 1 && !s["last_error"].is_null()
    });
    let msg = st["last_error"]["message"].as_str().unwrap();
    eprintln!(
        "a rejected client certificate shows as: {msg} [{}]",
        st["details"]["last_error_code"]
    );
    assert!(
        msg.contains("uplink.cert_file") && msg.contains("rogue-client.pem"),
        "{msg}"
    );
    assert!(
        ["tls_rejected_by_broker", "connection_closed"]
            .contains(&st["details"]["last_error_code"].as_str().unwrap()),
        "{st}"
    );
    assert!(d.log().contains("uplink.cert_file"), "logged: {}", d.log());
    assert_backs_off(&scratch);
    assert_nothing_lost(&scratch);
}

#[test]
fn a_broker_refusing_the_node_is_reported_and_delivery_resumes_once_it_accepts() {
    let scratch = Scratch::new("");
    let certs = Certs::generate(&scratch.path().join("certs"));
    let mut broker = Broker::start(
        &scratch.path().join("broker"),
        &certs,
        false,
        AgentAccess::Refused,
    );
    let (d, st) = failing(
        &scratch,
        &broker.agent_url(),
        &certs.ca(),
        &certs.client_cert(),
        &certs.client_key(),
        "refused",
    );
    assert!(
        st["last_error"]["message"]
            .as_str()
            .unwrap()
            .contains("not authorized"),
        "{st}"
    );
    assert!(d.log().contains("not authorized"), "logged: {}", d.log());
    assert_backs_off(&scratch);
    assert_nothing_lost(&scratch);

    // The operator's check says why nothing arrives, and exits 2.
    let out = scratch.cli(&["test-alert", "--wait", "1s"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(
        text.contains("NOT DELIVERED") && text.contains("not authorized"),
        "{text}"
    );

    // The broker's rules are fixed: everything queued arrives.
    broker.restart(AgentAccess::Allowed);
    let sub = Subscriber::start(&broker);
    assert!(
        sub.wait_until(Duration::from_secs(90), |m| m
            .iter()
            .filter(|m| m.topic.ends_with("/alerts"))
            .count()
            >= 6),
        "queued alerts were not delivered; log:\n{}",
        d.log()
    );
}

#[test]
fn nothing_listening_at_the_broker_address_is_reported_as_unreachable() {
    let scratch = Scratch::new("");
    let certs = Certs::generate(&scratch.path().join("certs"));
    let url = format!("mqtts://127.0.0.1:{}", free_port());
    let (_d, st) = failing(
        &scratch,
        &url,
        &certs.ca(),
        &certs.client_cert(),
        &certs.client_key(),
        "unreachable",
    );
    assert!(
        st["last_error"]["message"]
            .as_str()
            .unwrap()
            .contains("connection refused"),
        "{st}"
    );
    assert_nothing_lost(&scratch);
}

#[test]
fn an_unreadable_client_key_is_a_clear_error_naming_the_key() {
    let scratch = Scratch::new("");
    let certs = Certs::generate(&scratch.path().join("certs"));
    let missing = scratch.path().join("no-such.key");
    let (_d, st) = failing(
        &scratch,
        "mqtts://127.0.0.1:1",
        &certs.ca(),
        &certs.client_cert(),
        &missing,
        "tls_config",
    );
    let msg = st["last_error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("uplink.key_file") && msg.contains("no-such.key"),
        "{msg}"
    );
    assert_nothing_lost(&scratch);
}
