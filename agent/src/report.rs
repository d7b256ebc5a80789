//! What stages hand to the outbox: [`Report`]s, through a [`ReportSender`].
//!
//! Owns the producer side of the outbox: the record classes, their topics,
//! and the bounded channel in front of the outbox stage. Producers never
//! wait on it: when the outbox stage is behind, `try_send` refuses and the
//! refusal is counted per class, so no loss is silent. Never touches disk.

use std::ops::{Index, IndexMut};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use serde::ser::SerializeMap;
use serde::{Deserialize, Serialize, Serializer};
use serde_json::{Map, Value};
use tokio::sync::mpsc;

/// Reports in flight between producers and the outbox stage. At the sensor's
/// burst rate (tens of thousands of alerts/s in a storm) this is a few tens of
/// milliseconds of slack; the outbox commits in batches far faster than that
/// in steady state, so a full channel means the disk is truly behind.
pub const REPORT_CHANNEL_CAPACITY: usize = 4096;

/// A record's class. The order is the drain order and the reverse of the
/// order in which a full outbox gives records up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Class {
    CriticalAlert = 0,
    Alert = 1,
    NodeEvent = 2,
    Metrics = 3,
}

impl Class {
    pub(crate) const ALL: [Class; 4] = [
        Class::CriticalAlert,
        Class::Alert,
        Class::NodeEvent,
        Class::Metrics,
    ];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Class::CriticalAlert => "critical_alert",
            Class::Alert => "alert",
            Class::NodeEvent => "node_event",
            Class::Metrics => "metrics",
        }
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }

    pub(crate) fn from_index(i: u8) -> Option<Class> {
        Class::ALL.get(usize::from(i)).copied()
    }
}

/// One `T` per record class, indexed by [`Class`]. Serializes as an object
/// keyed by class name in drain order (`{"critical_alert": .., "alert":
/// .., "node_event": .., "metrics": ..}`), the form status, the state
/// message and the listings show.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub(crate) struct PerClass<T>([T; 4]);

impl<T> PerClass<T> {
    /// The value of each class from `f`.
    pub(crate) fn from_fn(mut f: impl FnMut(Class) -> T) -> Self {
        PerClass(Class::ALL.map(&mut f))
    }

    /// Each class with its value, in drain order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (Class, &T)> {
        Class::ALL.into_iter().zip(&self.0)
    }

    /// The values, in drain order.
    pub(crate) fn values(&self) -> impl Iterator<Item = &T> {
        self.0.iter()
    }

    pub(crate) fn map<U>(self, f: impl FnMut(T) -> U) -> PerClass<U> {
        PerClass(self.0.map(f))
    }
}

impl PerClass<u64> {
    pub(crate) fn total(&self) -> u64 {
        self.0.iter().sum()
    }
}

/// Values in [`Class::ALL`] order.
impl<T> From<[T; 4]> for PerClass<T> {
    fn from(values: [T; 4]) -> Self {
        PerClass(values)
    }
}

impl<T> Index<Class> for PerClass<T> {
    type Output = T;
    fn index(&self, class: Class) -> &T {
        &self.0[class.index()]
    }
}

impl<T> IndexMut<Class> for PerClass<T> {
    fn index_mut(&mut self, class: Class) -> &mut T {
        &mut self.0[class.index()]
    }
}

impl<T: Serialize> Serialize for PerClass<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(4))?;
        for (class, v) in self.iter() {
            map.serialize_entry(class.as_str(), v)?;
        }
        map.end()
    }
}

/// The last level of the topic a record is published to:
/// `edge/<fleet>/<node>/<suffix>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Topic {
    Alerts,
    Metrics,
    Events,
    ConfigResult,
}

impl Topic {
    pub(crate) fn suffix(self) -> &'static str {
        match self {
            Topic::Alerts => "alerts",
            Topic::Metrics => "metrics",
            Topic::Events => "events",
            Topic::ConfigResult => "config/result",
        }
    }
}

/// One thing the node must report. The outbox adds the node id, the
/// sequence number and the schema version when it stores it.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub(crate) class: Class,
    pub(crate) topic: Topic,
    /// When it happened (not when it was queued).
    pub(crate) created: SystemTime,
    /// A JSON object; must not use the keys `node`, `seq` or `schema`.
    pub(crate) payload: Map<String, Value>,
}

impl Report {
    /// An alert (Falco's alert object as payload).
    pub fn alert(critical: bool, payload: Map<String, Value>) -> Self {
        let class = if critical {
            Class::CriticalAlert
        } else {
            Class::Alert
        };
        Self {
            class,
            topic: Topic::Alerts,
            created: SystemTime::now(),
            payload,
        }
    }

    /// A node event: `{"kind": .., "message": .., ..fields}`. `kind` is a
    /// stable snake_case word (`drift`, `sensor_unavailable`, `config_applied`).
    pub(crate) fn node_event(
        kind: &str,
        message: impl Into<String>,
        fields: Map<String, Value>,
    ) -> Self {
        let mut payload = Map::new();
        payload.insert("kind".into(), Value::from(kind));
        payload.insert("message".into(), Value::from(message.into()));
        payload.extend(fields);
        Self {
            class: Class::NodeEvent,
            topic: Topic::Events,
            created: SystemTime::now(),
            payload,
        }
    }

    /// The result of a fleet config bundle (`config/result`). A node event
    /// by class: it outranks metrics when the outbox must give records up.
    pub(crate) fn config_result(payload: Map<String, Value>) -> Self {
        Self {
            class: Class::NodeEvent,
            topic: Topic::ConfigResult,
            created: SystemTime::now(),
            payload,
        }
    }

    /// A metrics batch.
    pub(crate) fn metrics(payload: Map<String, Value>) -> Self {
        Self {
            class: Class::Metrics,
            topic: Topic::Metrics,
            created: SystemTime::now(),
            payload,
        }
    }
}

/// Reports refused because the channel was full, by class.
#[derive(Debug, Default)]
pub struct DropCounters(PerClass<AtomicU64>);

impl DropCounters {
    pub(crate) fn get(&self, class: Class) -> u64 {
        self.0[class].load(Ordering::Relaxed)
    }
    #[cfg(test)]
    pub(crate) fn total(&self) -> u64 {
        self.0.values().map(|n| n.load(Ordering::Relaxed)).sum()
    }
    fn add(&self, class: Class) {
        self.0[class].fetch_add(1, Ordering::Relaxed);
    }
}

/// The producer end. Clone it into every stage that reports.
#[derive(Clone, Debug)]
pub struct ReportSender {
    tx: mpsc::Sender<Report>,
    dropped: Arc<DropCounters>,
}

impl ReportSender {
    /// Queue without waiting. Returns false (and counts it) when the outbox
    /// stage is behind or gone.
    pub(crate) fn try_send(&self, report: Report) -> bool {
        let class = report.class;
        match self.tx.try_send(report) {
            Ok(()) => true,
            Err(_) => {
                self.dropped.add(class);
                false
            }
        }
    }

    /// Queue, waiting for room. For low-rate producers (node events, metrics
    /// batches) that can afford to wait; counts the report if the outbox is gone.
    pub async fn send(&self, report: Report) -> bool {
        let class = report.class;
        if self.tx.send(report).await.is_ok() {
            true
        } else {
            self.dropped.add(class);
            false
        }
    }

    pub fn dropped(&self) -> &Arc<DropCounters> {
        &self.dropped
    }
}

/// A bounded report channel of `capacity`.
pub fn channel(capacity: usize) -> (ReportSender, mpsc::Receiver<Report>) {
    let (tx, rx) = mpsc::channel(capacity);
    (
        ReportSender {
            tx,
            dropped: Arc::default(),
        },
        rx,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_channel_counts_what_it_refuses_by_class() {
        let (tx, _rx) = channel(1);
        assert!(tx.try_send(Report::metrics(Map::new())));
        assert!(!tx.try_send(Report::alert(true, Map::new())));
        assert!(!tx.try_send(Report::metrics(Map::new())));
        assert_eq!(tx.dropped().get(Class::CriticalAlert), 1);
        assert_eq!(tx.dropped().get(Class::Metrics), 1);
        assert_eq!(tx.dropped().total(), 2);
    }

    #[test]
    fn per_class_values_serialize_keyed_by_class_name_in_drain_order() {
        let v = PerClass::from([1u64, 2, 3, 4]);
        assert_eq!(
            serde_json::to_string(&v).unwrap(),
            r#"{"critical_alert":1,"alert":2,"node_event":3,"metrics":4}"#
        );
        assert_eq!(v[Class::NodeEvent], 3);
        assert_eq!(v.total(), 10);
        assert_eq!(
            PerClass::from_fn(Class::index),
            PerClass::from([0, 1, 2, 3])
        );
    }

    #[test]
    fn classes_sort_in_drain_order() {
        let mut v = vec![
            Class::Metrics,
            Class::CriticalAlert,
            Class::NodeEvent,
            Class::Alert,
        ];
        v.sort();
        assert_eq!(v, Class::ALL);
    }
}
