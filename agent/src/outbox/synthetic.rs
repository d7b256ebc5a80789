//! Synthetic records that go through the whole pipeline: `outbox.test_alert`
//! (what an operator runs to check a new node end to end: Falco-shaped
//! alerts, durable in the outbox, published, acknowledged by the broker)
//! and `outbox.test_report` (records of any class and size, for the integration
//! tests and benchmarks). Both append through the same outbox thread as
//! every producer and wait for durability; `outbox.test_alert` then waits for the
//! broker's acknowledgement.

use std::time::{Duration, Instant, SystemTime};

use serde_json::{Map, Value, json};

use super::{MAX_APPENDS_PER_COMMIT, Outbox, OutboxError, RecordKey};
use crate::config::{AgentConfig, Priority};
use crate::control::{ControlError, Reply};
use crate::report::{Class, Report};
use crate::status::StatusBoard;

/// Alerts one `test-alert` may make: enough to see a burst drain, few
/// enough that nobody floods a fleet's alert topic by a typo.
pub(crate) const MAX_TEST_ALERTS: u64 = 1000;

/// How long `test-alert` waits for the broker by default.
const DEFAULT_WAIT: Duration = Duration::from_secs(10);

/// Polling the outbox for delivery: often enough to report a fast round
/// trip precisely, rarely enough to cost nothing.
const POLL: Duration = Duration::from_millis(20);

/// A Falco-shaped alert (`time`, `rule`, `priority`, `output`,
/// `output_fields`, `tags`, `hostname`, `source`).
fn alert(
    priority: Priority,
    index: u64,
    count: u64,
    test_id: &str,
    hostname: &str,
) -> Map<String, Value> {
    let now = SystemTime::now();
    let time = humantime::format_rfc3339_nanos(now).to_string();
    let nanos = crate::unix_time::nanos(now);
    let p = priority.falco_name();
    let v = json!({
        "time": time,
        "rule": "edge-agent test alert",
        "priority": p,
        "output": format!(
            "{time}: {p} edge-agent test alert {index} of {count} (test_id={test_id} proc.name=edge-agent proc.pid={})",
            std::process::id()
        ),
        "output_fields": {
            "evt.time": nanos,
            "proc.name": "edge-agent",
            "proc.pid": std::process::id(),
            "test.id": test_id,
            "test.index": index,
            "test.count": count,
        },
        "tags": ["edge-agent", "test"],
        "hostname": hostname,
        "source": "syscall",
    });
    match v {
        Value::Object(m) => m,
        _ => unreachable!("a JSON object literal"),
    }
}

fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_default()
}

/// `outbox.test_alert`'s params, checked.
pub(crate) struct TestAlertParams {
    pub(crate) priority: Priority,
    pub(crate) count: u64,
    pub(crate) wait: Duration,
}

pub(crate) fn test_alert_params(params: &Value) -> Result<TestAlertParams, ControlError> {
    let priority = match params.get("priority") {
        None | Some(Value::Null) => Priority::Critical,
        Some(v) => v.as_str().and_then(Priority::parse_falco).ok_or_else(|| {
            ControlError::bad_params(format!(
                "priority {v} is not one of emergency, alert, critical, error, warning, notice, info, debug"
            ))
        })?,
    };
    let count = params.get("count").and_then(Value::as_u64).unwrap_or(1);
    if count == 0 || count > MAX_TEST_ALERTS {
        return Err(ControlError::bad_params(format!(
            "count must be between 1 and {MAX_TEST_ALERTS}"
        )));
    }
    let wait = params
        .get("wait_ms")
        .and_then(Value::as_u64)
        .map_or(DEFAULT_WAIT, Duration::from_millis);
    Ok(TestAlertParams {
        priority,
        count,
        wait,
    })
}

/// The `outbox.test_alert` control method (`edge-agent test-alert`). Params: `priority` (Falco's names,
/// default `critical`), `count` (default 1), `wait_ms` (default 10 s; 0
/// returns once the alerts are durable).
pub(crate) async fn test_alert(
    outbox: &Outbox,
    config: &AgentConfig,
    board: &StatusBoard,
    params: &Value,
) -> Result<Reply, ControlError> {
    let TestAlertParams {
        priority,
        count,
        wait,
    } = test_alert_params(params)?;
    let critical = priority.at_or_above(config.rules.alert_threshold);
    let test_id = format!("{:x}", crate::unix_time::now_nanos());
    let host = hostname();
    let reports: Vec<Report> = (1..=count)
        .map(|i| Report::alert(critical, alert(priority, i, count, &test_id, &host)))
        .collect();
    let started = Instant::now();
    let keys: Vec<RecordKey> = outbox
        .append_tracked(reports)
        .await
        .map_err(|e| ControlError::new("outbox_unavailable", e.to_string()))?
        .into_iter()
        .flatten()
        .collect();
    let durable_ms = started.elapsed().as_millis() as u64;
    let mut waiting = keys.clone();
    let deadline = started + wait;
    while !waiting.is_empty() && Instant::now() < deadline {
        tokio::time::sleep(POLL).await;
        waiting = outbox
            .waiting(waiting)
            .await
            .map_err(|e| ControlError::new("outbox_unavailable", e.to_string()))?;
    }
    let delivered = keys.len() - waiting.len();
    let uplink = board
        .snapshot()
        .into_iter()
        .find(|(n, _)| n == "uplink")
        .map(|(_, s)| {
            json!({
                "state": s.state.as_str(),
                "summary": s.summary,
                "last_error": s.last_error.map(|e| e.message),
            })
        });
    let class = if critical {
        Class::CriticalAlert
    } else {
        Class::Alert
    };
    Ok(Reply::Value(json!({
        "test_id": test_id,
        "priority": priority.falco_name(),
        "class": class.as_str(),
        "topic": format!("edge/{}/{}/alerts", config.node.fleet, config.node.id),
        "queued": count,
        "durable": keys.len(),
        "seqs": keys.iter().map(|k| k.seq).collect::<Vec<_>>(),
        "durable_ms": durable_ms,
        "delivered": delivered,
        "waiting": waiting.len(),
        "elapsed_ms": started.elapsed().as_millis() as u64,
        "uplink": uplink,
    })))
}

/// `count` synthetic reports of `class`, each with `pad` bytes of filler,
/// appended durably; their keys (`None` where given up). The caller bounds
/// `count` and `pad` (the control method does).
pub(crate) async fn test_reports(
    outbox: &Outbox,
    class: Class,
    count: u64,
    pad: usize,
) -> Result<Vec<Option<RecordKey>>, OutboxError> {
    /// Filler held in memory at once: batches shrink as records grow.
    const BATCH_BYTES: usize = 16 * 1024 * 1024;
    let per_batch = (BATCH_BYTES / pad.max(1)).clamp(1, MAX_APPENDS_PER_COMMIT) as u64;
    let filler = "x".repeat(pad);
    let mut keys = Vec::with_capacity(count as usize);
    let mut made = 0;
    while made < count {
        let n = (count - made).min(per_batch);
        let reports = (made..made + n)
            .map(|i| {
                let mut m = Map::new();
                m.insert("test_index".into(), Value::from(i));
                m.insert("pad".into(), Value::from(filler.as_str()));
                match class {
                    Class::CriticalAlert => Report::alert(true, m),
                    Class::Alert => Report::alert(false, m),
                    Class::NodeEvent => Report::node_event("test", "synthetic node event", m),
                    Class::Metrics => Report::metrics(m),
                }
            })
            .collect();
        keys.extend(outbox.append_tracked(reports).await?);
        made += n;
    }
    Ok(keys)
}
