//! Alerts (and node events) to webhooks: each message's payload, exactly
//! as the node published it (Falco's alert object with `node`, `seq` and
//! `schema` added), is POSTed to every configured URL, once per
//! (node, seq) and URL.
//!
//! Each message is delivered by its own task (at most
//! [`MAX_CONCURRENT_DELIVERIES`] at once), so one slow or failing alert
//! does not hold up the others. Before posting, the task asks the
//! de-duplication file which URLs already have it; after, the loop here
//! records the URLs reached (one durable transaction for everything
//! finished meanwhile) and only then acknowledges the message to the
//! broker. A copy that arrives while the first is still being delivered
//! waits for it. The one window left: a bridge killed after a receiver
//! answered and before that transaction committed posts the alert again
//! after its restart.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::Uri;
use serde_json::{Map, Value};
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::{error, warn};

use super::dedup::{Dedup, url_key};
use super::http::{HttpClient, Outcome, json_headers};
use super::stats::{Bad, Kind, Stats};
use super::{Acker, BadInput, Msg, retry_backoff};

/// Deliveries under way at once. A receiver such as falcosidekick takes
/// hundreds of requests at once; more would only queue in its backlog.
pub(crate) const MAX_CONCURRENT_DELIVERIES: usize = 64;

/// One webhook.
#[derive(Clone)]
pub(crate) struct Target {
    pub(crate) url: String,
    pub(crate) uri: Uri,
    pub(crate) key: u64,
}

impl Target {
    pub(crate) fn new(url: &str) -> Option<Target> {
        Some(Target {
            url: url.to_string(),
            uri: url.parse().ok()?,
            key: url_key(url),
        })
    }
}

pub(crate) struct Deliverer {
    pub(crate) kind: Kind,
    pub(crate) targets: Vec<Target>,
    pub(crate) client: Arc<HttpClient>,
    pub(crate) dedup: Arc<Dedup>,
    pub(crate) give_up_after: Duration,
    pub(crate) stats: Arc<Stats>,
    pub(crate) acker: Acker,
    pub(crate) bad: BadInput,
}

/// What a delivery task reports back.
struct Done {
    node: String,
    seq: u64,
    created_ms: u64,
    /// URL keys that took it now.
    reached: Vec<u64>,
    /// Every URL has it (now or before), or was given up.
    complete: bool,
    duplicate: bool,
}

impl Deliverer {
    pub(crate) async fn run(self, mut rx: mpsc::Receiver<Msg>, shutdown: CancellationToken) {
        let this = Arc::new(self);
        let permits = Arc::new(Semaphore::new(MAX_CONCURRENT_DELIVERIES));
        let (done_tx, mut done_rx) = mpsc::channel::<Done>(MAX_CONCURRENT_DELIVERIES);
        // (node, seq) under way -> the messages (copies included) to acknowledge.
        let mut pending: HashMap<(String, u64), Vec<Msg>> = HashMap::new();
        let mut open = true;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                Some(d) = done_rx.recv() => {
                    let mut finished = vec![d];
                    while let Ok(d) = done_rx.try_recv() {
                        finished.push(d);
                    }
                    this.finish(finished, &mut pending).await;
                }
                m = rx.recv(), if open => {
                    let Some(m) = m else { open = false; continue };
                    let Some((seq, created_ms)) = this.check(&m) else {
                        this.acker.ack(&m).await;
                        continue;
                    };
                    let key = (m.node.clone(), seq);
                    if let Some(copies) = pending.get_mut(&key) {
                        copies.push(m);
                        continue;
                    }
                    let permit = tokio::select! {
                        _ = shutdown.cancelled() => return,
                        p = permits.clone().acquire_owned() => p.expect("semaphore open"),
                    };
                    let body = m.publish.payload.clone();
                    let node = m.node.clone();
                    pending.insert(key, vec![m]);
                    let (this2, done_tx, shutdown) = (this.clone(), done_tx.clone(), shutdown.clone());
                    tokio::spawn(async move {
                        let _permit = permit;
                        if let Some(d) = this2.deliver(node, seq, created_ms, body, &shutdown).await {
                            let _ = done_tx.send(d).await;
                        }
                    });
                }
            }
        }
    }

    /// `seq` and creation time of a valid message; bad input is reported.
    fn check(&self, m: &Msg) -> Option<(u64, u64)> {
        let payload: Map<String, Value> = match serde_json::from_slice(&m.publish.payload) {
            Ok(p) => p,
            Err(e) => {
                self.bad
                    .count(self.kind, &m.node, Bad::NotJson, &e.to_string());
                return None;
            }
        };
        let seq = match super::check_record(&payload, &m.node) {
            Ok(seq) => seq,
            Err(why) => {
                self.bad.count(self.kind, &m.node, Bad::NotOurs, &why);
                return None;
            }
        };
        let mut created_ms = 0;
        if self.kind == Kind::Alerts {
            for key in ["rule", "priority", "output"] {
                if !payload.get(key).is_some_and(Value::is_string) {
                    self.bad.count(
                        self.kind,
                        &m.node,
                        Bad::NotOurs,
                        &format!("not a Falco alert: no \"{key}\""),
                    );
                    return None;
                }
            }
            created_ms = payload
                .get("time")
                .and_then(Value::as_str)
                .and_then(|t| humantime::parse_rfc3339(t).ok())
                .map_or(0, crate::unix_time::millis);
        }
        Some((seq, created_ms))
    }

    async fn deliver(
        &self,
        node: String,
        seq: u64,
        created_ms: u64,
        body: Bytes,
        shutdown: &CancellationToken,
    ) -> Option<Done> {
        let dedup = self.dedup.clone();
        let n = node.clone();
        let already = match tokio::task::spawn_blocking(move || dedup.delivered(&n, seq)).await {
            Ok(Ok(v)) => v,
            Ok(Err(e)) => {
                // Without the file, deliver: a duplicate beats a loss.
                warn!(error = %e, "de-duplication file unreadable; delivering anyway");
                Vec::new()
            }
            Err(_) => Vec::new(),
        };
        let todo: Vec<&Target> = self
            .targets
            .iter()
            .filter(|t| !already.contains(&t.key))
            .collect();
        if todo.is_empty() {
            return Some(Done {
                node,
                seq,
                created_ms,
                reached: Vec::new(),
                complete: true,
                duplicate: true,
            });
        }
        let posts = todo
            .iter()
            .map(|t| Box::pin(self.post(t, &node, seq, body.clone(), shutdown)))
            .collect();
        let results = join_all(posts).await;
        if shutdown.is_cancelled() {
            return None;
        }
        let reached = todo
            .iter()
            .zip(&results)
            .filter(|(_, ok)| **ok)
            .map(|(t, _)| t.key)
            .collect();
        Some(Done {
            node,
            seq,
            created_ms,
            reached,
            complete: true,
            duplicate: false,
        })
    }

    /// Post until it is taken (true), refused or given up (false).
    async fn post(
        &self,
        t: &Target,
        node: &str,
        seq: u64,
        body: Bytes,
        shutdown: &CancellationToken,
    ) -> bool {
        let started = Instant::now();
        let mut backoff = retry_backoff();
        let headers = json_headers();
        loop {
            match self.client.post(&t.uri, &headers, body.clone()).await {
                Outcome::Ok => return true,
                Outcome::Refused(why) => {
                    self.stats.given_up(self.kind, 1);
                    self.stats.error(
                        crate::unix_time::now_secs(),
                        format!("{} refused {node}/{seq}: {why}", t.url),
                    );
                    error!(url = %t.url, node, seq, reason = %why, "webhook refused the {}; given up", self.kind.suffix());
                    return false;
                }
                Outcome::Retry(why) => {
                    if started.elapsed() >= self.give_up_after {
                        self.stats.given_up(self.kind, 1);
                        error!(url = %t.url, node, seq, reason = %why, "webhook kept failing past bridge.give_up_after; given up");
                        return false;
                    }
                    self.stats.retried(self.kind);
                    self.stats
                        .error(crate::unix_time::now_secs(), format!("{}: {why}", t.url));
                    warn!(url = %t.url, node, seq, reason = %why, "webhook failed; retrying");
                    tokio::select! {
                        _ = shutdown.cancelled() => return false,
                        _ = tokio::time::sleep(backoff.next_delay()) => {}
                    }
                }
            }
        }
    }

    /// Record what the finished deliveries reached, then acknowledge them.
    async fn finish(&self, finished: Vec<Done>, pending: &mut HashMap<(String, u64), Vec<Msg>>) {
        let records: Vec<(String, u64, u64)> = finished
            .iter()
            .flat_map(|d| d.reached.iter().map(|k| (d.node.clone(), d.seq, *k)))
            .collect();
        let dedup = self.dedup.clone();
        let now = crate::unix_time::now_millis();
        match tokio::task::spawn_blocking(move || {
            dedup.record(&records, now)?;
            dedup.entries()
        })
        .await
        {
            Ok(Ok(n)) => self
                .stats
                .dedup_entries
                .store(n, std::sync::atomic::Ordering::Relaxed),
            Ok(Err(e)) => {
                error!(error = %e, "cannot record deliveries; a redelivered copy may be posted again")
            }
            Err(e) => error!(error = %e, "the de-duplication writer failed"),
        }
        for d in finished {
            if d.duplicate {
                self.stats.duplicate(self.kind);
            } else if d.complete {
                self.stats.written(self.kind, &d.node, d.created_ms, now);
            }
            for m in pending.remove(&(d.node, d.seq)).unwrap_or_default() {
                self.acker.ack(&m).await;
            }
        }
    }
}

/// Run futures concurrently (one per URL, usually one or two); their
/// results in order.
async fn join_all<F: std::future::Future<Output = bool> + Unpin>(mut futs: Vec<F>) -> Vec<bool> {
    use std::future::poll_fn;
    use std::pin::Pin;
    use std::task::Poll;
    let mut results: Vec<Option<bool>> = vec![None; futs.len()];
    poll_fn(|cx| {
        let mut all = true;
        for (i, f) in futs.iter_mut().enumerate() {
            if results[i].is_none() {
                match Pin::new(f).poll(cx) {
                    Poll::Ready(v) => results[i] = Some(v),
                    Poll::Pending => all = false,
                }
            }
        }
        if all { Poll::Ready(()) } else { Poll::Pending }
    })
    .await;
    results.into_iter().map(|r| r.unwrap_or(false)).collect()
}
