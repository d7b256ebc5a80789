//! Outbox and uplink figures, printed (budgets in docs/ARCHITECTURE.md: >= 50,000 durable
//! appends/s, >= 20,000 records/s drained to a local broker over mTLS):
//!
//! - durable appends/s with 1, 4 and 16 producers sending through the
//!   report channel (the producers' real path), with the group-commit
//!   batch sizes they got; and with producers that each wait for every
//!   record to be durable (the case group commit is for);
//! - drain rate to a local mosquitto over mTLS, inflight 100 and 1,000;
//! - RSS of the real agent binary with a 1,000,000-record backlog, and the
//!   time to reopen that outbox after a SIGKILL.
//!
//! Run: `cargo build --release -p edge-agent && cargo bench -p edge-agent-tests --bench outbox`
//! (`EDGE_AGENT_BENCH_BACKLOG=N` for another backlog size).

use std::path::Path;
use std::time::{Duration, Instant};

use edge_agent::config::AgentConfig;
use edge_agent::control::Router;
use edge_agent::daemon::Sinks;
use edge_agent::outbox::{self, Outbox};
use edge_agent::reload::Reloader;
use edge_agent::report::{self, Report};
use edge_agent::stage::StageContext;
use edge_agent::status::StatusBoard;
use edge_agent_tests::broker::{certs_and_broker, control_at};
use edge_agent_tests::{SIGKILL, Scratch, wait_for};
use serde_json::{Map, Value, json};
use tokio_util::sync::CancellationToken;

/// Payload filler that makes a record of about 512 bytes as published
/// (the record size redb and sled were measured with, 200,000 records in
/// durable batches of 100, when the store was chosen).
const PAD: usize = 430;

fn report(i: u64) -> Report {
    let mut m = Map::new();
    m.insert("i".into(), Value::from(i));
    m.insert("pad".into(), Value::from("x".repeat(PAD)));
    Report::alert(false, m)
}

struct Pipeline {
    ctx: StageContext,
    outbox: Outbox,
    sinks: Sinks,
    shutdown: CancellationToken,
    _config: Reloader,
}

/// The outbox stage in-process, through the daemon's own wiring; the uplink
/// joins later (`Sinks::start_uplink`).
fn pipeline(config_text: &str, dir: &Path) -> Pipeline {
    let config = AgentConfig::from_toml(config_text, &dir.join("agent.toml")).expect("config");
    std::fs::create_dir_all(&config.paths.state_dir).unwrap();
    let reloader = Reloader::new(config);
    let (reports, reports_rx) = report::channel(report::REPORT_CHANNEL_CAPACITY);
    let ctx = StageContext {
        config: reloader.feed(),
        board: StatusBoard::new(),
        router: Router::new(),
        reports,
    };
    let shutdown = CancellationToken::new();
    let sinks = Sinks::start_outbox(&ctx, reports_rx, shutdown.clone());
    Pipeline {
        ctx,
        outbox: sinks.outbox.clone(),
        sinks,
        shutdown,
        _config: reloader,
    }
}

impl Pipeline {
    fn details(&self, stage: &str) -> Value {
        self.ctx
            .board
            .snapshot()
            .into_iter()
            .find(|(n, _)| n == stage)
            .map(|(_, s)| Value::Object(s.details))
            .unwrap_or(Value::Null)
    }

    async fn wait(&self, mut f: impl FnMut(&outbox::Summary) -> bool) {
        let mut rx = self.outbox.summary();
        loop {
            if f(&rx.borrow_and_update()) {
                return;
            }
            if tokio::time::timeout(Duration::from_secs(120), rx.changed())
                .await
                .is_err()
            {
                panic!("the outbox did not get there in 120 s");
            }
        }
    }

    async fn stop(self) {
        self.shutdown.cancel();
        for s in self.sinks.into_stages() {
            let _ = s.task.await;
        }
    }
}

fn base_config(dir: &Path, max_bytes: &str) -> String {
    format!(
        "[node]\nid = \"bench\"\nfleet = \"bench\"\n[paths]\nstate_dir = \"{}\"\nruntime_dir = \"{}\"\n[sensor]\nenabled = false\n[metrics]\nenabled = false\nlisten = \"\"\n[outbox]\nmax_bytes = \"{max_bytes}\"\n",
        dir.join("state").display(),
        dir.join("run").display()
    )
}

/// Producers send through the report channel without waiting.
async fn appends(producers: u64, total: u64) {
    let dir = tempfile::tempdir().unwrap();
    let p = pipeline(&base_config(dir.path(), "2 GiB"), dir.path());
    p.wait(|s| s.open).await;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..producers {
        let tx = p.ctx.reports.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..total / producers {
                assert!(tx.send(report(w * total + i)).await);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    p.wait(|s| s.appended_total >= total).await;
    let secs = started.elapsed().as_secs_f64();
    let d = p.details("outbox");
    println!(
        "appends, {producers:>2} producers (channel): {:>9.0} records/s durable   batches: mean {:>6} max {:>5} over {} commits",
        total as f64 / secs,
        d["batch_mean"],
        d["batch_max"],
        d["commits_total"]
    );
    p.stop().await;
}

/// Producers each wait for every record to be durable before the next.
async fn waiting_appends(producers: u64, run_for: Duration) {
    let dir = tempfile::tempdir().unwrap();
    let p = pipeline(&base_config(dir.path(), "2 GiB"), dir.path());
    p.wait(|s| s.open).await;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..producers {
        let ob = p.outbox.clone();
        tasks.push(tokio::spawn(async move {
            let mut n = 0u64;
            while started.elapsed() < run_for {
                ob.append_tracked(vec![report(w * 1_000_000 + n)])
                    .await
                    .unwrap();
                n += 1;
            }
            n
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    let secs = started.elapsed().as_secs_f64();
    let d = p.details("outbox");
    println!(
        "appends, {producers:>2} producers each waiting for durability: {:>9.0} records/s   batches: mean {:>6} max {:>5}; commit {} s mean, {} s max",
        total as f64 / secs,
        d["batch_mean"],
        d["batch_max"],
        d["commit_seconds_mean"],
        d["commit_seconds_max"]
    );
    p.stop().await;
}

/// Fill the outbox, then start the uplink and time until it is empty.
async fn drain(records: u64, inflight: u16) {
    let dir = tempfile::tempdir().unwrap();
    let (certs, broker) = certs_and_broker(dir.path());
    let cfg = format!(
        "{}[uplink]\nurl = \"{}\"\nca_file = \"{}\"\ncert_file = \"{}\"\nkey_file = \"{}\"\ninflight = {inflight}\n",
        base_config(dir.path(), "2 GiB"),
        broker.agent_url(),
        certs.ca().display(),
        certs.client_cert().display(),
        certs.client_key().display()
    );
    let mut p = pipeline(&cfg, dir.path());
    p.wait(|s| s.open).await;
    for i in 0..records {
        assert!(p.ctx.reports.send(report(i)).await);
    }
    p.wait(|s| s.appended_total >= records && s.total_records() >= records)
        .await;
    let started = Instant::now();
    p.sinks.start_uplink(
        &p.ctx,
        p.shutdown.clone(),
        edge_agent::fleet::link::UplinkSide::detached(),
    );
    p.wait(|s| s.total_records() == 0).await;
    let secs = started.elapsed().as_secs_f64();
    let d = p.details("uplink");
    let o = p.details("outbox");
    println!(
        "drain over mTLS to mosquitto, inflight {inflight:>4}: {:>9.0} records/s ({records} records of ~512 B in {secs:.2} s, {} reconnects; outbox: {} commits, {} s mean)",
        records as f64 / secs,
        d["reconnects_total"],
        o["commits_total"],
        o["commit_seconds_mean"]
    );
    p.stop().await;
    drop(broker);
}

/// The ceiling: rumqttc alone publishing the same records to the same
/// broker over mTLS, no outbox.
async fn raw_rumqttc(records: u64, inflight: u16) {
    let dir = tempfile::tempdir().unwrap();
    let (certs, broker) = certs_and_broker(dir.path());
    let _ = rustls::crypto::ring::default_provider().install_default();
    let read = |p: std::path::PathBuf| std::fs::read(p).unwrap();
    let mut o = rumqttc::MqttOptions::new("raw-bench", "127.0.0.1", broker.tls_port);
    o.set_transport(rumqttc::Transport::tls(
        read(certs.ca()),
        Some((read(certs.client_cert()), read(certs.client_key()))),
        None,
    ))
    .set_inflight(inflight)
    .set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut eventloop) = rumqttc::AsyncClient::new(o, usize::from(inflight) + 8);
    let payload = serde_json::to_vec(
        &json!({"node": "bench", "seq": 1, "schema": 1, "pad": "x".repeat(PAD)}),
    )
    .unwrap();
    let started = Instant::now();
    let publisher = tokio::spawn(async move {
        for _ in 0..records {
            client
                .publish(
                    "edge/bench/raw/alerts",
                    rumqttc::QoS::AtLeastOnce,
                    false,
                    payload.clone(),
                )
                .await
                .unwrap();
        }
        client
    });
    let mut acked = 0;
    while acked < records {
        if let rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_)) =
            eventloop.poll().await.unwrap()
        {
            acked += 1;
        }
    }
    let secs = started.elapsed().as_secs_f64();
    let _client = publisher.await.unwrap();
    println!(
        "raw rumqttc (no outbox), inflight {inflight:>4}: {:>9.0} records/s (the ceiling here, now)",
        records as f64 / secs
    );
    drop(broker);
}

fn rss_kib(pid: i32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// The real binary with a large backlog: RSS, and reopening after SIGKILL.
async fn backlog(records: u64) {
    let scratch = Scratch::new("[outbox]\nmax_bytes = \"3 GiB\"\n");
    {
        let text = std::fs::read_to_string(scratch.config_path()).unwrap();
        let p = pipeline(&text, scratch.path());
        p.wait(|s| s.open).await;
        let started = Instant::now();
        for i in 0..records {
            assert!(p.ctx.reports.send(report(i)).await);
        }
        p.wait(|s| s.appended_total >= records).await;
        println!(
            "backlog: {records} records appended in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        p.stop().await;
    }
    let file = scratch.state_dir().join("outbox.redb");
    let file_mb = std::fs::metadata(&file).map_or(0, |m| m.len()) >> 20;

    let empty = Scratch::new("");
    let idle = empty.start();
    std::thread::sleep(Duration::from_secs(2));
    let (idle_rss, _) = rss_kib(idle.pid());
    drop(idle);

    let mut d = scratch.start();
    let up = wait_for(Duration::from_secs(120), || {
        let s = edge_agent_tests::status_json(&scratch);
        (s["stages"]["outbox"]["state"] == "running").then_some(s)
    })
    .expect("outbox running");
    let (rss, _) = rss_kib(d.pid());
    // Read through the backlog as `status` and `outbox` do.
    let _ = control_at(&scratch.socket(), "outbox.list", json!({"limit": 1000}));
    std::thread::sleep(Duration::from_secs(1));
    let (rss_after, hwm) = rss_kib(d.pid());
    println!(
        "agent RSS: {idle_rss} KiB idle with an empty outbox; with {} records waiting ({file_mb} MiB file): {rss} KiB after start, {rss_after} KiB after listing (peak {hwm} KiB); opened: {}",
        up["stages"]["outbox"]["details"]["records_waiting_by_class"]["alert"],
        up["stages"]["outbox"]["details"]["opened"]
    );

    // Kill it while it writes, then time the reopen.
    let socket = scratch.socket();
    let writer = std::thread::spawn(move || {
        while control_at(
            &socket,
            "outbox.test_report",
            json!({"class": "alert", "count": 500, "pad_bytes": PAD}),
        )
        .is_ok()
        {}
    });
    std::thread::sleep(Duration::from_secs(2));
    d.signal(SIGKILL);
    let _ = d.wait_exit(Duration::from_secs(10));
    let _ = writer.join();
    let started = Instant::now();
    let _d2 = scratch.start();
    let up = wait_for(Duration::from_secs(300), || {
        let s = edge_agent_tests::status_json(&scratch);
        (s["stages"]["outbox"]["state"] == "running").then_some(s)
    })
    .expect("outbox running after the kill");
    println!(
        "reopen after SIGKILL with the backlog: outbox running {} ms after the start; the file itself: {}",
        started.elapsed().as_millis(),
        up["stages"]["outbox"]["details"]["opened"]
    );
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    // EDGE_AGENT_BENCH_QUICK=1: a twentieth of everything, to check the
    // bench itself in a debug build.
    let scale = if std::env::var_os("EDGE_AGENT_BENCH_QUICK").is_some() {
        20
    } else {
        1
    };
    let backlog_records: u64 = std::env::var("EDGE_AGENT_BENCH_BACKLOG")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000 / scale);
    // EDGE_AGENT_BENCH_ONLY=appends,waiting,drain,backlog: run some parts.
    let only = std::env::var("EDGE_AGENT_BENCH_ONLY").unwrap_or_default();
    let run = |part: &str| only.is_empty() || only.split(',').any(|p| p == part);
    rt.block_on(async {
        if run("appends") {
            for producers in [1, 4, 16] {
                appends(producers, 200_000 / scale).await;
            }
        }
        if run("waiting") {
            for producers in [1, 4, 16] {
                waiting_appends(producers, Duration::from_secs(3)).await;
            }
        }
        if run("drain") {
            for inflight in [100, 1000] {
                raw_rumqttc(100_000 / scale, inflight).await;
                drain(100_000 / scale, inflight).await;
            }
        }
        if run("backlog") {
            backlog(backlog_records).await;
        }
    });
}
