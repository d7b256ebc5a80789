//! HTTP/1.1 POST for the bridge's sinks (remote-write, webhooks): hyper's
//! client connection over TCP, or tokio-rustls with the CAs of
//! `bridge.ca_file` for https. Keeps idle keep-alive connections per
//! host (a few; requests beyond them open more), never follows
//! redirects, never uses a proxy. Classifies every answer for the
//! caller's retry decision ([`Outcome`]).

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{CONTENT_TYPE, HOST, HeaderMap, HeaderValue};
use hyper::{Method, Request, Uri};
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;

/// Idle connections kept per host: the webhook deliverer runs up to
/// `MAX_CONCURRENT_DELIVERIES` requests at once; beyond what is kept, a
/// connection is opened per request and closed after it.
const IDLE_PER_HOST: usize = 32;

/// An answer's body is read (so the connection can be reused) up to this;
/// error bodies (Prometheus says why it refused samples) are short.
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// How much of an error body goes into a message.
const ERROR_TEXT: usize = 300;

/// What became of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// 2xx.
    Ok,
    /// Worth trying again: no connection, timeout, 5xx, 408, 429.
    Retry(String),
    /// Refused for good (other 4xx): sending it again gets the same answer.
    Refused(String),
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum HttpError {
    #[error("bridge.ca_file {}: {reason}", path.display())]
    Ca {
        path: std::path::PathBuf,
        reason: String,
    },
}

type Sender = SendRequest<Full<Bytes>>;

pub(crate) struct HttpClient {
    tls: Option<Arc<rustls::ClientConfig>>,
    timeout: Duration,
    idle: Mutex<HashMap<String, Vec<Sender>>>,
}

impl HttpClient {
    /// A client; `ca_file` is read only when `https` is true.
    pub(crate) fn new(
        https: bool,
        ca_file: &Path,
        timeout: Duration,
    ) -> Result<HttpClient, HttpError> {
        let tls = if https {
            Some(Arc::new(tls_config(ca_file)?))
        } else {
            None
        };
        Ok(HttpClient {
            tls,
            timeout,
            idle: Mutex::new(HashMap::new()),
        })
    }

    /// POST `body` to `uri` with `headers`.
    pub(crate) async fn post(&self, uri: &Uri, headers: &HeaderMap, body: Bytes) -> Outcome {
        match tokio::time::timeout(self.timeout, self.post_inner(uri, headers, body)).await {
            Ok(o) => o,
            Err(_) => Outcome::Retry(format!("no answer within {:?}", self.timeout)),
        }
    }

    async fn post_inner(&self, uri: &Uri, headers: &HeaderMap, body: Bytes) -> Outcome {
        let key = match uri.authority() {
            Some(a) => format!("{}://{a}", uri.scheme_str().unwrap_or("http")),
            None => return Outcome::Refused(format!("{uri}: no host")),
        };
        let mut sender = match self.take_idle(&key) {
            Some(s) => s,
            None => match self.connect(uri).await {
                Ok(s) => s,
                Err(e) => return Outcome::Retry(e),
            },
        };
        let mut req = Request::builder()
            .method(Method::POST)
            .uri(uri.path_and_query().map_or("/", |p| p.as_str()));
        if let Some(a) = uri.authority()
            && let Ok(h) = HeaderValue::from_str(a.as_str())
        {
            req = req.header(HOST, h);
        }
        let mut req = match req.body(Full::new(body)) {
            Ok(r) => r,
            Err(e) => return Outcome::Refused(e.to_string()),
        };
        req.headers_mut().extend(headers.clone());
        let resp = match sender.send_request(req).await {
            Ok(r) => r,
            Err(e) => return Outcome::Retry(root_cause(&e)),
        };
        let status = resp.status();
        let text = match Limited::new(resp.into_body(), MAX_ANSWER_BYTES)
            .collect()
            .await
        {
            Ok(b) => {
                // The whole answer was read: the connection can carry the next request.
                if sender.is_ready() {
                    self.put_idle(key, sender);
                }
                String::from_utf8_lossy(&b.to_bytes()).into_owned()
            }
            Err(_) => String::new(),
        };
        let why = || {
            let t: String = text.trim().chars().take(ERROR_TEXT).collect();
            format!(
                "HTTP {}{}{t}",
                status.as_u16(),
                if t.is_empty() { "" } else { ": " }
            )
        };
        match status.as_u16() {
            200..=299 => Outcome::Ok,
            408 | 429 | 500..=599 => Outcome::Retry(why()),
            _ => Outcome::Refused(why()),
        }
    }

    /// GET `uri` on a fresh connection: the body of a 2xx answer.
    pub(crate) async fn get(&self, uri: &Uri) -> Result<Bytes, String> {
        let fut = async {
            let mut sender = self.connect(uri).await?;
            let req = Request::builder()
                .method(Method::GET)
                .uri(uri.path_and_query().map_or("/", |p| p.as_str()))
                .header(HOST, uri.authority().map_or("", |a| a.as_str()))
                .body(Full::new(Bytes::new()))
                .map_err(|e| e.to_string())?;
            let resp = sender.send_request(req).await.map_err(|e| root_cause(&e))?;
            let status = resp.status();
            let body = Limited::new(resp.into_body(), 16 * MAX_ANSWER_BYTES)
                .collect()
                .await
                .map_err(|e| e.to_string())?
                .to_bytes();
            if status.is_success() {
                Ok(body)
            } else {
                Err(format!("HTTP {}", status.as_u16()))
            }
        };
        tokio::time::timeout(self.timeout, fut)
            .await
            .map_err(|_| format!("no answer within {:?}", self.timeout))?
    }

    fn take_idle(&self, key: &str) -> Option<Sender> {
        let mut idle = self.idle.lock().expect("idle connections");
        let list = idle.get_mut(key)?;
        while let Some(s) = list.pop() {
            if !s.is_closed() {
                return Some(s);
            }
        }
        None
    }

    fn put_idle(&self, key: String, s: Sender) {
        let mut idle = self.idle.lock().expect("idle connections");
        let list = idle.entry(key).or_default();
        if list.len() < IDLE_PER_HOST {
            list.push(s);
        }
    }

    async fn connect(&self, uri: &Uri) -> Result<Sender, String> {
        let host = uri.host().ok_or("no host")?;
        let https = uri.scheme_str() == Some("https");
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let tcp = TcpStream::connect((bare, port))
            .await
            .map_err(|e| format!("{host}:{port}: {}", root_cause(&e)))?;
        let _ = tcp.set_nodelay(true);
        if !https {
            return handshake(tcp).await;
        }
        let tls = self
            .tls
            .clone()
            .ok_or("https without a TLS configuration")?;
        let name = ServerName::try_from(bare.to_string()).map_err(|e| format!("{host}: {e}"))?;
        let stream = tokio_rustls::TlsConnector::from(tls)
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS with {host}:{port}: {}", root_cause(&e)))?;
        handshake(stream).await
    }
}

async fn handshake<S>(io: S) -> Result<Sender, String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| root_cause(&e))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

/// The JSON content type webhooks get.
pub(crate) fn json_headers() -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    h
}

fn tls_config(ca_file: &Path) -> Result<rustls::ClientConfig, HttpError> {
    let bad = |reason: String| HttpError::Ca {
        path: ca_file.to_path_buf(),
        reason,
    };
    let pem = std::fs::read(ca_file).map_err(|e| bad(format!("cannot read it: {e}")))?;
    let mut roots = rustls::RootCertStore::empty();
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(format!("not a PEM file of certificates: {e}")))?;
    let (added, _) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err(bad("no usable CA certificate in it".into()));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(e.to_string()))
        .map(|b| b.with_root_certificates(roots).with_no_client_auth())
}

/// The innermost error in a chain: what a person can act on.
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}
