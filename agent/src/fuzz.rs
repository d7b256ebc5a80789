//! Entry points for the fuzz targets in `fuzz/` (`scripts/fuzz.sh`): each
//! takes arbitrary bytes and drives one of the agent's parsers of hostile
//! input the way the daemon or a command does, from the bytes on down.
//!
//! Not an API: hidden from the docs and exported only for `fuzz/`. Each
//! function is thin on purpose, so that what is fuzzed is the real code,
//! not a copy of it. A panic, a hang or a runaway allocation in any of them
//! is a finding. The few assertions here state invariants the daemon relies
//! on (a handler's deadline can be computed, a valid config written back
//! as TOML reads again).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime};

use serde_json::{Value, json};

use crate::config::{AgentConfig, ConfigDiff, Priority, SensorConfig};
use crate::control::{Caller, PROTOCOL_VERSION, Reply, Router};
use crate::event::Event;
use crate::event::fields::Field;
use crate::fleet::bundle::{self, Target};
use crate::fleet::keys::{PublicKey, SigningKey};
use crate::fleet::overlay::{self, Layer};
use crate::fleet::receiver::{self, Decision};
use crate::fleet::state::FleetState;
use crate::rules::engine::{Engine, Limits};
use crate::rules::loader::{self, Source};
use crate::sensor::decode::{Decoded, Enricher};
use crate::sensor::proctable::BootClock;

/// Rule files: the bytes are up to four files separated by NUL bytes (no
/// YAML text holds one), read as `rules check` and the daemon read them,
/// loaded and compiled as one set, then run over a few events, alerts and
/// all.
pub fn rules(data: &[u8]) {
    let sources = data
        .split(|b| *b == 0)
        .take(4)
        .enumerate()
        .map(|(i, bytes)| Source {
            path: PathBuf::from(format!("/etc/edge-agent/rules.d/{i}.yaml")),
            text: loader::text_of_file(bytes.to_vec()),
        })
        .collect();
    let loaded = loader::load_sources(sources);
    // What `rules check` prints.
    for p in &loaded.problems {
        let _ = p.to_string();
    }
    let limits = Limits {
        rate: 1e12,
        max_burst: u32::MAX,
        alert_threshold: Priority::Critical,
    };
    let mut engine = Engine::new(loaded, limits, "node-1".into(), 1);
    let mut alerts = Vec::new();
    for (i, e) in sample_events().iter().enumerate() {
        engine.process(e, 1_000 + i as u64, &mut alerts);
    }
    for a in &alerts {
        let _ = serde_json::to_vec(&a.payload);
    }
    let _ = engine.rules_list();
}

/// Events the rules target runs every compiled set over: a shell with a
/// terminal in a container, a read of /etc/shadow, a connect.
fn sample_events() -> &'static [Event] {
    use crate::event::{Container, EventType, Fd, L4Proto, Process, Role};
    use std::sync::Arc;
    static EVENTS: OnceLock<Vec<Event>> = OnceLock::new();
    EVENTS.get_or_init(|| {
        let container = Arc::new(Container {
            id: "0123456789ab".into(),
            name: Some("web".into()),
            image_repository: Some("docker.io/library/nginx".into()),
            pod_name: Some("web-1".into()),
            pod_namespace: Some("default".into()),
            ..Default::default()
        });
        let runc = Arc::new(Process::new(6, 1, "/usr/bin/runc", &["runc", "init"]));
        let mut bash = Process::new(7, 6, "/bin/bash", &["bash", "-i"]);
        bash.tty = 34816;
        let mut shell = Event::new(EventType::Execve, Arc::new(bash));
        shell.ancestors = vec![runc];
        shell.container = container.clone();
        let cat = Process::new(8, 7, "/usr/bin/cat", &["cat", "/etc/shadow"]);
        let mut read = Event::new(EventType::Openat, Arc::new(cat));
        read.evt.args.flags = Some(libc::O_RDONLY as u64);
        read.evt.res = 3;
        read.fd = Some(Fd::file(3, "/etc/shadow"));
        let curl = Process::new(9, 1, "/usr/bin/curl", &["curl", "http://10.43.0.1:4444/"]);
        let mut connect = Event::new(EventType::Connect, Arc::new(curl));
        let local = "10.42.0.7:40000".parse().expect("an address");
        let remote = "10.43.0.1:4444".parse().expect("an address");
        connect.fd = Some(Fd::socket(4, local, remote, Role::Client, L4Proto::Tcp));
        connect.container = container;
        vec![shell, read, connect]
    })
}

/// `agent.toml`: parsed and validated as `edge-agent run` and `config
/// check` read it, compared with the running config as a reload does, and
/// written back as the canonical TOML the fleet merge reads again.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return; // read_to_string refuses it before the parser sees it
    };
    let path = Path::new("/etc/edge-agent/agent.toml");
    let config = match AgentConfig::from_toml(text, path) {
        Ok(c) => c,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    let (running, _) = ConfigDiff::effective(default_config(), config.clone());
    let canonical = toml::to_string(&running).expect("a valid config serializes");
    if let Err(e) = AgentConfig::from_toml(&canonical, path) {
        panic!("a valid config written as TOML does not read again: {e}\n{canonical}");
    }
    let _ = overlay::config_sha256(&config);
}

fn default_config() -> &'static AgentConfig {
    static DEFAULT: OnceLock<AgentConfig> = OnceLock::new();
    DEFAULT.get_or_init(|| {
        AgentConfig::from_toml("", Path::new("/etc/edge-agent/agent.toml"))
            .expect("an empty agent.toml is valid")
    })
}

/// The node's own agent.toml in the fleet target: node `n1` of fleet `f1`,
/// in group `eu`.
const FLEET_LOCAL: &str = "[node]\nid = \"n1\"\nfleet = \"f1\"\ngroups = [\"eu\"]\n";

/// A fleet config bundle arriving on one of the node's config topics.
/// First byte even: the rest is a payload (JSON), signed with a trusted
/// key, so the fuzzer reaches everything behind the signature; odd: the
/// rest is an envelope as it came off the broker. What passes is merged
/// with the local file as the fleet stage merges it.
pub fn fleet_bundle(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let (key, trusted) = fleet_key();
    let (bytes, topic) = if mode % 2 == 0 {
        let sealed = bundle::seal_bytes(rest, key);
        let topic = match bundle::peek(&sealed) {
            Ok(p) => p.target.topic(&p.fleet),
            Err(_) => Target::Fleet.topic("f1"),
        };
        (sealed, topic)
    } else {
        let layer = match (mode / 2) % 3 {
            0 => Target::Fleet,
            1 => Target::Group("eu".into()),
            _ => Target::Node("n1".into()),
        };
        (rest.to_vec(), layer.topic("f1"))
    };
    let (config, path) = fleet_config();
    // 2026-01-01: a fixed clock, so that an input means the same each run.
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_767_225_600);
    let decision = receiver::inspect(
        &topic,
        &bytes,
        config,
        &FleetState::default(),
        std::slice::from_ref(trusted),
        now,
    );
    let candidate = match decision {
        Decision::Try(c) => c,
        Decision::Refuse(r) => {
            let _ = serde_json::to_string(&r.reasons);
            return;
        }
        Decision::Ignore(_) | Decision::Quiet => return,
    };
    let layer = Layer {
        target: candidate.layer.clone(),
        version: candidate.verified.payload.version,
        overlay: candidate.overlay.clone(),
        rule_files: candidate
            .verified
            .payload
            .rules
            .keys()
            .map(|name| Path::new("/var/lib/edge-agent/fleet/rules").join(name))
            .collect(),
    };
    match overlay::effective(FLEET_LOCAL, path, &[layer]) {
        Ok(e) => {
            let _ = e.sha256;
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
}

fn fleet_config() -> &'static (AgentConfig, PathBuf) {
    static CONFIG: OnceLock<(AgentConfig, PathBuf)> = OnceLock::new();
    CONFIG.get_or_init(|| {
        let path = PathBuf::from("/etc/edge-agent/agent.toml");
        let config = AgentConfig::from_toml(FLEET_LOCAL, &path).expect("the fleet node's config");
        (config, path)
    })
}

/// A signing key made for this process (keys exist only as files).
fn fleet_key() -> &'static (SigningKey, PublicKey) {
    static KEY: OnceLock<(SigningKey, PublicKey)> = OnceLock::new();
    KEY.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("edge-agent-fuzz-key-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("a directory for the fuzz key");
        let made = crate::fleet::keys::generate(&dir.join("k")).expect("a fuzz key");
        let key = SigningKey::read(&made.private).expect("the fuzz key reads back");
        let _ = std::fs::remove_dir_all(&dir);
        let public = key.public();
        (key, public)
    })
}

/// A control-socket connection: the bytes a client sends, split into lines
/// as the server splits them (one cut at the request size limit), each
/// parsed and dispatched to a router holding the real methods' parameter
/// checks, the answer rendered as the server writes it. The first byte
/// picks the read buffer's size (how lines arrive in pieces) and whether
/// the caller is root or a member of the control group.
pub fn control(data: &[u8]) {
    let Some((&first, stream)) = data.split_first() else {
        return;
    };
    let caller = Caller {
        privileged: first & 1 == 1,
    };
    let capacity = 1 + usize::from(first >> 1) * 64;
    control_runtime().block_on(async {
        let router = control_router();
        let mut reader = tokio::io::BufReader::with_capacity(capacity, stream);
        let mut line = Vec::new();
        loop {
            line.clear();
            match crate::control::read_line_limited(&mut reader, &mut line).await {
                Ok(0) | Err(_) => return, // end of stream, or a line too long: closed
                Ok(_) => {}
            }
            let answer = match crate::control::parse_request(&line) {
                Ok(req) => router.dispatch_from(req, caller).await,
                Err(e) => Err(e),
            };
            let written = match answer {
                Ok(Reply::Value(v)) => json!({"v": PROTOCOL_VERSION, "ok": true, "result": v}),
                Ok(Reply::Stream(_)) => json!({"v": PROTOCOL_VERSION, "ok": true, "end": true}),
                Err(e) => crate::control::error_line(&e),
            };
            let _ = serde_json::to_vec(&written);
        }
    });
}

fn control_runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("a tokio runtime")
    })
}

/// A router with the daemon's methods, each answering with what its
/// parameters parsed to (the stages behind them are not running here).
fn control_router() -> &'static Router {
    static ROUTER: OnceLock<Router> = OnceLock::new();
    ROUTER.get_or_init(|| {
        let r = Router::new();
        r.register("ping", |_| async { Ok(Reply::Value(json!("pong"))) });
        for method in ["status", "rules.list", "sensor.watch"] {
            r.register(method, |_| async { Ok(Reply::Value(Value::Null)) });
        }
        r.register("outbox.list", |params| async move {
            let after = crate::outbox::listing_after(params.get("after"))?;
            Ok(Reply::Value(json!(format!("{after:?}"))))
        });
        r.register("outbox.test_alert", |params| async move {
            let p = crate::outbox::synthetic::test_alert_params(&params)?;
            // The handler waits until this deadline (any u64 of
            // milliseconds fits the clock: 584 million years).
            let _deadline = Instant::now() + p.wait;
            Ok(Reply::Value(json!([p.priority.as_str(), p.count])))
        });
        r.register_privileged("outbox.test_report", |params| async move {
            let (count, pad) = crate::outbox::test_report_size(&params)?;
            Ok(Reply::Value(json!([count, pad])))
        });
        for method in ["rules.history", "rules.follow_alerts"] {
            r.register(method, |params| async move {
                let q = crate::rules::stage::query(&params)?;
                let matches = q.matcher();
                let alert =
                    json!({"time": "2026-01-01T00:00:00Z", "rule": "Terminal shell in container"});
                Ok(Reply::Value(json!(matches(&alert))))
            });
        }
        r
    })
}

/// Kernel records as the sensor's ring buffer hands them over, one after
/// the other: each record's own size field says where the next starts
/// (rounded up to 8 bytes, as the ring buffer aligns them), and each goes
/// through the decoder and enricher the sensor runs, with a fresh process
/// table per input and no /proc, container state or user database to read.
/// Every field a rule can read is then read from what came out.
pub fn sensor_records(data: &[u8]) {
    let config = SensorConfig {
        runtime_state_dirs: Vec::new(),
        max_processes: 64,
        ..SensorConfig::default()
    };
    // Paths below a file: every read of them fails at once.
    let nowhere = Path::new("/dev/null/edge-agent-fuzz");
    let mut enricher = Enricher::new(&config, nowhere, nowhere, BootClock::with_offset(0));
    let mut rest = data;
    while !rest.is_empty() {
        // `size` is the header's second field (`ebpf/abi.h`).
        let claimed = rest
            .get(4..8)
            .map_or(0, |b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]) as usize);
        let end = match claimed.checked_next_multiple_of(8) {
            Some(n) if n > 0 => n.min(rest.len()),
            _ => rest.len(),
        };
        let (record, next) = rest.split_at(end);
        rest = next;
        match enricher.decode(record) {
            Ok(Decoded::Event { event, .. } | Decoded::Refused { event, .. }) => read_all(&event),
            Ok(_) => {}
            Err(e) => {
                let _ = e.to_string();
            }
        }
    }
}

/// Every plain field, the rendered arguments and the JSON form.
fn read_all(e: &Event) {
    static FIELDS: OnceLock<Vec<Field>> = OnceLock::new();
    let fields = FIELDS.get_or_init(|| {
        Field::names()
            .filter_map(|n| Field::parse(n, None).ok())
            .collect()
    });
    for f in fields {
        let _ = e.field(f).to_string();
    }
    let _ = e.render_args();
    let _ = serde_json::to_vec(e);
}

/// Seed inputs for the sensor target (`cargo run -p edge-agent-fuzz --bin
/// seeds` writes them to `fuzz/corpus/sensor/`; run it again when
/// `ebpf/abi.h` changes): record sequences as the kernel program writes
/// them, each record padded to 8 bytes as the ring buffer lays them out.
pub fn sensor_seeds() -> Vec<(&'static str, Vec<u8>)> {
    use crate::sensor::abi::{Kind, LIST_EXEC, LIST_OPEN, RecordBuilder, Sock};
    let shell = RecordBuilder::new(Kind::Execve)
        .task(10, 10, 1, "bash")
        .string(0, b"/usr/bin/bash")
        .string(1, b"bash\0-i\0")
        .build();
    let fork = RecordBuilder::new(Kind::Clone)
        .task(10, 10, 1, "bash")
        .arg(0, 11)
        .arg(1, i64::from(libc::SIGCHLD))
        .res(11)
        .build();
    let exec = RecordBuilder::new(Kind::Execve)
        .task(11, 11, 10, "cat")
        .creds(0, 0, 1000)
        .time(5)
        .arg(1, 34816)
        .string(0, b"/usr/bin/cat")
        .string(1, b"cat\0/etc/shadow\0")
        .string(2, b"/root")
        .string(3, b"/bin/cat")
        .build();
    let open = RecordBuilder::new(Kind::Openat)
        .task(11, 11, 10, "cat")
        .res(3)
        .arg(0, i64::from(libc::O_RDONLY))
        .arg(2, i64::from(libc::AT_FDCWD))
        .string(0, b"/etc/../etc/shadow")
        .build();
    let exit = RecordBuilder::new(Kind::Procexit)
        .task(11, 11, 10, "cat")
        .arg(0, 9)
        .build();
    let mut tcp = Sock {
        family: libc::AF_INET as u16,
        ty: libc::SOCK_STREAM as u16,
        proto: libc::IPPROTO_TCP as u16,
        lport: 40000,
        rport: 443,
        state: 1,
        ..Sock::default()
    };
    tcp.laddr[..4].copy_from_slice(&[10, 0, 0, 2]);
    tcp.raddr[..4].copy_from_slice(&[10, 43, 0, 1]);
    let connect = RecordBuilder::new(Kind::Connect)
        .task(5, 5, 1, "curl")
        .cgroup(4242)
        .arg(0, 4)
        .sock(&tcp)
        .build();
    let unix = Sock {
        family: libc::AF_UNIX as u16,
        ..Sock::default()
    };
    let abstract_connect = RecordBuilder::new(Kind::Connect)
        .task(5, 5, 1, "curl")
        .sock(&unix)
        .string(0, b"\0abstract")
        .build();
    let dns = RecordBuilder::new(Kind::Dns)
        .task(7, 7, 1, "coredns")
        .time(9)
        .string(0, &dns_answer())
        .build();
    let refused_exec = RecordBuilder::new(Kind::Refused)
        .task(12, 12, 10, "bash")
        .arg(0, LIST_EXEC)
        .string(0, b"/tmp/xmrig")
        .build();
    let refused_open = RecordBuilder::new(Kind::Refused)
        .task(12, 12, 10, "bash")
        .arg(0, LIST_OPEN)
        .arg(1, 0)
        .arg(2, 3)
        .string(0, b"/etc/kubernetes/admin.conf")
        .build();
    let loss = RecordBuilder::new(Kind::Loss).arg(0, 7).build();
    let stream = |records: &[&Vec<u8>]| -> Vec<u8> {
        let mut out = Vec::new();
        for r in records {
            out.extend_from_slice(r);
            out.resize(out.len().next_multiple_of(8), 0);
        }
        out
    };
    vec![
        (
            "exec-fork-exec-open-exit",
            stream(&[&shell, &fork, &exec, &open, &exit]),
        ),
        (
            "connect-tcp-and-unix",
            stream(&[&connect, &abstract_connect]),
        ),
        ("dns-then-connect", stream(&[&dns, &connect])),
        (
            "refused-exec-and-open",
            stream(&[&refused_exec, &refused_open]),
        ),
        ("loss", stream(&[&loss])),
    ]
}

/// A DNS answer for `example.com`: its CNAME and address.
fn dns_answer() -> Vec<u8> {
    let mut m = vec![0x12, 0x34, 0x81, 0x80, 0, 1, 0, 2, 0, 0, 0, 0];
    m.extend_from_slice(b"\x07example\x03com\x00");
    m.extend_from_slice(&[0, 1, 0, 1]);
    // example.com CNAME www.example.com (a pointer back to the question).
    m.extend_from_slice(&[0xc0, 12, 0, 5, 0, 1, 0, 0, 0x0e, 0x10, 0, 6]);
    m.extend_from_slice(&[3, b'w', b'w', b'w', 0xc0, 12]);
    // www.example.com A 93.184.216.34
    m.extend_from_slice(&[
        0xc0, 41, 0, 1, 0, 1, 0, 0, 0x0e, 0x10, 0, 4, 93, 184, 216, 34,
    ]);
    m
}

/// libFuzzer dictionary entries for the rules target: the rule language's
/// keys, operators and every field name, so mutations speak the language
/// (`cargo run -p edge-agent-fuzz --bin seeds` writes `fuzz/dict/rules.dict`).
pub fn rules_dictionary() -> Vec<String> {
    const WORDS: &[&str] = &[
        "- rule: ",
        "- macro: ",
        "- list: ",
        "- required_engine_version: ",
        "condition: ",
        "output: ",
        "priority: ",
        "desc: ",
        "tags: ",
        "items: ",
        "enabled: ",
        "exceptions: ",
        "override: ",
        "append: true",
        "source: syscall",
        "skip-if-unknown-filter: true",
        "- name: ",
        "fields: ",
        "comps: ",
        "values: ",
        " and ",
        " or ",
        "not ",
        " in ",
        " intersects ",
        " pmatch ",
        " glob ",
        " contains ",
        " icontains ",
        " startswith ",
        " endswith ",
        " exists",
        " regex ",
        " = ",
        " != ",
        " < ",
        " <= ",
        " > ",
        " >= ",
        "(",
        ")",
        "[",
        "]",
        "%",
        "&",
        "*",
        "\n  ",
        "\n- ",
        "append",
        "replace",
        "EMERGENCY",
        "CRITICAL",
        "WARNING",
        "NOTICE",
        "DEBUG",
    ];
    let mut out: Vec<String> = WORDS.iter().map(|w| w.to_string()).collect();
    out.extend(Field::names().map(str::to_string));
    out.extend(
        crate::event::EventType::ALL
            .iter()
            .map(|t| t.as_str().to_string()),
    );
    out
}
