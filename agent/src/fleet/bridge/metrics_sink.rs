//! Metrics batches to Prometheus remote-write. One task, one request at a
//! time, so a node's batches are written in the order the broker handed
//! them over (a remote-write store refuses a sample older than the
//! newest of its series). Whatever queued while a request was under way
//! goes into the next request, up to [`MAX_SAMPLES_PER_WRITE`]. A message
//! is acknowledged to the broker only once its samples are written, or
//! given up: refused by the store (4xx other than 408/429: sending it
//! again gets the same answer), or failing for `bridge.give_up_after`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::Uri;
use hyper::header::{CONTENT_ENCODING, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use serde_json::{Map, Value};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::http::{HttpClient, Outcome};
use super::remote_write::{self, Batch};
use super::stats::{Bad, Kind, Stats};
use super::{Acker, BadInput, Msg, retry_backoff};

/// Samples in one request at most. Prometheus's own remote-write sends
/// 2,000 per request by default; larger requests cost the receiver more
/// memory at once for little gain. 10,000 is 33 node batches of 300.
pub(crate) const MAX_SAMPLES_PER_WRITE: usize = 10_000;

pub(crate) struct MetricsSink {
    pub(crate) url: Uri,
    pub(crate) headers: HeaderMap,
    pub(crate) client: Arc<HttpClient>,
    pub(crate) fleet: String,
    pub(crate) give_up_after: Duration,
    pub(crate) stats: Arc<Stats>,
    pub(crate) acker: Acker,
    pub(crate) bad: BadInput,
}

impl MetricsSink {
    /// The headers of every request: remote-write 1.0 and the configured extras.
    pub(crate) fn headers(extra: &std::collections::BTreeMap<String, String>) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            CONTENT_TYPE,
            HeaderValue::from_static(remote_write::CONTENT_TYPE),
        );
        h.insert(
            CONTENT_ENCODING,
            HeaderValue::from_static(remote_write::CONTENT_ENCODING),
        );
        h.insert(
            HeaderName::from_static("x-prometheus-remote-write-version"),
            HeaderValue::from_static(remote_write::VERSION),
        );
        for (k, v) in extra {
            if let (Ok(k), Ok(v)) = (
                HeaderName::from_bytes(k.as_bytes()),
                HeaderValue::from_str(v),
            ) {
                h.insert(k, v);
            }
        }
        h
    }

    pub(crate) async fn run(self, mut rx: mpsc::Receiver<Msg>, shutdown: CancellationToken) {
        loop {
            let first = tokio::select! {
                _ = shutdown.cancelled() => return,
                m = rx.recv() => match m { Some(m) => m, None => return },
            };
            let mut msgs = Vec::new();
            let mut batches = Vec::new();
            let mut samples = 0;
            let mut next = Some(first);
            while let Some(m) = next.take() {
                match self.decode(&m) {
                    Some(b) => {
                        samples += b.series.len();
                        batches.push(b);
                        msgs.push(m);
                    }
                    None => self.acker.ack(&m).await,
                }
                if samples < MAX_SAMPLES_PER_WRITE {
                    next = rx.try_recv().ok();
                }
            }
            if msgs.is_empty() {
                continue;
            }
            if !self.write(&batches, samples, &shutdown).await {
                return;
            }
            let now = crate::unix_time::now_millis();
            for (m, b) in msgs.iter().zip(&batches) {
                self.stats
                    .written(Kind::Metrics, &m.node, b.time_ms as u64, now);
                self.acker.ack(m).await;
            }
        }
    }

    fn decode(&self, m: &Msg) -> Option<Batch> {
        let payload: Map<String, Value> = match serde_json::from_slice(&m.publish.payload) {
            Ok(p) => p,
            Err(e) => {
                self.bad
                    .count(Kind::Metrics, &m.node, Bad::NotJson, &e.to_string());
                return None;
            }
        };
        if let Err(why) = super::check_record(&payload, &m.node) {
            self.bad.count(Kind::Metrics, &m.node, Bad::NotOurs, &why);
            return None;
        }
        match remote_write::decode(&payload, &self.fleet, &m.node) {
            Ok(b) => Some(b),
            Err(e) => {
                self.bad
                    .count(Kind::Metrics, &m.node, Bad::Undecodable, &e.0);
                None
            }
        }
    }

    /// Write `batches`; false when shutdown came first (nothing acknowledged).
    async fn write(&self, batches: &[Batch], samples: usize, shutdown: &CancellationToken) -> bool {
        let refs: Vec<&Batch> = batches.iter().collect();
        let body = Bytes::from(remote_write::encode(&refs));
        let started = Instant::now();
        let mut backoff = retry_backoff();
        let mut failures = 0u32;
        loop {
            match self
                .client
                .post(&self.url, &self.headers, body.clone())
                .await
            {
                Outcome::Ok => {
                    self.stats
                        .samples_written
                        .fetch_add(samples as u64, std::sync::atomic::Ordering::Relaxed);
                    if failures > 0 {
                        info!(url = %self.url, failures, "remote-write works again");
                    }
                    return true;
                }
                Outcome::Refused(why) => {
                    self.stats.given_up(Kind::Metrics, batches.len() as u64);
                    self.stats.error(
                        crate::unix_time::now_secs(),
                        format!("remote-write refused {samples} samples: {why}"),
                    );
                    error!(url = %self.url, samples, batches = batches.len(), reason = %why, "remote-write refused the samples; given up");
                    return true;
                }
                Outcome::Retry(why) => {
                    if started.elapsed() >= self.give_up_after {
                        self.stats.given_up(Kind::Metrics, batches.len() as u64);
                        self.stats.error(
                            crate::unix_time::now_secs(),
                            format!(
                                "remote-write failing for {:?}, gave up {samples} samples: {why}",
                                self.give_up_after
                            ),
                        );
                        error!(url = %self.url, samples, reason = %why, "remote-write kept failing past bridge.give_up_after; given up");
                        return true;
                    }
                    failures += 1;
                    self.stats.retried(Kind::Metrics);
                    self.stats.error(
                        crate::unix_time::now_secs(),
                        format!("remote-write to {}: {why}", self.url),
                    );
                    if failures == 1 || failures.is_power_of_two() {
                        warn!(url = %self.url, failures, reason = %why, "remote-write failed; retrying");
                    }
                    tokio::select! {
                        _ = shutdown.cancelled() => return false,
                        _ = tokio::time::sleep(backoff.next_delay()) => {}
                    }
                }
            }
        }
    }
}
