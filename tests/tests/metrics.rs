//! Host metrics against the real binary, the real kernel's /proc and /sys,
//! the real `prometheus-node-exporter` and `promtool`. K3s cannot be
//! installed here, so its health endpoints are stand-ins started by the
//! tests (a plain HTTP server answering like the kubelet's /healthz, and
//! `openssl s_server` answering /readyz with a test CA); they say so.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use edge_agent_tests::bootstrap::{Node, agent_section};
use edge_agent_tests::broker::{certs_and_broker, wait_stage};
use edge_agent_tests::foundation::repo_root;
use edge_agent_tests::metrics::{
    KubeletLookalike, NodeExporter, ReadyzLookalike, SeriesKey, TestPki, http_get, metrics_addr,
    metrics_detail, parse_exposition, promtool_check, rss_kib, wait_collections,
};
use edge_agent_tests::sensor::start_with_sensor;
use edge_agent_tests::{Scratch, status_json, wait_for};

fn scrape(addr: &str) -> BTreeMap<SeriesKey, f64> {
    let (code, body) = http_get(addr, "/metrics").expect("scrape");
    assert_eq!(code, 200, "{body}");
    parse_exposition(&body)
}

fn series<'a>(
    m: &'a BTreeMap<SeriesKey, f64>,
    name: &str,
) -> impl Iterator<Item = (&'a SeriesKey, f64)> {
    let name = name.to_string();
    m.iter()
        .filter(move |(k, _)| k.name == name)
        .map(|(k, v)| (k, *v))
}

fn one(m: &BTreeMap<SeriesKey, f64>, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    series(m, name)
        .find(|(k, _)| labels.iter().all(|(l, v)| k.label(l) == Some(*v)))
        .map(|(_, v)| v)
}

/// `promtool check metrics` on `body`: its only complaint may be the
/// camelCase of node_memory_* names, which node_exporter itself has
/// (dashboards depend on them, so they stay).
fn assert_promtool_accepts(body: &str) {
    let (rc, said) = promtool_check(body);
    let problems: Vec<&str> = said
        .lines()
        .filter(|l| !l.trim().is_empty())
        .filter(|l| {
            !(l.starts_with("node_memory_")
                && l.ends_with("metric names should be written in 'snake_case' not 'camelCase'"))
        })
        .collect();
    assert!(
        problems.is_empty() && (rc == 0 || rc == 3),
        "promtool exit {rc}:\n{said}"
    );
}

#[test]
fn the_endpoint_serves_what_promtool_check_metrics_accepts() {
    let s = Scratch::new("[metrics]\nlisten = \"127.0.0.1:0\"\ninterval = \"1h\"\n");
    let _d = s.start();
    let addr = metrics_addr(&s);
    let (code, body) = http_get(&addr, "/metrics").unwrap();
    assert_eq!(code, 200);
    assert!(
        body.contains("# TYPE node_cpu_seconds_total counter"),
        "{body}"
    );
    assert_promtool_accepts(&body);
    // The same lint on node_exporter's own output, for the record: the
    // exceptions above are node_exporter's names, not new ones.
    let ne = NodeExporter::start(&[]);
    let (_, ne_body) = http_get(&ne.addr, "/metrics").unwrap();
    let (_, ne_said) = promtool_check(&ne_body);
    assert!(
        ne_said.contains(
            "node_memory_MemAvailable_bytes metric names should be written in 'snake_case'"
        )
    );

    // Other paths and methods.
    assert_eq!(http_get(&addr, "/nope").unwrap().0, 404);
    assert_eq!(http_get(&addr, "/").unwrap().0, 200);
}

/// Every stage publishes its status numbers as metrics, so the lint must
/// see them all: the sensor (root), the rules with the shipped set, the
/// bootstrap on a scratch root, the uplink connected to a real broker.
#[test]
fn with_every_stage_on_the_endpoint_passes_promtool() {
    edge_agent_tests::require_root();
    let bootstrap =
        agent_section("enabled = true\ninterval = \"1s\"\nk3s_version = \"v1.31.6+k3s1\"\n");
    let node = Node::new(&bootstrap, "");
    node.token();
    let (certs, broker) = certs_and_broker(node.scratch.path());
    let rules = repo_root().join("configs/rules/*.yaml");
    node.scratch.write_config(&format!(
        "[bootstrap]\nroot = \"{}\"\n{}\n[sensor]\nenabled = true\n\n[rules]\nfiles = [\"{}\"]\n\n[metrics]\nlisten = \"127.0.0.1:0\"\ninterval = \"1s\"\n\n{}",
        node.root().display(),
        bootstrap,
        rules.display(),
        certs.uplink_toml(&broker.agent_url()),
    ));
    let d = start_with_sensor(&node.scratch);
    let addr = metrics_addr(&node.scratch);
    // Every stage up and reporting before the lint reads its numbers.
    for stage in [
        "sensor",
        "rules",
        "metrics",
        "bootstrap",
        "outbox",
        "uplink",
    ] {
        let st = wait_stage(&node.scratch, stage, Duration::from_secs(30), |s| {
            s["state"] == "running" || s["state"] == "degraded"
        });
        assert!(
            st["details"].as_object().is_some_and(|d| !d.is_empty()),
            "{stage}: {st:#}\n{}",
            d.log()
        );
    }
    // The sensor has counted events (the status calls above are execs) ...
    wait_stage(&node.scratch, "sensor", Duration::from_secs(30), |s| {
        s["details"]["events_total_by_type"]
            .as_object()
            .is_some_and(|m| !m.is_empty())
    });
    // ... and the metrics stage has collected since.
    let seen = wait_collections(&node.scratch, 1, Duration::from_secs(30));
    wait_collections(&node.scratch, seen + 2, Duration::from_secs(30));
    let (code, body) = http_get(&addr, "/metrics").unwrap();
    assert_eq!(code, 200);
    for family in [
        "edge_agent_sensor_",
        "edge_agent_rules_",
        "edge_agent_bootstrap_",
        "edge_agent_outbox_",
        "edge_agent_uplink_",
    ] {
        assert!(body.contains(family), "no {family}* series:\n{body}");
    }
    // The sensor's two offenders, in base units: a counter per event type
    // (Prometheus derives rates) and seconds.
    assert!(
        body.contains("# TYPE edge_agent_sensor_events_total counter"),
        "{body}"
    );
    assert!(
        body.contains("edge_agent_sensor_startup_seconds "),
        "{body}"
    );
    assert_promtool_accepts(&body);
}

#[test]
fn shared_series_agree_with_prometheus_node_exporter_on_this_machine() {
    // A long interval: the agent collects for this test's scrape, not from
    // a timer tick that may predate node_exporter's first reading.
    let s = Scratch::new("[metrics]\nlisten = \"127.0.0.1:0\"\ninterval = \"1h\"\n");
    let _d = s.start();
    let addr = metrics_addr(&s);
    // Debian's node_exporter leaves out lo by default; include every device.
    let ne = NodeExporter::start(&["--collector.netdev.device-exclude=^$"]);
    // The start-up collection must be over a second old, so the scrape
    // below collects afresh.
    std::thread::sleep(Duration::from_millis(1100));

    let before = scrape(&ne.addr);
    let ours = scrape(&addr);
    let after = scrape(&ne.addr);

    // Counters read between two node_exporter readings lie between them.
    // Tolerance: both read the same kernel counters; 0.01 covers the
    // decimal rounding of USER_HZ ticks and microseconds.
    let bracket = |name: &str, labels: &[(&str, &str)], tol: f64| {
        let a = one(&before, name, labels)
            .unwrap_or_else(|| panic!("node_exporter lacks {name}{labels:?}"));
        let b = one(&after, name, labels).unwrap();
        let v = one(&ours, name, labels).unwrap_or_else(|| panic!("agent lacks {name}{labels:?}"));
        let (lo, hi) = (a.min(b) - tol, a.max(b) + tol);
        assert!(
            lo <= v && v <= hi,
            "{name}{labels:?}: agent {v} outside node_exporter's [{a}, {b}] ± {tol}"
        );
    };

    let mut cpus = 0;
    for (k, _) in series(&before, "node_cpu_seconds_total") {
        let labels = [
            ("cpu", k.label("cpu").unwrap()),
            ("mode", k.label("mode").unwrap()),
        ];
        bracket("node_cpu_seconds_total", &labels, 0.01);
        cpus += 1;
    }
    assert!(cpus >= 8, "node_exporter reported {cpus} cpu series");
    bracket("node_network_receive_bytes_total", &[("device", "lo")], 0.0);
    bracket(
        "node_network_transmit_bytes_total",
        &[("device", "lo")],
        0.0,
    );
    bracket(
        "node_network_receive_packets_total",
        &[("device", "lo")],
        0.0,
    );
    bracket("node_context_switches_total", &[], 0.0);
    bracket("node_forks_total", &[], 0.0);
    bracket("node_load1", &[], 0.001);
    let mut pressure = 0;
    for (k, _) in before
        .iter()
        .filter(|(k, _)| k.name.starts_with("node_pressure_"))
    {
        bracket(&k.name, &[], 0.001);
        pressure += 1;
    }
    if std::path::Path::new("/proc/pressure/cpu").exists() {
        assert!(
            pressure >= 5,
            "node_exporter reported {pressure} pressure series"
        );
    }

    // Constants agree exactly.
    for (name, labels) in [
        ("node_memory_MemTotal_bytes", vec![]),
        ("node_memory_SwapTotal_bytes", vec![]),
        ("node_boot_time_seconds", vec![]),
        ("node_filesystem_size_bytes", vec![("mountpoint", "/")]),
        ("node_filesystem_files", vec![("mountpoint", "/")]),
        ("node_filefd_maximum", vec![]),
    ] {
        let theirs =
            one(&before, name, &labels).unwrap_or_else(|| panic!("node_exporter lacks {name}"));
        let mine = one(&ours, name, &labels).unwrap_or_else(|| panic!("agent lacks {name}"));
        assert_eq!(mine, theirs, "{name}{labels:?}");
    }
    // Free space moves with every write on a shared disk: 64 MiB.
    let theirs = one(
        &before,
        "node_filesystem_avail_bytes",
        &[("mountpoint", "/")],
    )
    .unwrap();
    let mine = one(&ours, "node_filesystem_avail_bytes", &[("mountpoint", "/")]).unwrap();
    assert!(
        (mine - theirs).abs() <= 64.0 * 1024.0 * 1024.0,
        "avail: agent {mine}, node_exporter {theirs}"
    );

    // Every node_* name the agent serves that node_exporter also serves has
    // the same type.
    let (_, ne_text) = http_get(&ne.addr, "/metrics").unwrap();
    let (_, our_text) = http_get(&addr, "/metrics").unwrap();
    let types = |t: &str| -> BTreeMap<String, String> {
        t.lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split_once(' '))
            .map(|(n, t)| (n.to_string(), t.to_string()))
            .collect()
    };
    let (theirs, mine) = (types(&ne_text), types(&our_text));
    let mut shared = 0;
    for (name, ty) in &mine {
        if let Some(t) = theirs.get(name) {
            assert_eq!(ty, t, "TYPE of {name}");
            shared += 1;
        }
    }
    assert!(
        shared >= 60,
        "only {shared} names shared with node_exporter"
    );
}

#[test]
fn collection_goes_on_and_memory_stays_flat_with_no_uplink_and_a_small_outbox() {
    // No uplink URL (a dead link from the start) and the smallest outbox
    // budget; batches every second, plus scrapes in between (a collection
    // happens at most once a second, so about 35 in the 40 s window).
    let s = Scratch::new(
        "[outbox]\nmax_bytes = \"1 MiB\"\n\n[metrics]\nlisten = \"127.0.0.1:0\"\ninterval = \"1s\"\n",
    );
    let d = s.start();
    let addr = metrics_addr(&s);
    // Warm-up: allocator arenas, the HTTP and TLS machinery, first probes.
    wait_collections(&s, 8, Duration::from_secs(60));
    let rss_before = rss_kib(d.pid());
    let collections_before = metrics_detail(&s, "collections_total").unwrap();
    let batches_before = metrics_detail(&s, "batches_queued_total").unwrap()
        + metrics_detail(&s, "batches_refused_total").unwrap();
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(40) {
        let _ = scrape(&addr);
        std::thread::sleep(Duration::from_millis(550));
    }
    let batches_after = metrics_detail(&s, "batches_queued_total").unwrap()
        + metrics_detail(&s, "batches_refused_total").unwrap();
    let collections = metrics_detail(&s, "collections_total").unwrap() - collections_before;
    let rss_after = rss_kib(d.pid());
    assert!(
        batches_after - batches_before >= 10.0,
        "batches stopped: {batches_before} -> {batches_after}"
    );
    assert!(
        collections >= 20.0,
        "only {collections} collections in 20 s"
    );
    let st = status_json(&s);
    let m = &st["stages"]["metrics"];
    assert!(m["state"] == "running" || m["state"] == "degraded", "{m}");
    // Measured here: allocator settling adds well under 300 KiB over such
    // a window, while keeping one snapshot or batch per collection
    // (30-100 KiB each) would add over 1 MiB across 35 collections.
    assert!(
        rss_after <= rss_before + 1024,
        "RSS grew from {rss_before} KiB to {rss_after} KiB over {collections} collections"
    );
}

#[test]
fn k3s_health_is_a_value_whether_the_endpoints_answer_or_not() {
    // Stand-ins: K3s is not installable here.
    let s0 = Scratch::new("");
    let pki = TestPki::create(&s0.path().join("pki"), "test-k3s-server-ca");
    let readyz = ReadyzLookalike::start(&pki);
    let kubelet = KubeletLookalike::start();
    let s = Scratch::new(&format!(
        "[metrics]\nlisten = \"127.0.0.1:0\"\ninterval = \"1s\"\n\
         kubelet_healthz_url = \"http://{}/healthz\"\n\
         apiserver_readyz_url = \"https://{}/readyz\"\n\
         apiserver_ca_file = \"{}\"\napiserver_cert_file = \"{}\"\napiserver_key_file = \"{}\"\n",
        kubelet.addr,
        readyz.addr,
        pki.path("ca.pem").display(),
        pki.path("client.pem").display(),
        pki.path("client.key").display(),
    ));
    let _d = s.start();
    let addr = metrics_addr(&s);
    let m = wait_for(Duration::from_secs(30), || {
        let m = scrape(&addr);
        (one(&m, "edge_agent_k3s_health_up", &[("endpoint", "kubelet")]) == Some(1.0)
            && one(&m, "edge_agent_k3s_health_up", &[("endpoint", "apiserver")]) == Some(1.0))
        .then_some(m)
    })
    .unwrap_or_else(|| {
        panic!(
            "health never up; status: {}",
            status_json(&s)["stages"]["metrics"]
        )
    });
    assert_eq!(
        one(
            &m,
            "edge_agent_k3s_health_status_code",
            &[("endpoint", "kubelet")]
        ),
        Some(200.0)
    );
    assert_eq!(
        one(
            &m,
            "edge_agent_k3s_health_status_code",
            &[("endpoint", "apiserver")]
        ),
        Some(200.0)
    );

    // The kubelet goes away: a value, not a failure of the stage.
    drop(kubelet);
    let m = wait_for(Duration::from_secs(30), || {
        let m = scrape(&addr);
        (one(&m, "edge_agent_k3s_health_up", &[("endpoint", "kubelet")]) == Some(0.0)).then_some(m)
    })
    .expect("kubelet never reported down");
    assert_eq!(
        one(
            &m,
            "edge_agent_k3s_health_status_code",
            &[("endpoint", "kubelet")]
        ),
        Some(0.0)
    );
    assert_eq!(
        one(&m, "node_scrape_collector_success", &[("collector", "k3s")]),
        Some(1.0)
    );
    let st = status_json(&s);
    let metrics = &st["stages"]["metrics"];
    assert_eq!(metrics["state"], "running", "{metrics}");
    let said = metrics["details"]["k3s_kubelet"].as_str().unwrap();
    assert!(said.starts_with("unreachable:"), "{said}");
}

#[test]
fn an_api_server_whose_certificate_is_not_from_the_k3s_ca_is_not_trusted() {
    let s0 = Scratch::new("");
    let real = TestPki::create(&s0.path().join("real"), "test-k3s-server-ca");
    let other = TestPki::create(&s0.path().join("other"), "some-other-ca");
    let readyz = ReadyzLookalike::start(&real);
    let s = Scratch::new(&format!(
        "[metrics]\nlisten = \"127.0.0.1:0\"\ninterval = \"1s\"\nkubelet_healthz_url = \"\"\n\
         apiserver_readyz_url = \"https://{}/readyz\"\napiserver_ca_file = \"{}\"\n",
        readyz.addr,
        other.path("ca.pem").display(),
    ));
    let _d = s.start();
    let said = wait_for(Duration::from_secs(30), || {
        status_json(&s)["stages"]["metrics"]["details"]["k3s_apiserver"]
            .as_str()
            .map(str::to_string)
    })
    .expect("no apiserver probe result");
    assert!(
        said.starts_with("unreachable:") && said.contains("certificate"),
        "{said}"
    );
    let m = scrape(&metrics_addr(&s));
    assert_eq!(
        one(&m, "edge_agent_k3s_health_up", &[("endpoint", "apiserver")]),
        Some(0.0)
    );
    assert_eq!(
        one(&m, "edge_agent_k3s_health_up", &[("endpoint", "kubelet")]),
        None,
        "not probed"
    );
}

#[test]
fn with_the_endpoint_switched_off_collection_and_batches_go_on() {
    let s = Scratch::new("[metrics]\nlisten = \"\"\ninterval = \"1s\"\n");
    let _d = s.start();
    wait_collections(&s, 3, Duration::from_secs(60));
    let st = status_json(&s);
    let m = &st["stages"]["metrics"];
    assert_eq!(m["details"]["listen"], "off", "{m}");
    assert_eq!(m["state"], "running", "{m}");
}

#[test]
fn a_taken_port_degrades_the_stage_and_collection_goes_on() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let s = Scratch::new(&format!(
        "[metrics]\nlisten = \"127.0.0.1:{port}\"\ninterval = \"1s\"\n"
    ));
    let _d = s.start();
    wait_collections(&s, 3, Duration::from_secs(60));
    let st = status_json(&s);
    let m = &st["stages"]["metrics"];
    assert_eq!(m["state"], "degraded", "{m}");
    assert_eq!(m["details"]["listen"], "unavailable", "{m}");
    let err = m["last_error"]["message"].as_str().unwrap();
    assert!(
        err.contains("metrics.listen") && err.contains(&port.to_string()),
        "{err}"
    );
}

#[test]
fn a_reload_switches_the_endpoint_on_and_narrows_the_collectors() {
    let s = Scratch::new("[metrics]\nlisten = \"\"\ninterval = \"1s\"\n");
    let d = s.start();
    wait_collections(&s, 1, Duration::from_secs(60));
    s.write_config(
        "[metrics]\nlisten = \"127.0.0.1:0\"\ninterval = \"1s\"\ncollectors = [\"loadavg\", \"agent\"]\n",
    );
    d.signal(edge_agent_tests::SIGHUP);
    let addr = metrics_addr(&s);
    let m = wait_for(Duration::from_secs(30), || {
        let m = scrape(&addr);
        one(&m, "node_scrape_collector_success", &[("collector", "cpu")])
            .is_none()
            .then_some(m)
    })
    .expect("the narrowed collector list never took effect");
    assert!(one(&m, "node_load1", &[]).is_some());
    assert!(one(&m, "edge_agent_stage_up", &[("stage", "metrics")]).is_some());
    assert!(series(&m, "node_cpu_seconds_total").next().is_none());
    assert!(series(&m, "node_memory_MemTotal_bytes").next().is_none());
}
