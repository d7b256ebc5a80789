//! The bridge's own HTTP endpoint on `bridge.listen`: `GET /metrics`
//! (Prometheus text format) and `GET /status` (the JSON document
//! `edge-agent fleet bridge --status` prints). Connections are capped and
//! header reads time out; everything ends at shutdown.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::stats::Stats;
use crate::metrics::exposition;

/// A scraper or two and a person with curl.
const MAX_CONNECTIONS: usize = 8;
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);

pub(crate) async fn serve(
    listener: TcpListener,
    stats: Arc<Stats>,
    head: Value,
    shutdown: CancellationToken,
) {
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let permit = tokio::select! {
            _ = shutdown.cancelled() => return,
            p = permits.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
        };
        let stream = tokio::select! {
            _ = shutdown.cancelled() => return,
            a = listener.accept() => match a {
                Ok((s, _)) => s,
                Err(_) => { tokio::time::sleep(Duration::from_millis(100)).await; continue; }
            },
        };
        let (stats, head, shutdown) = (stats.clone(), head.clone(), shutdown.clone());
        tokio::spawn(async move {
            let _permit = permit;
            let service = service_fn(move |req| handle(req, stats.clone(), head.clone()));
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                _ = conn => {}
                _ = shutdown.cancelled() => {}
            }
        });
    }
}

async fn handle(
    req: Request<Incoming>,
    stats: Arc<Stats>,
    head: Value,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if !matches!(*req.method(), Method::GET | Method::HEAD) {
        return Ok(reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "only GET and HEAD\n".into(),
        ));
    }
    Ok(match req.uri().path() {
        "/metrics" => reply(
            StatusCode::OK,
            exposition::CONTENT_TYPE,
            exposition::render(&stats.snapshot()),
        ),
        "/status" => reply(
            StatusCode::OK,
            "application/json",
            stats.status(head).to_string(),
        ),
        _ => reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            "edge-agent fleet bridge: GET /metrics or /status\n".into(),
        ),
    })
}

fn reply(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}
