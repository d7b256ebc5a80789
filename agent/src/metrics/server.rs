//! The local Prometheus endpoint: `GET /metrics` on `metrics.listen`
//! (127.0.0.1:9101 by default), HTTP/1.1 with hyper.
//!
//! Owns the listening socket and its connections. Holds no metrics state:
//! each scrape asks the stage for a snapshot over a bounded channel (the
//! stage reuses one younger than a second, so a scrape storm costs one
//! collection a second, not one per request). Never blocks the stage: a
//! full scrape queue is a 503, not a wait. Connections are capped, header
//! reads time out, every connection has a total deadline and a request
//! limit (a client that pipelines requests and never reads its answers
//! holds a slot for [`CONNECTION_DEADLINE`] at most, so scrapers waiting in
//! the kernel's backlog get theirs in turn), and every connection ends when
//! the stage shuts down.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{ALLOW, CONNECTION, CONTENT_TYPE, HeaderValue};
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
pub const MAX_CONNECTIONS: usize = 8;

/// A client that opens a connection and sends nothing is let go after this.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);

/// The longest a connection lives, however busy. Prometheus' default scrape
/// timeout is 10 s: a scrape queued behind connections that never read
/// their answers gets a slot within this, and a scrape that waits for a
/// hung network filesystem's 5 s `statvfs` deadline still fits. Prometheus
/// simply reconnects for its next scrape.
const CONNECTION_DEADLINE: Duration = Duration::from_secs(6);

/// Requests served on one connection; the last answer says
/// `Connection: close`. Prometheus asks once per scrape interval.
const MAX_REQUESTS_PER_CONNECTION: usize = 10;

/// The longest a scrape waits for a snapshot: a collection takes
/// milliseconds, plus at most the K3s probe and statvfs deadlines.
const SCRAPE_WAIT: Duration = Duration::from_secs(10);

/// A scrape asking the stage for the current snapshot.
pub(crate) struct ScrapeRequest {
    pub(crate) reply: oneshot::Sender<Arc<Snapshot>>,
}

/// Serve until `shutdown`. `served` counts answered scrapes.
pub(crate) async fn serve(
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
            let requests = Arc::new(AtomicUsize::new(0));
            let service = service_fn(move |req| {
                let n = requests.fetch_add(1, Ordering::Relaxed) + 1;
                let scrapes = scrapes.clone();
                let served = served.clone();
                async move {
                    let mut r = handle(req, scrapes, served).await?;
                    if n >= MAX_REQUESTS_PER_CONNECTION {
                        r.headers_mut()
                            .insert(CONNECTION, HeaderValue::from_static("close"));
                    }
                    Ok::<_, Infallible>(r)
                }
            });
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                res = conn => if let Err(e) = res {
                    debug!(%peer, error = %e, "metrics endpoint: connection ended with an error");
                },
                _ = tokio::time::sleep(CONNECTION_DEADLINE) => {
                    debug!(%peer, "metrics endpoint: connection deadline reached; closed");
                }
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
pub(crate) async fn bind(addr: SocketAddr) -> std::io::Result<(TcpListener, SocketAddr)> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    Ok((listener, local))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// The endpoint on a free port, answering scrapes with an empty snapshot.
    async fn endpoint(shutdown: &CancellationToken) -> SocketAddr {
        let (listener, addr) = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let (tx, mut rx) = mpsc::channel::<ScrapeRequest>(4);
        tokio::spawn(async move {
            while let Some(r) = rx.recv().await {
                let _ = r.reply.send(Arc::new(Snapshot::new()));
            }
        });
        tokio::spawn(serve(
            listener,
            tx,
            Arc::new(AtomicU64::new(0)),
            shutdown.clone(),
        ));
        addr
    }

    #[tokio::test]
    async fn a_connection_serves_a_bounded_number_of_pipelined_requests_then_closes() {
        let shutdown = CancellationToken::new();
        let addr = endpoint(&shutdown).await;
        let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
        let burst =
            "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n".repeat(3 * MAX_REQUESTS_PER_CONNECTION);
        c.write_all(burst.as_bytes()).await.unwrap();
        let mut all = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), c.read_to_end(&mut all))
            .await
            .expect("the agent closes the connection")
            .unwrap();
        let text = String::from_utf8_lossy(&all);
        assert_eq!(
            text.matches("HTTP/1.1 200").count(),
            MAX_REQUESTS_PER_CONNECTION,
            "{text}"
        );
        assert!(text.to_ascii_lowercase().contains("connection: close"));
        shutdown.cancel();
    }

    #[tokio::test]
    async fn a_connection_that_never_finishes_is_closed_at_its_deadline() {
        let shutdown = CancellationToken::new();
        let addr = endpoint(&shutdown).await;
        let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
        // Keep-alive requests, one every second: each well within the header
        // timeout, the connection as a whole not.
        let started = tokio::time::Instant::now();
        let mut buf = vec![0u8; 64 * 1024];
        let closed = loop {
            if c.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                .await
                .is_err()
            {
                break true;
            }
            match tokio::time::timeout(Duration::from_secs(1), c.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => break true,
                _ => tokio::time::sleep(Duration::from_secs(1)).await,
            }
            if started.elapsed() > CONNECTION_DEADLINE * 3 {
                break false;
            }
        };
        assert!(closed, "still open after {:?}", started.elapsed());
        assert!(started.elapsed() >= CONNECTION_DEADLINE - Duration::from_secs(1));
        shutdown.cancel();
    }
}
