//! What a full outbox gives up, and in which order. Pure: it decides the
//! next step from per-class usage; the store carries the step out on the
//! file and asks again until the batch fits.
//!
//! The order (docs/ARCHITECTURE.md, "Outbox"): metrics first — older batches thinned (every
//! second one of the older half goes, so old periods keep a coarser
//! picture), then the oldest dropped — then node events, then alerts,
//! critical alerts last. Within a class the oldest go first, and a stored
//! record is older than an incoming one.

use crate::report::{Class, PerClass};

/// Records and estimated file bytes (see `format::cost`) of one class.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Usage {
    pub(crate) records: u64,
    pub(crate) cost: u64,
}

/// Per-class usage.
pub(crate) type ByClass = PerClass<Usage>;

pub(crate) fn total(u: &ByClass) -> u64 {
    u.values().map(|c| c.cost).sum()
}

/// One step of giving up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// Delete every second record of the older half of the stored metrics
    /// (the oldest record of the half stays). Loses time resolution of old
    /// metrics, keeps their span. Frees about a quarter of the metrics.
    ThinMetrics,
    /// Delete stored records of `class`, oldest first, until `cost` bytes
    /// are freed or the class is empty. Loses the oldest records.
    DropStored { class: Class, cost: u64 },
    /// Refuse incoming records of `class`, oldest first, until `cost` bytes
    /// are freed. Loses the newest records of a class that has nothing
    /// stored left to give.
    DropIncoming { class: Class, cost: u64 },
}

/// Fewest stored metrics batches worth thinning: with fewer, the older half
/// holds a single batch and thinning frees nothing.
pub(crate) const MIN_THIN_RECORDS: u64 = 4;

/// The order in which classes are given up: the reverse of the drain order.
pub(crate) const GIVE_UP_ORDER: [Class; 4] = [
    Class::Metrics,
    Class::NodeEvent,
    Class::Alert,
    Class::CriticalAlert,
];

/// The next step to bring `stored + incoming` within `budget`, or `None`
/// when it already fits (or nothing is left to give). `thinned` says a
/// thinning pass already ran for this batch: one pass per batch, so that a
/// long outage thins old metrics progressively (each pass halves the older
/// half again) instead of all at once.
pub(crate) fn next_step(
    stored: &ByClass,
    incoming: &ByClass,
    budget: u64,
    thinned: bool,
) -> Option<Step> {
    let used = total(stored) + total(incoming);
    let over = used.checked_sub(budget).filter(|o| *o > 0)?;
    for class in GIVE_UP_ORDER {
        if class == Class::Metrics && !thinned && stored[class].records >= MIN_THIN_RECORDS {
            return Some(Step::ThinMetrics);
        }
        if stored[class].records > 0 {
            return Some(Step::DropStored { class, cost: over });
        }
        if incoming[class].records > 0 {
            return Some(Step::DropIncoming { class, cost: over });
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A model outbox: per class, the costs of its records, oldest first.
    #[derive(Default, Clone)]
    struct Model {
        stored: PerClass<Vec<u64>>,
        given_up: PerClass<u64>,
    }

    fn usage(v: &PerClass<Vec<u64>>) -> ByClass {
        PerClass::from_fn(|class| Usage {
            records: v[class].len() as u64,
            cost: v[class].iter().sum(),
        })
    }

    /// Free at least `cost` from the front of `v`; returns records removed.
    fn drop_front(v: &mut Vec<u64>, cost: u64) -> u64 {
        let mut freed = 0;
        let mut n = 0;
        while freed < cost && !v.is_empty() {
            freed += v.remove(0);
            n += 1;
        }
        n
    }

    impl Model {
        /// Append a batch the way the store does; returns what was stored.
        fn append(&mut self, mut incoming: PerClass<Vec<u64>>, budget: u64) {
            let mut thinned = false;
            while let Some(step) =
                next_step(&usage(&self.stored), &usage(&incoming), budget, thinned)
            {
                match step {
                    Step::ThinMetrics => {
                        thinned = true;
                        let m = &mut self.stored[Class::Metrics];
                        let half = m.len() / 2;
                        let mut i = 0;
                        let mut kept = Vec::new();
                        for (j, c) in m.drain(..).enumerate() {
                            if j < half && j % 2 == 1 {
                                i += 1;
                            } else {
                                kept.push(c);
                            }
                        }
                        *m = kept;
                        self.given_up[Class::Metrics] += i;
                    }
                    Step::DropStored { class, cost } => {
                        let n = drop_front(&mut self.stored[class], cost);
                        self.given_up[class] += n;
                    }
                    Step::DropIncoming { class, cost } => {
                        let n = drop_front(&mut incoming[class], cost);
                        self.given_up[class] += n;
                    }
                }
            }
            for class in Class::ALL {
                let new = std::mem::take(&mut incoming[class]);
                self.stored[class].extend(new);
            }
        }
    }

    /// `(records, cost of each)` per class, in drain order.
    fn batch(per_class: [(usize, u64); 4]) -> PerClass<Vec<u64>> {
        PerClass::from(per_class.map(|(n, c)| vec![c; n]))
    }

    #[test]
    fn nothing_is_given_up_within_budget() {
        let mut m = Model::default();
        m.append(batch([(1, 100), (1, 100), (1, 100), (1, 100)]), 400);
        assert_eq!(m.given_up, PerClass::default());
        assert_eq!(total(&usage(&m.stored)), 400);
    }

    #[test]
    fn metrics_are_thinned_before_anything_is_dropped() {
        let mut m = Model::default();
        m.append(batch([(0, 0), (0, 0), (0, 0), (8, 100)]), 1000);
        m.append(batch([(1, 100), (0, 0), (0, 0), (0, 0)]), 800);
        // 900 > 800: one thinning pass drops 2 of the older 4 metrics.
        assert_eq!(m.given_up, PerClass::from([0, 0, 0, 2]));
        assert_eq!(m.stored[Class::Metrics].len(), 6);
        assert_eq!(m.stored[Class::CriticalAlert].len(), 1);
    }

    #[test]
    fn classes_go_in_order_and_critical_alerts_last() {
        let mut m = Model::default();
        m.append(batch([(10, 10), (10, 10), (10, 10), (10, 10)]), 400);
        // A flood of critical alerts: everything else goes first.
        m.append(batch([(30, 10), (0, 0), (0, 0), (0, 0)]), 400);
        assert_eq!(m.given_up[Class::CriticalAlert], 0);
        assert_eq!(m.given_up[Class::Metrics], 10);
        assert_eq!(m.given_up[Class::NodeEvent], 10);
        assert_eq!(m.given_up[Class::Alert], 10);
        // More critical alerts than fit: the oldest critical alerts go.
        m.append(batch([(5, 10), (0, 0), (0, 0), (0, 0)]), 400);
        assert_eq!(m.given_up[Class::CriticalAlert], 5);
        assert_eq!(m.stored[Class::CriticalAlert].len(), 40);
    }

    #[test]
    fn an_incoming_low_class_record_is_refused_rather_than_older_high_class_ones() {
        let mut m = Model::default();
        m.append(batch([(4, 100), (0, 0), (0, 0), (0, 0)]), 400);
        m.append(batch([(0, 0), (0, 0), (0, 0), (1, 100)]), 400);
        assert_eq!(m.given_up, PerClass::from([0, 0, 0, 1]));
        assert_eq!(m.stored[Class::CriticalAlert].len(), 4);
    }

    /// Against a long random sequence: the budget always holds, and a class
    /// loses records only once every lower class has nothing stored.
    #[test]
    fn random_sequences_keep_the_budget_and_the_order() {
        let mut rng = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let budget = 50_000;
        let mut m = Model::default();
        for _ in 0..2000 {
            let mut b = PerClass::<Vec<u64>>::default();
            for _ in 0..(next() % 8) {
                let class = Class::ALL[(next() % 4) as usize];
                b[class].push(50 + next() % 2000);
            }
            let before = m.given_up;
            m.append(b, budget);
            assert!(total(&usage(&m.stored)) <= budget);
            for (class, before) in before.iter() {
                if m.given_up[class] > *before {
                    for lower in Class::ALL.into_iter().filter(|l| *l > class) {
                        assert!(
                            m.stored[lower].is_empty(),
                            "{class:?} lost records while {lower:?} kept some"
                        );
                    }
                }
            }
        }
        assert!(
            m.given_up[Class::Metrics] > 0,
            "the sequence should have filled the outbox"
        );
    }
}
