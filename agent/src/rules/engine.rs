//! The engine's state machine: one compiled [`RuleSet`], per-rule counters
//! and token buckets, and the alert statistics status reports.
//!
//! Owns what happens when an event matches: count the hit, ask the rule's
//! token bucket, render the alert or count it as suppressed. Does no I/O and
//! reads no clock: the caller passes `now`, so it is tested without a
//! runtime. Swapping in a new rule set keeps each rule's counters and bucket
//! by name.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::{Map, Value, json};

use crate::config::{Priority, RulesConfig};
use crate::event::Event;

use super::loader::{Loaded, Problem, RuleSet, Severity};
use super::output::{AlertHead, alert};
use super::stage::RulesDetails;

/// Per-rule limits and the critical threshold, from `[rules]`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    pub rate: f64,
    pub max_burst: u32,
    pub alert_threshold: Priority,
}

impl From<&RulesConfig> for Limits {
    fn from(c: &RulesConfig) -> Self {
        Limits {
            rate: c.rate,
            max_burst: c.max_burst,
            alert_threshold: c.alert_threshold,
        }
    }
}

/// Falco's outputs token bucket: `max_burst` tokens, refilled at `rate`/s.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct TokenBucket {
    tokens: f64,
    last_ns: u64,
}

impl TokenBucket {
    pub(crate) fn full(limits: &Limits, now_ns: u64) -> Self {
        TokenBucket {
            tokens: f64::from(limits.max_burst),
            last_ns: now_ns,
        }
    }

    /// Take one token if there is one.
    pub(crate) fn take(&mut self, limits: &Limits, now_ns: u64) -> bool {
        let elapsed = now_ns.saturating_sub(self.last_ns) as f64 / 1e9;
        self.last_ns = self.last_ns.max(now_ns);
        self.tokens = (self.tokens + elapsed * limits.rate).min(f64::from(limits.max_burst));
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// What the engine keeps per rule, across reloads.
#[derive(Debug, Clone)]
pub(crate) struct RuleState {
    pub(crate) hits: u64,
    pub(crate) alerts: u64,
    pub(crate) suppressed: u64,
    /// Suppressed since the last suppression report.
    pub(crate) unreported: u64,
    bucket: TokenBucket,
}

/// Alerts per priority per minute over the last hour.
#[derive(Debug, Clone, Default)]
struct HourWindow {
    slots: Vec<(u64, [u64; 8])>,
}

impl HourWindow {
    fn add(&mut self, now_ns: u64, p: Priority) {
        if self.slots.is_empty() {
            self.slots = vec![(u64::MAX, [0; 8]); 60];
        }
        let minute = now_ns / 60_000_000_000;
        let slot = &mut self.slots[(minute % 60) as usize];
        if slot.0 != minute {
            *slot = (minute, [0; 8]);
        }
        slot.1[p.index()] += 1;
    }

    fn totals(&self, now_ns: u64) -> [u64; 8] {
        let minute = now_ns / 60_000_000_000;
        let mut out = [0; 8];
        for (m, counts) in &self.slots {
            if *m != u64::MAX && *m + 60 > minute && *m <= minute {
                for (o, c) in out.iter_mut().zip(counts) {
                    *o += c;
                }
            }
        }
        out
    }
}

/// An alert ready for the outbox.
#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    pub(crate) critical: bool,
    pub(crate) priority: Priority,
    pub(crate) payload: Map<String, Value>,
}

pub struct Engine {
    set: Arc<RuleSet>,
    problems: Arc<Vec<Problem>>,
    /// Aligned with `set.rules`.
    state: Vec<RuleState>,
    limits: Limits,
    hostname: String,
    events: u64,
    alerts_total: [u64; 8],
    suppressed_total: u64,
    hour: HourWindow,
}

impl Engine {
    pub fn new(loaded: Loaded, limits: Limits, hostname: String, now_ns: u64) -> Engine {
        let mut e = Engine {
            set: Arc::new(RuleSet::default()),
            problems: Arc::new(Vec::new()),
            state: Vec::new(),
            limits,
            hostname,
            events: 0,
            alerts_total: [0; 8],
            suppressed_total: 0,
            hour: HourWindow::default(),
        };
        e.swap(loaded, now_ns);
        e
    }

    pub fn set(&self) -> &Arc<RuleSet> {
        &self.set
    }

    pub(crate) fn problems(&self) -> &[Problem] {
        &self.problems
    }

    pub(crate) fn set_limits(&mut self, limits: Limits) {
        self.limits = limits;
    }

    /// Put a new rule set in force, keeping counters and buckets by rule name.
    pub(crate) fn swap(&mut self, loaded: Loaded, now_ns: u64) {
        let mut old: HashMap<Arc<str>, RuleState> = self
            .set
            .rules
            .iter()
            .zip(self.state.drain(..))
            .map(|(r, s)| (r.name.clone(), s))
            .collect();
        let limits = self.limits;
        self.state = loaded
            .set
            .rules
            .iter()
            .map(|r| {
                old.remove(&r.name).unwrap_or(RuleState {
                    hits: 0,
                    alerts: 0,
                    suppressed: 0,
                    unreported: 0,
                    bucket: TokenBucket::full(&limits, now_ns),
                })
            })
            .collect();
        self.set = Arc::new(loaded.set);
        self.problems = Arc::new(loaded.problems);
    }

    /// Evaluate one event; alerts that pass their rule's rate limit go to `out`.
    #[inline]
    pub fn process(&mut self, e: &Event, now_ns: u64, out: &mut Vec<Alert>) {
        self.events += 1;
        let set = &self.set;
        let state = &mut self.state;
        let limits = &self.limits;
        let hostname = &self.hostname;
        let hour = &mut self.hour;
        let alerts_total = &mut self.alerts_total;
        let suppressed_total = &mut self.suppressed_total;
        set.for_each_match(e, |i, rule| {
            let st = &mut state[i];
            st.hits += 1;
            if !st.bucket.take(limits, now_ns) {
                st.suppressed += 1;
                st.unreported += 1;
                *suppressed_total += 1;
                return;
            }
            st.alerts += 1;
            alerts_total[rule.priority.index()] += 1;
            hour.add(now_ns, rule.priority);
            let head = AlertHead {
                rule: &rule.name,
                priority: rule.priority,
                tags: &rule.tags,
                hostname,
            };
            out.push(Alert {
                critical: rule.priority.at_or_above(limits.alert_threshold),
                priority: rule.priority,
                payload: alert(&head, &rule.output, e),
            });
        });
    }

    /// Rules that suppressed alerts since the last call, with counts.
    pub(crate) fn take_suppressed(&mut self) -> Vec<(String, u64)> {
        self.set
            .rules
            .iter()
            .zip(self.state.iter_mut())
            .filter(|(_, s)| s.unreported > 0)
            .map(|(r, s)| (r.name.to_string(), std::mem::take(&mut s.unreported)))
            .collect()
    }

    /// Every rule of the catalog with its counters (`rules list`).
    pub(crate) fn rules_list(&self) -> Value {
        let by_name: HashMap<&str, &RuleState> = self
            .set
            .rules
            .iter()
            .zip(&self.state)
            .map(|(r, s)| (&*r.name, s))
            .collect();
        let rules: Vec<Value> = self
            .set
            .catalog
            .iter()
            .map(|r| {
                let st = by_name.get(r.name.as_str());
                json!({
                    "name": r.name,
                    "priority": r.priority.as_str(),
                    "enabled": r.enabled,
                    "state": r.state,
                    "file": r.file,
                    "line": r.line,
                    "event_types": r.event_types,
                    "hits": st.map(|s| s.hits),
                    "alerts": st.map(|s| s.alerts),
                    "suppressed": st.map(|s| s.suppressed),
                })
            })
            .collect();
        json!({ "rules": rules, "problems": self.problems.iter().map(|p| json!({
            "severity": p.severity, "file": p.file, "line": p.line, "column": p.column,
            "kind": p.kind, "name": p.name, "reason": p.reason, "text": p.to_string(),
        })).collect::<Vec<_>>() })
    }

    /// The stage's status details as the engine knows them (files, counts,
    /// alerts in the last hour, suppressed); `last_reload` is the stage's.
    pub(crate) fn status_details(&self, now_ns: u64) -> RulesDetails {
        let set = &self.set;
        let files = set
            .files
            .iter()
            .map(|f| {
                json!({
                    "path": f.path,
                    "sha256": f.sha256.get(..16).unwrap_or(""),
                    "engine_version": f.required_engine_version,
                    "rules": f.rules,
                })
            })
            .collect();
        let load_errors = self
            .problems
            .iter()
            .filter(|p| p.severity == Severity::Error)
            .take(20)
            .map(|p| p.to_string())
            .collect();
        let hour = self.hour.totals(now_ns);
        let mut alerts_last_hour = Map::new();
        for p in Priority::ALL {
            if hour[p.index()] > 0 {
                alerts_last_hour.insert(p.as_str().into(), hour[p.index()].into());
            }
        }
        let mut top: Vec<(&str, u64)> = set
            .rules
            .iter()
            .zip(&self.state)
            .filter(|(_, s)| s.hits > 0)
            .map(|(r, s)| (&*r.name, s.hits))
            .collect();
        top.sort_by_key(|t| std::cmp::Reverse(t.1));
        let top_hits = top
            .into_iter()
            .take(5)
            .map(|(n, h)| (n.to_string(), h.into()))
            .collect();
        RulesDetails {
            files,
            rules_loaded: set.rules.len() as u64,
            rules_failed: set.count("failed") as u64,
            rules_skipped: set.count("skipped") as u64,
            rules_disabled: set.count("disabled") as u64,
            load_errors,
            events_evaluated: self.events,
            held_back: None,
            trial_ends: None,
            alerts_last_hour,
            alerts_total: self.alerts_total.iter().sum(),
            alerts_suppressed: self.suppressed_total,
            top_hits,
            last_reload: None,
            alert_sinks: Default::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{EventType, Process};
    use crate::rules::loader::{Source, load_sources};

    const RULES: &str = r#"
- rule: Shell
  desc: a shell
  condition: evt.type = execve and proc.name = sh
  output: shell %proc.cmdline
  priority: CRITICAL
  tags: [shell]
- rule: Any exec
  desc: every exec
  condition: evt.type = execve
  output: exec %proc.name
  priority: notice
"#;

    fn load(text: &str) -> Loaded {
        load_sources(vec![Source {
            path: "r.yaml".into(),
            text: Ok(text.into()),
        }])
    }

    fn limits(rate: f64, burst: u32) -> Limits {
        Limits {
            rate,
            max_burst: burst,
            alert_threshold: Priority::Critical,
        }
    }

    fn sh() -> Event {
        Event::new(
            EventType::Execve,
            Arc::new(Process::new(9, 1, "/bin/sh", &["sh", "-c", "id"])),
        )
    }

    #[test]
    fn matches_become_alerts_critical_by_threshold() {
        let mut eng = Engine::new(load(RULES), limits(1.0, 5), "node".into(), 0);
        let mut out = Vec::new();
        eng.process(&sh(), 1, &mut out);
        assert_eq!(out.len(), 2);
        assert!(out[0].critical);
        assert_eq!(out[0].payload["rule"], "Shell");
        assert_eq!(out[0].payload["hostname"], "node");
        assert!(!out[1].critical);
    }

    #[test]
    fn the_token_bucket_suppresses_bursts_and_counts_them() {
        let mut eng = Engine::new(load(RULES), limits(2.0, 3), "n".into(), 0);
        let mut out = Vec::new();
        for _ in 0..10 {
            eng.process(&sh(), 0, &mut out);
        }
        // Two rules, three tokens each.
        assert_eq!(out.len(), 6);
        assert_eq!(
            eng.take_suppressed(),
            vec![("Shell".into(), 7), ("Any exec".into(), 7)]
        );
        assert!(eng.take_suppressed().is_empty(), "reported counts reset");
        // One second at 2/s refills two tokens per rule.
        out.clear();
        for _ in 0..10 {
            eng.process(&sh(), 1_000_000_000, &mut out);
        }
        assert_eq!(out.len(), 4);
        let list = eng.rules_list();
        assert_eq!(list["rules"][0]["hits"], 20);
        assert_eq!(list["rules"][0]["suppressed"], 15);
    }

    #[test]
    fn a_swap_keeps_counters_of_rules_that_stay() {
        let mut eng = Engine::new(load(RULES), limits(1.0, 100), "n".into(), 0);
        let mut out = Vec::new();
        eng.process(&sh(), 0, &mut out);
        let only_shell = RULES.split("- rule: Any exec").next().unwrap();
        eng.swap(load(only_shell), 0);
        eng.process(&sh(), 0, &mut out);
        let list = eng.rules_list();
        assert_eq!(list["rules"].as_array().unwrap().len(), 1);
        assert_eq!(list["rules"][0]["hits"], 2);
    }

    #[test]
    fn status_counts_alerts_in_the_last_hour_by_priority() {
        let mut eng = Engine::new(load(RULES), limits(1.0, 100), "n".into(), 0);
        let mut out = Vec::new();
        let t0 = 1_700_000_000_000_000_000u64;
        eng.process(&sh(), t0, &mut out);
        eng.process(&sh(), t0 + 30 * 60 * 1_000_000_000, &mut out);
        let d = eng.status_details(t0 + 31 * 60 * 1_000_000_000);
        assert_eq!(
            Value::Object(d.alerts_last_hour),
            json!({"critical": 2, "notice": 2})
        );
        let d = eng.status_details(t0 + 75 * 60 * 1_000_000_000);
        assert_eq!(
            Value::Object(d.alerts_last_hour),
            json!({"critical": 1, "notice": 1})
        );
        assert_eq!(d.alerts_total, 4);
        assert_eq!(d.rules_loaded, 2);
    }
}
