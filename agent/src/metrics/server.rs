//! The local Prometheus endpoint: `GET /metrics` on `metrics.listen`
//! (127.0.0.1:9101 by default), HTTP/1.1 with hyper.
//!
//! Owns the listening socket and its connections. Holds no metrics state:
//! each scrape asks the stage for a snapshot over a bounded channel (the
//! stage reuses one younger than a second, so a scrape storm costs one
//! collection a second, not one per request). Never blocks the stage: a
//! full scrape queue is a 503, not a wait. Connections are capped, header
//! reads time out, and every connection ends when the stage shuts down.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{ALLOW, CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::exposition;
use super::family::Snapshot;

/// Concurrent connections. Prometheus keeps one; a few more cover curl and
/// a second scraper. Beyond this, connections wait in the kernel backlog,
/// so a local flood costs no memory here.
const MAX_CONNECTIONS: usize = 8;

/// A client that opens a connection and sends nothing is let go after this.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);

/// The longest a scrape waits for a snapshot: a collection takes
/// milliseconds, plus at most the K3s probe and statvfs deadlines.
const SCRAPE_WAIT: Duration = Duration::from_secs(10);

/// A scrape asking the stage for the current snapshot.
pub struct ScrapeRequest {
    pub reply: oneshot::Sender<Arc<Snapshot>>,
}

/// Serve until `shutdown`. `served` counts answered scrapes.
pub async fn serve(
    listener: TcpListener,
    scrapes: mpsc::Sender<ScrapeRequest>,
    served: Arc<AtomicU64>,
    shutdown: CancellationToken,
) {
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let permit = tokio::select! {
            _ = shutdown.cancelled() => return,
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return,
            },
        };
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    debug!(error = %e, "metrics endpoint: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let scrapes = scrapes.clone();
        let served = served.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let service = service_fn(move |req| handle(req, scrapes.clone(), served.clone()));
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                res = conn => if let Err(e) = res {
                    debug!(%peer, error = %e, "metrics endpoint: connection ended with an error");
                },
                _ = shutdown.cancelled() => {}
            }
        });
    }
}

async fn handle(
    req: Request<Incoming>,
    scrapes: mpsc::Sender<ScrapeRequest>,
    served: Arc<AtomicU64>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path();
    let get = matches!(*req.method(), Method::GET | Method::HEAD);
    Ok(match (path, get) {
        ("/metrics", true) => scrape(scrapes, served).await,
        ("/", true) => text(
            StatusCode::OK,
            "edge-agent host metrics: GET /metrics (Prometheus text format)\n",
        ),
        ("/metrics" | "/", false) => {
            let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD\n");
            r.headers_mut()
                .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
            r
        }
        _ => text(StatusCode::NOT_FOUND, "not found: try /metrics\n"),
    })
}

async fn scrape(
    scrapes: mpsc::Sender<ScrapeRequest>,
    served: Arc<AtomicU64>,
) -> Response<Full<Bytes>> {
    let (tx, rx) = oneshot::channel();
    if scrapes.try_send(ScrapeRequest { reply: tx }).is_err() {
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            "busy: too many scrapes at once\n",
        );
    }
    match tokio::time::timeout(SCRAPE_WAIT, rx).await {
        Ok(Ok(snapshot)) => {
            served.fetch_add(1, Ordering::Relaxed);
            let body = exposition::render(&snapshot);
            let mut r = Response::new(Full::new(Bytes::from(body)));
            r.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static(exposition::CONTENT_TYPE),
            );
            r
        }
        _ => text(
            StatusCode::SERVICE_UNAVAILABLE,
            "no snapshot: the collector is busy or stopping\n",
        ),
    }
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// Bind `addr`; the caller reports failure and keeps collecting without
/// the endpoint.
pub async fn bind(addr: SocketAddr) -> std::io::Result<(TcpListener, SocketAddr)> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    Ok((listener, local))
}
