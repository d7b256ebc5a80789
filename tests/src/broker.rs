//! A real MQTT world for the tests: certificates made with the `openssl`
//! CLI (EC P-256), a real `mosquitto` started on 127.0.0.1 with its own
//! config, ports and persistence directory, a subscriber that records what
//! the broker delivers, a TCP gate that can cut the agent off the broker,
//! and a few calls to the daemon's control socket.
//!
//! Any test that wants to see its records arrive (metrics, rules) can use
//! these: start a [`Broker`], point the agent at [`Broker::agent_url`] with
//! [`uplink_toml`], and read [`Subscriber::messages`].

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::{Scratch, wait_for};

/// Certificates for one test: a fleet CA with a server and a client
/// certificate, and a rogue CA with its own client and server certificates
/// (to be refused).
pub struct Certs {
    pub dir: PathBuf,
}

impl Certs {
    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }
    pub fn server_cert(&self) -> PathBuf {
        self.dir.join("server.pem")
    }
    pub fn server_key(&self) -> PathBuf {
        self.dir.join("server.key")
    }
    pub fn client_cert(&self) -> PathBuf {
        self.dir.join("client.pem")
    }
    pub fn client_key(&self) -> PathBuf {
        self.dir.join("client.key")
    }
    /// A CA that signed nothing the broker uses.
    pub fn rogue_ca(&self) -> PathBuf {
        self.dir.join("rogue-ca.pem")
    }
    /// A client certificate signed by the rogue CA.
    pub fn rogue_client_cert(&self) -> PathBuf {
        self.dir.join("rogue-client.pem")
    }
    pub fn rogue_client_key(&self) -> PathBuf {
        self.dir.join("rogue-client.key")
    }

    /// Make all of them in `dir` (created if needed).
    pub fn generate(dir: &Path) -> Certs {
        std::fs::create_dir_all(dir).expect("certs dir");
        let c = Certs {
            dir: dir.to_path_buf(),
        };
        c.make_ca("ca", "edge-agent test fleet CA");
        c.make_ca("rogue-ca", "someone else's CA");
        c.make_leaf(
            "server",
            "ca",
            "localhost",
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth",
        );
        c.make_leaf("client", "ca", "test-node", "extendedKeyUsage=clientAuth");
        c.make_leaf(
            "rogue-client",
            "rogue-ca",
            "test-node",
            "extendedKeyUsage=clientAuth",
        );
        c
    }

    fn openssl(&self, args: &[&str]) {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(&self.dir)
            .output()
            .expect("run openssl (apt-get install openssl)");
        assert!(
            out.status.success(),
            "openssl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn make_ca(&self, name: &str, cn: &str) {
        let key = format!("{name}.key");
        self.openssl(&[
            "ecparam",
            "-name",
            "prime256v1",
            "-genkey",
            "-noout",
            "-out",
            &key,
        ]);
        self.openssl(&[
            "req",
            "-x509",
            "-new",
            "-key",
            &key,
            "-sha256",
            "-days",
            "3650",
            "-subj",
            &format!("/CN={cn}"),
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
            "-out",
            &format!("{name}.pem"),
        ]);
    }

    /// A leaf certificate `name.pem` + `name.key` with common name `cn`,
    /// signed by CA `ca` (`"ca"` is the fleet CA), with extra extensions
    /// `ext` (one per line, openssl extfile syntax).
    pub fn make_leaf(&self, name: &str, ca: &str, cn: &str, ext: &str) {
        let key = format!("{name}.key");
        let csr = format!("{name}.csr");
        let extfile = self.dir.join(format!("{name}.ext"));
        std::fs::write(
            &extfile,
            format!("basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n{ext}\n"),
        )
        .expect("write ext file");
        self.openssl(&[
            "ecparam",
            "-name",
            "prime256v1",
            "-genkey",
            "-noout",
            "-out",
            &key,
        ]);
        self.openssl(&[
            "req",
            "-new",
            "-key",
            &key,
            "-subj",
            &format!("/CN={cn}"),
            "-out",
            &csr,
        ]);
        self.openssl(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &format!("{ca}.pem"),
            "-CAkey",
            &format!("{ca}.key"),
            "-CAcreateserial",
            "-days",
            "365",
            "-sha256",
            "-extfile",
            extfile.to_str().expect("utf-8 path"),
            "-out",
            &format!("{name}.pem"),
        ]);
    }
}

/// A port on 127.0.0.1 that was free a moment ago and that this process
/// has not handed out before. The kernel may give the same ephemeral port
/// to two binds in a row once the first listener is closed, so two calls
/// (a broker's TLS and plain listeners) could otherwise collide and the
/// broker would fail with "Address already in use".
pub fn free_port() -> u16 {
    static HANDED_OUT: Mutex<Vec<u16>> = Mutex::new(Vec::new());
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("bind 127.0.0.1:0");
        if !handed_out.contains(&port) {
            handed_out.push(port);
            return port;
        }
    }
}

/// How a broker treats the agent's listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentAccess {
    /// mTLS with the fleet CA; the certificate's CN is the user name.
    Allowed,
    /// mTLS still required, but no identity mapping and no anonymous
    /// clients: the broker answers CONNECT with "not authorized".
    Refused,
}

/// A mosquitto process with two listeners on 127.0.0.1: mTLS for the
/// agent, plain TCP for the test's subscriber. Killed on drop.
pub struct Broker {
    pub dir: PathBuf,
    pub tls_port: u16,
    pub plain_port: u16,
    pub persistence: bool,
    pub access: AgentAccess,
    certs: PathBuf,
    child: Option<Child>,
}

impl Broker {
    /// Start a broker in `dir` (its config, log and persistence live
    /// there) and wait until both listeners accept connections.
    pub fn start(dir: &Path, certs: &Certs, persistence: bool, access: AgentAccess) -> Broker {
        let mut b = Broker::new(dir, certs, persistence, access);
        b.launch();
        b
    }

    /// A broker with its ports chosen but not started yet ([`Broker::launch`]).
    pub fn new(dir: &Path, certs: &Certs, persistence: bool, access: AgentAccess) -> Broker {
        std::fs::create_dir_all(dir.join("data")).expect("broker dir");
        Broker {
            dir: dir.to_path_buf(),
            tls_port: free_port(),
            plain_port: free_port(),
            persistence,
            access,
            certs: certs.dir.clone(),
            child: None,
        }
    }

    fn config_text(&self) -> String {
        let c = |f: &str| self.certs.join(f).display().to_string();
        let agent_auth = match self.access {
            AgentAccess::Allowed => "use_identity_as_username true\nallow_anonymous true\n",
            AgentAccess::Refused => "use_identity_as_username false\nallow_anonymous false\n",
        };
        format!(
            "per_listener_settings true\n\
             user root\n\
             persistence {persistence}\n\
             persistence_location {data}/\n\
             autosave_interval 1\n\
             log_dest file {log}\n\
             log_type error\nlog_type warning\nlog_type notice\nlog_type information\n\
             max_queued_messages 1000000\n\
             max_queued_bytes 0\n\
             max_inflight_messages 0\n\
             listener {tls} 127.0.0.1\n\
             cafile {ca}\ncertfile {cert}\nkeyfile {key}\n\
             require_certificate true\n\
             {agent_auth}\
             listener {plain} 127.0.0.1\n\
             allow_anonymous true\n",
            persistence = self.persistence,
            data = self.dir.join("data").display(),
            log = self.log_path().display(),
            tls = self.tls_port,
            plain = self.plain_port,
            ca = c("ca.pem"),
            cert = c("server.pem"),
            key = c("server.key"),
        )
    }

    /// Start mosquitto and wait until both listeners accept connections.
    pub fn launch(&mut self) {
        let conf = self.dir.join("mosquitto.conf");
        std::fs::write(&conf, self.config_text()).expect("write mosquitto.conf");
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start mosquitto (apt-get install mosquitto)");
        self.child = Some(child);
        let ready = wait_for(Duration::from_secs(15), || {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!("mosquitto exited with {status}; log:\n{}", self.log());
            }
            (TcpStream::connect(("127.0.0.1", self.plain_port)).is_ok()
                && TcpStream::connect(("127.0.0.1", self.tls_port)).is_ok())
            .then_some(())
        });
        assert!(
            ready.is_some(),
            "mosquitto did not listen; log:\n{}",
            self.log()
        );
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.join("mosquitto.log")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// `mqtts://127.0.0.1:<tls port>`.
    pub fn agent_url(&self) -> String {
        format!("mqtts://127.0.0.1:{}", self.tls_port)
    }

    /// SIGKILL: no clean shutdown, no persistence save.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM: mosquitto saves its persistence file (sessions and queued
    /// messages) and exits.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: kill() on the pid of a child we still own.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let _ = c.wait();
        }
    }

    /// Start again on the same ports after `stop` or `kill`.
    pub fn start_again(&mut self) {
        self.launch();
    }

    /// Delete everything mosquitto persisted (sessions, queued messages).
    pub fn wipe_persistence(&self) {
        let data = self.dir.join("data");
        let _ = std::fs::remove_dir_all(&data);
        std::fs::create_dir_all(&data).expect("broker data dir");
    }

    /// Start again on the same ports (after `kill`), possibly with another
    /// access rule for the agent.
    pub fn restart(&mut self, access: AgentAccess) {
        self.kill();
        self.access = access;
        self.launch();
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One message the subscriber received.
#[derive(Debug, Clone)]
pub struct Message {
    pub topic: String,
    pub payload: Vec<u8>,
    pub retained: bool,
}

impl Message {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.payload).unwrap_or_else(|e| {
            panic!(
                "payload on {} is not JSON ({e}): {}",
                self.topic,
                String::from_utf8_lossy(&self.payload)
            )
        })
    }

    /// The record's sequence number (`seq` at the top level).
    pub fn seq(&self) -> Option<u64> {
        self.json().get("seq").and_then(Value::as_u64)
    }
}

/// A subscriber to `edge/#` (QoS 1, persistent session) on the broker's
/// plain listener, recording everything in a background thread. It
/// resubscribes whenever the broker has no session for it (after a
/// restart with persistence wiped).
pub struct Subscriber {
    messages: Arc<Mutex<Vec<Message>>>,
    subscriptions: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Subscriber {
    pub fn start(broker: &Broker) -> Subscriber {
        let messages = Arc::new(Mutex::new(Vec::new()));
        let subscriptions = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let mut options = rumqttc::MqttOptions::new(
            format!("test-subscriber-{}", std::process::id()),
            "127.0.0.1",
            broker.plain_port,
        );
        options
            .set_clean_session(false)
            .set_keep_alive(Duration::from_secs(5))
            .set_max_packet_size(2 << 20, 2 << 20);
        let (client, mut connection) = rumqttc::Client::new(options, 64);
        let (m, s, st) = (messages.clone(), subscriptions.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            for event in connection.iter() {
                if st.load(Ordering::Relaxed) {
                    break;
                }
                match event {
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(ack))) => {
                        if !ack.session_present {
                            let _ = client.try_subscribe("edge/#", rumqttc::QoS::AtLeastOnce);
                        }
                    }
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::SubAck(_))) => {
                        s.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))) => {
                        m.lock().expect("messages").push(Message {
                            topic: p.topic.clone(),
                            payload: p.payload.to_vec(),
                            retained: p.retain,
                        });
                    }
                    Ok(_) => {}
                    Err(_) => std::thread::sleep(Duration::from_millis(50)),
                }
            }
        });
        let sub = Subscriber {
            messages,
            subscriptions,
            stop,
            thread: Some(thread),
        };
        sub.wait_subscribed(1);
        sub
    }

    /// Wait until the subscriber has subscribed `n` times in total.
    pub fn wait_subscribed(&self, n: u64) {
        let ok = wait_for(Duration::from_secs(20), || {
            (self.subscriptions.load(Ordering::SeqCst) >= n).then_some(())
        });
        assert!(ok.is_some(), "the test subscriber did not subscribe");
    }

    pub fn subscriptions(&self) -> u64 {
        self.subscriptions.load(Ordering::SeqCst)
    }

    pub fn messages(&self) -> Vec<Message> {
        self.messages.lock().expect("messages").clone()
    }

    /// Messages on topics ending in `/suffix`.
    pub fn on(&self, suffix: &str) -> Vec<Message> {
        let end = format!("/{suffix}");
        self.messages()
            .into_iter()
            .filter(|m| m.topic.ends_with(&end))
            .collect()
    }

    /// Wait until `f` holds for the messages received so far.
    pub fn wait_until(&self, timeout: Duration, mut f: impl FnMut(&[Message]) -> bool) -> bool {
        wait_for(timeout, || f(&self.messages()).then_some(())).is_some()
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // The thread ends at its next event (keep-alive at most 5 s away);
        // do not wait for it.
        drop(self.thread.take());
    }
}

/// A TCP forwarder between the agent and the broker's mTLS port that the
/// test can close (refusing new connections and cutting existing ones)
/// and open again: "the link is down" without touching the broker.
pub struct Gate {
    pub port: u16,
    open: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
}

impl Gate {
    /// A gate to `127.0.0.1:upstream`, initially `open`.
    pub fn new(upstream: u16, open: bool) -> Gate {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind gate");
        let port = listener.local_addr().expect("gate addr").port();
        let g = Gate {
            port,
            open: Arc::new(AtomicBool::new(open)),
            stop: Arc::new(AtomicBool::new(false)),
            conns: Arc::new(Mutex::new(Vec::new())),
        };
        let (o, s, c) = (g.open.clone(), g.stop.clone(), g.conns.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if s.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(down) = stream else { continue };
                if !o.load(Ordering::SeqCst) {
                    let _ = down.shutdown(Shutdown::Both);
                    continue;
                }
                let Ok(up) = TcpStream::connect(("127.0.0.1", upstream)) else {
                    let _ = down.shutdown(Shutdown::Both);
                    continue;
                };
                let mut list = c.lock().expect("gate conns");
                for s in [&down, &up] {
                    if let Ok(clone) = s.try_clone() {
                        list.push(clone);
                    }
                }
                pump(
                    down.try_clone().expect("clone"),
                    up.try_clone().expect("clone"),
                );
                pump(up, down);
            }
        });
        g
    }

    /// `mqtts://127.0.0.1:<gate port>` (the broker's certificate names
    /// 127.0.0.1, so TLS works through the gate).
    pub fn url(&self) -> String {
        format!("mqtts://127.0.0.1:{}", self.port)
    }

    pub fn open(&self) {
        self.open.store(true, Ordering::SeqCst);
    }

    /// Refuse new connections and cut the ones through the gate.
    pub fn close(&self) {
        self.open.store(false, Ordering::SeqCst);
        for s in self.conns.lock().expect("gate conns").drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}

fn pump(mut from: TcpStream, mut to: TcpStream) {
    std::thread::spawn(move || {
        let mut buf = [0u8; 16384];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if to.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = to.shutdown(Shutdown::Both);
        let _ = from.shutdown(Shutdown::Both);
    });
}

impl Drop for Gate {
    fn drop(&mut self) {
        self.close();
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees `stop`.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// The usual start of an uplink test: certificates under `dir/certs` and a
/// broker under `dir/broker` that lets the agent in, without persistence.
pub fn certs_and_broker(dir: &Path) -> (Certs, Broker) {
    let certs = Certs::generate(&dir.join("certs"));
    let broker = Broker::start(&dir.join("broker"), &certs, false, AgentAccess::Allowed);
    (certs, broker)
}

impl Certs {
    /// The `[uplink]` section for an agent that talks to `url` trusting the
    /// test CA and presenting the good client certificate.
    pub fn uplink_toml(&self, url: &str) -> String {
        uplink_toml(url, &self.ca(), (&self.client_cert(), &self.client_key()))
    }
}

/// The `[uplink]` section for an agent that talks to `url` with the test
/// certificates (`ca` overrides the CA the agent trusts; `client` the
/// certificate and key it presents).
pub fn uplink_toml(url: &str, ca: &Path, client: (&Path, &Path)) -> String {
    format!(
        "[uplink]\nurl = \"{url}\"\nca_file = \"{}\"\ncert_file = \"{}\"\nkey_file = \"{}\"\nkeep_alive = \"5s\"\n",
        ca.display(),
        client.0.display(),
        client.1.display()
    )
}

/// One control-socket call to the daemon of `scratch`: `Ok(result)` or
/// `Err(error object)`.
pub fn control(scratch: &Scratch, method: &str, params: Value) -> Result<Value, Value> {
    control_at(&scratch.socket(), method, params)
}

/// [`control`] by socket path (for threads). A daemon that is gone is an
/// `Err` too. No retry: the daemon holds a call to a stage's method that is
/// not registered yet until start-up completes.
pub fn control_at(socket: &Path, method: &str, params: Value) -> Result<Value, Value> {
    call_once(socket, method, params)
}

fn call_once(socket: &Path, method: &str, params: Value) -> Result<Value, Value> {
    let gone = |e: std::io::Error| json!({"code": "io", "message": e.to_string()});
    let mut s = UnixStream::connect(socket).map_err(gone)?;
    s.set_read_timeout(Some(Duration::from_secs(120)))
        .expect("socket timeout");
    let mut line =
        serde_json::to_vec(&json!({"v": 1, "method": method, "params": params})).expect("request");
    line.push(b'\n');
    s.write_all(&line).map_err(gone)?;
    let mut answer = String::new();
    BufReader::new(s).read_line(&mut answer).map_err(gone)?;
    let v: Value = serde_json::from_str(&answer)
        .map_err(|e| json!({"code": "io", "message": format!("not JSON ({e}): {answer}")}))?;
    if v["ok"] == true {
        Ok(v["result"].clone())
    } else {
        Err(v["error"].clone())
    }
}

/// Put `count` synthetic records of `class` (`critical_alert`, `alert`,
/// `node_event`, `metrics`) with `pad` bytes of filler through the daemon's
/// outbox; their sequence numbers once durable (`None`: given up).
pub fn inject(
    scratch: &Scratch,
    class: &str,
    count: u64,
    pad: usize,
) -> Result<Vec<Option<u64>>, Value> {
    let r = control(
        scratch,
        "outbox.test_report",
        json!({"class": class, "count": count, "pad_bytes": pad}),
    )?;
    Ok(r["seqs"]
        .as_array()
        .expect("seqs")
        .iter()
        .map(Value::as_u64)
        .collect())
}

/// Sequence numbers currently waiting in the daemon's outbox, by class
/// (paging through listings of at most 1,000 per class).
pub fn waiting_seqs(scratch: &Scratch) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    let mut after = serde_json::Map::new();
    loop {
        let l = control(
            scratch,
            "outbox.list",
            json!({"limit": 1000, "after": after}),
        )
        .expect("outbox listing");
        let mut more = false;
        for c in l["classes"].as_array().expect("classes") {
            let class = c["class"].as_str().expect("class").to_string();
            for r in c["oldest"].as_array().expect("oldest") {
                let seq = r["seq"].as_u64().expect("seq");
                out.push((class.clone(), seq));
                after.insert(class.clone(), seq.into());
            }
            more |= c["more"] == true;
        }
        if !more {
            return out;
        }
    }
}

/// A stage's details from `status --json`.
pub fn stage(scratch: &Scratch, name: &str) -> Value {
    crate::status_json(scratch)["stages"][name].clone()
}

/// Wait until `f` holds for the named stage's status.
pub fn wait_stage(
    scratch: &Scratch,
    name: &str,
    timeout: Duration,
    mut f: impl FnMut(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + timeout;
    loop {
        let s = stage(scratch, name);
        if f(&s) {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "stage {name} did not reach the expected state in {timeout:?}; last status: {s:#}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
