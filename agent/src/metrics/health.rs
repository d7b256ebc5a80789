//! K3s health: the kubelet's `/healthz` and, on server nodes, the API
//! server's `/readyz`: one HTTP/1.1 GET each with hyper's client
//! connection, over rustls (ring provider) for https.
//!
//! An endpoint that does not answer is a value (`up 0`, status code 0),
//! never an error of the stage: on an edge node K3s being down is exactly
//! what the fleet wants to hear about.
//!
//! TLS: K3s serves the API with a certificate signed by its own server CA
//! (`/var/lib/rancher/k3s/server/tls/server-ca.crt`, with 127.0.0.1 and
//! localhost among its names). The probe trusts that CA and nothing else:
//! no public roots, no "accept any certificate". A node without that file
//! is not a K3s server, so the API server probe is skipped there (no
//! series). The CA is re-read when its file changes (K3s installed or its
//! CA rotated after the agent started). K3s turns anonymous access off, so
//! `/readyz` answers 401 unless a client certificate allowed to read it is
//! configured (`metrics.apiserver_cert_file`/`key_file`); the 401 is then
//! reported as such (`status_code 401`, `up 0`) and `edge-agent status`
//! says what to configure. Never sends credentials anywhere but the
//! configured URLs; never follows redirects; never uses a proxy.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use http_body_util::Empty;
use hyper::Uri;
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use super::family::{Kind, Snapshot};

/// Whole-request deadline of one probe. The kubelet answers /healthz in
/// milliseconds; a probe slower than this is itself a sign of trouble and
/// must not hold up a collection.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Connecting to a local port either works at once or is refused.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// What the probes are pointed at (from `[metrics]`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HealthTargets {
    /// Empty: not probed.
    pub kubelet_url: String,
    /// Empty: not probed.
    pub apiserver_url: String,
    pub ca_file: PathBuf,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum HealthError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {reason}", path.display())]
    Pem { path: PathBuf, reason: String },
    #[error("TLS setup: {0}")]
    Tls(#[from] rustls::Error),
}

/// One endpoint's result.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Probe {
    pub(crate) endpoint: &'static str,
    pub(crate) outcome: Outcome,
    pub(crate) seconds: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Outcome {
    /// It answered with this HTTP status.
    Http(u16),
    /// It did not answer: refused, timed out, TLS failed.
    Unreachable(String),
    /// Not probed, and why (not a server node, no URL configured).
    Skipped(String),
}

impl Outcome {
    /// One line for `edge-agent status`.
    pub(crate) fn describe(&self) -> String {
        match self {
            Outcome::Http(code) if (200..300).contains(code) => "ok".into(),
            Outcome::Http(401) => "401 unauthorized: K3s refuses anonymous health checks; set metrics.apiserver_cert_file and key_file to a client certificate allowed to GET /readyz".into(),
            Outcome::Http(code) => format!("answered HTTP {code}"),
            Outcome::Unreachable(why) => format!("unreachable: {why}"),
            Outcome::Skipped(why) => format!("not probed: {why}"),
        }
    }
}

/// The probes and their TLS settings, rebuilt when the TLS files change.
pub(crate) struct K3sHealth {
    targets: HealthTargets,
    client: Option<Arc<rustls::ClientConfig>>,
    /// Modification times of (ca, cert, key) the client was built from.
    built_from: Option<[Option<SystemTime>; 3]>,
}

impl K3sHealth {
    pub(crate) fn new(targets: HealthTargets) -> Self {
        Self {
            targets,
            client: None,
            built_from: None,
        }
    }

    pub(crate) fn set_targets(&mut self, targets: HealthTargets) {
        if targets != self.targets {
            *self = K3sHealth::new(targets);
        }
    }

    /// Probe both endpoints concurrently.
    pub(crate) async fn probe(&mut self) -> Vec<Probe> {
        let client = match self.client() {
            Ok(c) => c,
            Err(e) => {
                let why = e.to_string();
                return vec![
                    skipped_or(
                        &self.targets.kubelet_url,
                        "kubelet",
                        Outcome::Unreachable(why.clone()),
                    ),
                    skipped_or(
                        &self.targets.apiserver_url,
                        "apiserver",
                        Outcome::Unreachable(why),
                    ),
                ];
            }
        };
        let server_node = self.targets.ca_file.exists();
        let kubelet = probe_one(&client, "kubelet", &self.targets.kubelet_url, None);
        let skip_api = (!server_node).then(|| {
            format!(
                "no K3s server CA at {} (not a server node)",
                self.targets.ca_file.display()
            )
        });
        let apiserver = probe_one(&client, "apiserver", &self.targets.apiserver_url, skip_api);
        let (a, b) = tokio::join!(kubelet, apiserver);
        vec![a, b]
    }

    fn client(&mut self) -> Result<Arc<rustls::ClientConfig>, HealthError> {
        let stamp = [
            mtime(&self.targets.ca_file),
            mtime(&self.targets.cert_file),
            mtime(&self.targets.key_file),
        ];
        if let (Some(client), Some(built)) = (&self.client, &self.built_from)
            && *built == stamp
        {
            return Ok(client.clone());
        }
        let client = Arc::new(tls_config(&self.targets)?);
        self.client = Some(client.clone());
        self.built_from = Some(stamp);
        Ok(client)
    }
}

fn skipped_or(url: &str, endpoint: &'static str, outcome: Outcome) -> Probe {
    let outcome = if url.is_empty() {
        Outcome::Skipped("no URL configured".into())
    } else {
        outcome
    };
    Probe {
        endpoint,
        outcome,
        seconds: 0.0,
    }
}

async fn probe_one(
    tls: &Arc<rustls::ClientConfig>,
    endpoint: &'static str,
    url: &str,
    skip: Option<String>,
) -> Probe {
    if url.is_empty() {
        return skipped_or(url, endpoint, Outcome::Skipped(String::new()));
    }
    if let Some(why) = skip {
        return Probe {
            endpoint,
            outcome: Outcome::Skipped(why),
            seconds: 0.0,
        };
    }
    let started = Instant::now();
    let outcome = match tokio::time::timeout(PROBE_TIMEOUT, get(tls, url)).await {
        Ok(Ok(code)) => Outcome::Http(code),
        Ok(Err(why)) => Outcome::Unreachable(why),
        Err(_) => Outcome::Unreachable(format!("no answer within {}s", PROBE_TIMEOUT.as_secs())),
    };
    Probe {
        endpoint,
        outcome,
        seconds: started.elapsed().as_secs_f64(),
    }
}

/// GET `url` on a fresh connection (one probe per interval: a pooled
/// connection would only hold a socket open between them); the status code,
/// or the innermost cause of the failure ("Connection refused", "invalid
/// peer certificate: UnknownIssuer"), which is what a technician can act
/// on. No proxy, no redirects.
async fn get(tls: &Arc<rustls::ClientConfig>, url: &str) -> Result<u16, String> {
    let uri: Uri = url.parse().map_err(|e| format!("{url}: {e}"))?;
    let host = uri.host().ok_or_else(|| format!("{url}: no host"))?;
    let https = uri.scheme_str() == Some("https");
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    // `[::1]` in a URL is `::1` to connect to.
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect((bare, port)))
        .await
        .map_err(|_| format!("no connection within {}s", CONNECT_TIMEOUT.as_secs()))?
        .map_err(|e| root_cause(&e))?;
    let _ = tcp.set_nodelay(true);
    if !https {
        return request(tcp, &uri).await;
    }
    let name = ServerName::try_from(bare.to_string()).map_err(|e| format!("{host}: {e}"))?;
    let stream = tokio_rustls::TlsConnector::from(tls.clone())
        .connect(name, tcp)
        .await
        .map_err(|e| root_cause(&e))?;
    request(stream, &uri).await
}

async fn request<S>(io: S, uri: &Uri) -> Result<u16, String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| root_cause(&e))?;
    let conn = tokio::spawn(conn);
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let host = uri.authority().map_or("", |a| a.as_str());
    let req = hyper::Request::get(path)
        .header(hyper::header::HOST, host)
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let answer = sender.send_request(req).await.map_err(|e| root_cause(&e));
    conn.abort();
    Ok(answer?.status().as_u16())
}

fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

fn mtime(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// Trust exactly the K3s server CA (when present) and present the client
/// certificate (when configured). ring is the only crypto provider.
fn tls_config(t: &HealthTargets) -> Result<rustls::ClientConfig, HealthError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    if t.ca_file.exists() {
        for cert in read_certs(&t.ca_file)? {
            roots.add(cert).map_err(|e| HealthError::Pem {
                path: t.ca_file.clone(),
                reason: format!("not a usable CA certificate: {e}"),
            })?;
        }
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
    if t.cert_file.as_os_str().is_empty() {
        return Ok(builder.with_no_client_auth());
    }
    let certs = read_certs(&t.cert_file)?;
    let key_bytes = std::fs::read(&t.key_file).map_err(|source| HealthError::Read {
        path: t.key_file.clone(),
        source,
    })?;
    let key = PrivateKeyDer::from_pem_slice(&key_bytes).map_err(|e| HealthError::Pem {
        path: t.key_file.clone(),
        reason: format!("no PEM private key: {e}"),
    })?;
    Ok(builder.with_client_auth_cert(certs, key)?)
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, HealthError> {
    let bytes = std::fs::read(path).map_err(|source| HealthError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| HealthError::Pem {
            path: path.to_path_buf(),
            reason: format!("not PEM certificates: {e}"),
        })?;
    if certs.is_empty() {
        return Err(HealthError::Pem {
            path: path.to_path_buf(),
            reason: "holds no certificate".into(),
        });
    }
    Ok(certs)
}

/// `edge_agent_k3s_health_*`; skipped endpoints have no series.
pub(crate) fn push(out: &mut Snapshot, probes: &[Probe]) {
    let probed: Vec<&Probe> = probes
        .iter()
        .filter(|p| !matches!(p.outcome, Outcome::Skipped(_)))
        .collect();
    let up = out.family(
        "edge_agent_k3s_health_up",
        "Whether the K3s endpoint (kubelet /healthz, apiserver /readyz) answered 2xx.",
        Kind::Gauge,
        &["endpoint"],
    );
    for p in &probed {
        let ok = matches!(p.outcome, Outcome::Http(c) if (200..300).contains(&c));
        up.push(&[p.endpoint], f64::from(u8::from(ok)));
    }
    let code = out.family(
        "edge_agent_k3s_health_status_code",
        "HTTP status of the last K3s health probe; 0 when the endpoint did not answer.",
        Kind::Gauge,
        &["endpoint"],
    );
    for p in &probed {
        let c = match p.outcome {
            Outcome::Http(c) => f64::from(c),
            _ => 0.0,
        };
        code.push(&[p.endpoint], c);
    }
    let seconds = out.family(
        "edge_agent_k3s_health_probe_duration_seconds",
        "How long the last K3s health probe took.",
        Kind::Gauge,
        &["endpoint"],
    );
    for p in &probed {
        seconds.push(&[p.endpoint], p.seconds);
    }
}
