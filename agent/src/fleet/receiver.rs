//! What to do with a message that arrived on one of the node's config
//! topics, decided without I/O: the checks in the order that makes junk
//! cheapest, and which refusals count as a decision on the layer's version.
//! Also the limiter that keeps a flood of junk from filling the outbox.
//!
//! The order: the topic must be one of this node's layers; then the bundle
//! opens (size, envelope, trusted key, signature, target: `bundle::open`);
//! then its version against the one decided for the layer (equal: quiet,
//! lower: `stale`); then expiry and the payload's own rules
//! (`bundle::accept`); then the overlay's keys. What passes is a
//! candidate: the stage merges it with the other layers (a config that is
//! invalid then is refused too), applies it and tries it.
//!
//! A refusal of a bundle whose signature verified, for this layer, with a
//! version above the one decided, decides that version (it is not looked at
//! again); a refusal of anything else changes nothing, so junk can never
//! block the operator's next version.

use std::time::{Duration, Instant, SystemTime};

use super::bundle::{self, Refusal, Target, Verified};
use super::keys::PublicKey;
use super::overlay;
use super::state::FleetState;
use super::summary::Outcome;
use crate::config::AgentConfig;

/// What to do with one message.
#[derive(Debug)]
pub(crate) enum Decision {
    /// Not a bundle for this node: a topic it no longer reads, or the
    /// broker's empty "retained message deleted" marker.
    Ignore(&'static str),
    /// The version already decided for its layer: nothing to say.
    Quiet,
    /// Refused (or stale), with the result to report.
    Refuse(Refused),
    /// A bundle to merge, apply and try.
    Try(Box<Candidate>),
}

/// A refusal and what it means for the layer.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Refused {
    pub(crate) layer: Target,
    pub(crate) outcome: Outcome,
    /// What the bundle says it is for, when it could be read.
    pub(crate) target: Option<String>,
    pub(crate) version: Option<u64>,
    pub(crate) bundle_sha256: String,
    /// Stable code (`bad_signature`, `stale`, `invalid`, ...).
    pub(crate) code: &'static str,
    pub(crate) reasons: Vec<String>,
    /// The bundle was authentic and newer than the layer's decided
    /// version: that version is now decided.
    pub(crate) decides: Option<u64>,
}

impl Refused {
    /// Whether reporting it counts against the [`RefusalLimiter`]. A
    /// refusal that decides a version is not limited: only a trusted key
    /// makes one, and each version is decided once, so its result is the
    /// operator's answer and is never held back. Everything else (junk,
    /// other keys, replays, stale copies) may come from a flooding broker.
    pub(crate) fn limited(&self) -> bool {
        self.decides.is_none()
    }
}

/// A bundle that passed every check that needs only itself.
#[derive(Debug)]
pub(crate) struct Candidate {
    pub(crate) layer: Target,
    pub(crate) verified: Verified,
    pub(crate) overlay: toml::Table,
    /// The bundle as received (kept on disk, verified again at each start).
    pub(crate) raw: Vec<u8>,
}

/// Decide about `bytes`, which arrived on `topic`.
pub(crate) fn inspect(
    topic: &str,
    bytes: &[u8],
    config: &AgentConfig,
    state: &FleetState,
    keys: &[PublicKey],
    now: SystemTime,
) -> Decision {
    let Some((fleet, layer)) = Target::from_topic(topic) else {
        return Decision::Ignore("not a config topic");
    };
    if fleet != config.node.fleet || !super::held::node_layers(config).contains(&layer) {
        return Decision::Ignore("a config topic of another node, group or fleet");
    }
    if bytes.is_empty() {
        return Decision::Ignore("the broker's retained bundle was deleted");
    }
    let sha = bundle::sha256_hex(bytes);
    let refuse = |refusal: Refusal, v: Option<&Verified>, decides: bool| {
        Decision::Refuse(Refused {
            layer: layer.clone(),
            outcome: Outcome::Refused,
            target: v.map(|v| v.payload.target.to_string()),
            version: v.map(|v| v.payload.version),
            bundle_sha256: sha.clone(),
            code: refusal.code(),
            reasons: refusal.reasons(),
            decides: v.filter(|_| decides).map(|v| v.payload.version),
        })
    };
    let max = usize::try_from(config.fleet.max_bundle_bytes.get()).unwrap_or(usize::MAX);
    let verified = match bundle::open(bytes, &config.node.fleet, &layer, keys, max) {
        Ok(v) => v,
        Err(e) => return refuse(e, None, false),
    };
    let decided = state
        .layers
        .get(&layer.to_string())
        .map_or(0, |l| l.decided);
    let version = verified.payload.version;
    if version == decided {
        return Decision::Quiet;
    }
    if version < decided {
        return Decision::Refuse(Refused {
            layer: layer.clone(),
            outcome: Outcome::Stale,
            target: Some(verified.payload.target.to_string()),
            version: Some(version),
            bundle_sha256: sha,
            code: "stale",
            reasons: vec![format!(
                "version {version} is not above version {decided}, the last one decided for {layer}; publish a higher version"
            )],
            decides: None,
        });
    }
    if let Err(e) = bundle::accept(&verified, Some(now)) {
        return refuse(e, Some(&verified), true);
    }
    match overlay::parse_overlay(&verified.payload.overlay) {
        Ok(overlay) => Decision::Try(Box::new(Candidate {
            layer,
            verified,
            overlay,
            raw: bytes.to_vec(),
        })),
        Err(problems) => {
            let label = format!("{layer} v{version}");
            let problems = overlay::attribute(problems, &label);
            refuse(Refusal::Content(problems), Some(&verified), true)
        }
    }
}

/// How many refusal results may go out in a burst, and how fast the
/// allowance comes back: a flood of junk costs the outbox at most a
/// result every [`REFUSAL_REFILL`], whatever the broker sends.
pub(crate) const REFUSAL_BURST: u32 = 10;
pub(crate) const REFUSAL_REFILL: Duration = Duration::from_secs(6);

/// A token bucket for refusal results (outcome `refused` or `stale`) that
/// do not decide a version ([`Refused::limited`]). Refusals over the
/// allowance are counted, logged once a minute at most, and not reported
/// one by one.
#[derive(Debug, Clone)]
pub(crate) struct RefusalLimiter {
    tokens: u32,
    last_refill: Instant,
    /// Refusals not reported since the last one that was.
    pub(crate) suppressed: u64,
}

impl RefusalLimiter {
    pub(crate) fn new(now: Instant) -> RefusalLimiter {
        RefusalLimiter {
            tokens: REFUSAL_BURST,
            last_refill: now,
            suppressed: 0,
        }
    }

    /// Whether a refusal at `now` may be reported.
    pub(crate) fn allow(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last_refill);
        let refill = (elapsed.as_millis() / REFUSAL_REFILL.as_millis()) as u32;
        if refill > 0 {
            self.tokens = (self.tokens + refill).min(REFUSAL_BURST);
            self.last_refill += REFUSAL_REFILL * refill;
        }
        if self.tokens > 0 {
            self.tokens -= 1;
            true
        } else {
            self.suppressed += 1;
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::fleet::bundle::{Payload, SCHEMA, seal, seal_bytes};
    use crate::fleet::keys::{SigningKey, generate};
    use crate::fleet::state::LayerState;

    struct T {
        _dir: tempfile::TempDir,
        key: SigningKey,
        config: AgentConfig,
        state: FleetState,
    }

    fn t() -> T {
        let dir = tempfile::tempdir().unwrap();
        generate(&dir.path().join("k")).unwrap();
        let key = SigningKey::read(&dir.path().join("k")).unwrap();
        let config = AgentConfig::from_toml(
            "[node]\nid = \"n1\"\nfleet = \"f1\"\ngroups = [\"eu\"]\n[fleet]\ntrusted_keys = [\"k.pub\"]\n",
            &dir.path().join("agent.toml"),
        )
        .unwrap();
        T {
            _dir: dir,
            key,
            config,
            state: FleetState::default(),
        }
    }

    fn payload(target: Target, version: u64, overlay: &str) -> Payload {
        Payload {
            schema: SCHEMA,
            fleet: "f1".into(),
            target,
            version,
            created_at: bundle::rfc3339(SystemTime::now()),
            expires_at: None,
            overlay: overlay.into(),
            rules: BTreeMap::new(),
        }
    }

    impl T {
        fn inspect(&self, topic: &str, bytes: &[u8]) -> Decision {
            inspect(
                topic,
                bytes,
                &self.config,
                &self.state,
                &[self.key.public()],
                SystemTime::now(),
            )
        }
        fn decided(&mut self, layer: &str, v: u64) {
            self.state.layers.insert(
                layer.into(),
                LayerState {
                    decided: v,
                    good: None,
                },
            );
        }
    }

    fn refused(d: Decision) -> Refused {
        match d {
            Decision::Refuse(r) => r,
            other => panic!("not refused: {other:?}"),
        }
    }

    #[test]
    fn a_good_bundle_for_one_of_the_nodes_layers_is_a_candidate() {
        let t = t();
        for (topic, target) in [
            ("edge/f1/all/config", Target::Fleet),
            ("edge/f1/group/eu/config", Target::Group("eu".into())),
            ("edge/f1/n1/config", Target::Node("n1".into())),
        ] {
            let b = seal(
                &payload(target.clone(), 1, "[metrics]\ninterval = \"10s\"\n"),
                &t.key,
            );
            match t.inspect(topic, &b) {
                Decision::Try(c) => assert_eq!(c.layer, target),
                other => panic!("{topic}: {other:?}"),
            }
        }
    }

    #[test]
    fn versions_equal_to_the_decided_one_are_quiet_and_lower_ones_stale() {
        let mut t = t();
        t.decided("fleet", 5);
        let b = seal(&payload(Target::Fleet, 5, ""), &t.key);
        assert!(matches!(
            t.inspect("edge/f1/all/config", &b),
            Decision::Quiet
        ));
        let b = seal(&payload(Target::Fleet, 4, ""), &t.key);
        let r = refused(t.inspect("edge/f1/all/config", &b));
        assert_eq!(
            (r.outcome, r.code, r.decides),
            (Outcome::Stale, "stale", None)
        );
        assert!(
            r.reasons[0].contains("version 4") && r.reasons[0].contains("version 5"),
            "{r:?}"
        );
    }

    #[test]
    fn junk_never_decides_a_version_but_an_authentic_bad_bundle_does() {
        let t = t();
        let r = refused(t.inspect("edge/f1/all/config", b"junk"));
        assert_eq!(
            (r.code, r.decides, r.target.as_deref()),
            ("malformed", None, None)
        );
        assert!(r.limited(), "junk counts against the limiter");

        let forged = {
            let p = serde_json::to_vec(&payload(Target::Fleet, 9, "")).unwrap();
            let (_d, other) = {
                let d = tempfile::tempdir().unwrap();
                generate(&d.path().join("o")).unwrap();
                let k = SigningKey::read(&d.path().join("o")).unwrap();
                (d, k)
            };
            seal_bytes(&p, &other)
        };
        let r = refused(t.inspect("edge/f1/all/config", &forged));
        assert_eq!((r.code, r.decides), ("untrusted_key", None));

        let replayed = seal(&payload(Target::Node("n2".into()), 9, ""), &t.key);
        let r = refused(t.inspect("edge/f1/all/config", &replayed));
        assert_eq!((r.code, r.decides), ("wrong_target", None));

        let forbidden = seal(&payload(Target::Fleet, 9, "[node]\nid = \"x\"\n"), &t.key);
        let r = refused(t.inspect("edge/f1/all/config", &forbidden));
        assert_eq!(
            (r.code, r.decides, r.version),
            ("invalid", Some(9), Some(9))
        );
        assert!(!r.limited(), "the operator's answer is never held back");
        assert!(
            r.reasons[0].starts_with("fleet v9: node: a bundle may not set [node]"),
            "{r:?}"
        );

        let mut p = payload(Target::Fleet, 10, "");
        p.expires_at = Some(bundle::rfc3339(SystemTime::now() - Duration::from_secs(1)));
        let r = refused(t.inspect("edge/f1/all/config", &seal(&p, &t.key)));
        assert_eq!((r.code, r.decides), ("expired", Some(10)));
    }

    #[test]
    fn topics_of_other_nodes_and_empty_messages_are_ignored() {
        let t = t();
        let b = seal(&payload(Target::Node("n2".into()), 1, ""), &t.key);
        assert!(matches!(
            t.inspect("edge/f1/n2/config", &b),
            Decision::Ignore(_)
        ));
        assert!(matches!(
            t.inspect("edge/f1/group/us/config", &b),
            Decision::Ignore(_)
        ));
        assert!(matches!(
            t.inspect("edge/f2/all/config", &b),
            Decision::Ignore(_)
        ));
        assert!(matches!(
            t.inspect("edge/f1/all/config", b""),
            Decision::Ignore(_)
        ));
    }

    #[test]
    fn an_oversized_bundle_is_refused_before_it_is_parsed() {
        let mut t = t();
        t.config.fleet.max_bundle_bytes = crate::config::ByteSize::kib(4);
        let big = vec![b'x'; 5000];
        let r = refused(t.inspect("edge/f1/all/config", &big));
        assert_eq!(r.code, "oversized");
    }

    #[test]
    fn the_limiter_lets_a_burst_through_then_one_per_refill() {
        let start = Instant::now();
        let mut l = RefusalLimiter::new(start);
        for _ in 0..REFUSAL_BURST {
            assert!(l.allow(start));
        }
        assert!(!l.allow(start));
        assert!(!l.allow(start + REFUSAL_REFILL / 2));
        assert!(l.allow(start + REFUSAL_REFILL));
        assert!(!l.allow(start + REFUSAL_REFILL));
        assert_eq!(l.suppressed, 3);
        // A long quiet refills the whole burst, no more.
        let later = start + REFUSAL_REFILL * 100;
        for _ in 0..REFUSAL_BURST {
            assert!(l.allow(later));
        }
        assert!(!l.allow(later));
    }
}
