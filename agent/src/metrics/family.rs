//! One collection's worth of samples, grouped into metric families the way
//! the Prometheus exposition format groups them: a name, a help line, a type,
//! label names, and samples that carry label values and a value.
//!
//! Owns the in-memory shape only; rendering lives in `exposition` (text) and
//! `batch` (the outbox JSON). Never reads files.

use std::borrow::Cow;

/// The Prometheus metric type. Only the two node_exporter uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only ever goes up (resets when the source restarts).
    Counter,
    /// Goes up and down.
    Gauge,
}

impl Kind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
        }
    }
}

/// One sample: label values in the order of the family's label names.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Sample {
    pub(crate) labels: Vec<String>,
    pub(crate) value: f64,
}

/// All samples of one metric name.
#[derive(Debug, Clone, PartialEq)]
pub struct Family {
    pub(crate) name: Cow<'static, str>,
    pub(crate) help: Cow<'static, str>,
    pub(crate) kind: Kind,
    pub(crate) label_names: Vec<Cow<'static, str>>,
    pub(crate) samples: Vec<Sample>,
}

impl Family {
    /// Add a sample. `labels` must match the family's label names in number;
    /// a mismatch is a programming error caught in debug builds and dropped
    /// in release builds (an exposition with a malformed line would make
    /// Prometheus reject the whole scrape).
    pub fn push(&mut self, labels: &[&str], value: f64) {
        debug_assert_eq!(
            labels.len(),
            self.label_names.len(),
            "{}: label count",
            self.name
        );
        if labels.len() != self.label_names.len() {
            return;
        }
        self.samples.push(Sample {
            labels: labels.iter().map(|l| (*l).to_string()).collect(),
            value,
        });
    }
}

/// The families of one collection, in the order collectors produced them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    pub(crate) families: Vec<Family>,
}

impl Snapshot {
    pub fn new() -> Self {
        Self::default()
    }

    /// The family `name`, created with `help`, `kind` and `label_names` if it
    /// does not exist yet. Families are few (about a hundred), so a linear
    /// search from the end (where the current collector is adding) is cheaper
    /// than a map.
    pub fn family(
        &mut self,
        name: impl Into<Cow<'static, str>>,
        help: impl Into<Cow<'static, str>>,
        kind: Kind,
        label_names: &[&'static str],
    ) -> &mut Family {
        self.family_with(
            name,
            help,
            kind,
            label_names.iter().map(|l| Cow::Borrowed(*l)).collect(),
        )
    }

    /// [`family`](Self::family) with label names known only at run time.
    pub(crate) fn family_with(
        &mut self,
        name: impl Into<Cow<'static, str>>,
        help: impl Into<Cow<'static, str>>,
        kind: Kind,
        label_names: Vec<Cow<'static, str>>,
    ) -> &mut Family {
        let name = name.into();
        let found = self.families.iter().rposition(|f| f.name == name);
        let index = match found {
            Some(i) => i,
            None => {
                self.families.push(Family {
                    name,
                    help: help.into(),
                    kind,
                    label_names,
                    samples: Vec::new(),
                });
                self.families.len() - 1
            }
        };
        &mut self.families[index]
    }

    /// A family with one unlabelled sample.
    pub fn single(
        &mut self,
        name: impl Into<Cow<'static, str>>,
        help: impl Into<Cow<'static, str>>,
        kind: Kind,
        value: f64,
    ) {
        self.family(name, help, kind, &[]).push(&[], value);
    }

    /// Move every family of `other` to the end of this snapshot.
    pub(crate) fn append(&mut self, other: Snapshot) {
        for family in other.families {
            match self.families.iter_mut().find(|f| f.name == family.name) {
                Some(existing) => existing.samples.extend(family.samples),
                None => self.families.push(family),
            }
        }
    }

    /// Number of samples (series) in all families.
    pub fn series(&self) -> usize {
        self.families.iter().map(|f| f.samples.len()).sum()
    }

    #[cfg(test)]
    pub(crate) fn get(&self, name: &str) -> Option<&Family> {
        self.families.iter().find(|f| f.name == name)
    }

    /// The value of the sample of `name` whose labels equal `labels`.
    #[cfg(test)]
    pub(crate) fn value(&self, name: &str, labels: &[&str]) -> Option<f64> {
        self.get(name)?
            .samples
            .iter()
            .find(|s| {
                s.labels
                    .iter()
                    .map(String::as_str)
                    .eq(labels.iter().copied())
            })
            .map(|s| s.value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_of_one_name_stay_in_one_family() {
        let mut s = Snapshot::new();
        s.family("a", "A.", Kind::Gauge, &["x"]).push(&["1"], 1.0);
        s.single("b", "B.", Kind::Counter, 2.0);
        s.family("a", "A.", Kind::Gauge, &["x"]).push(&["2"], 3.0);
        assert_eq!(s.families.len(), 2);
        assert_eq!(s.series(), 3);
        assert_eq!(s.value("a", &["2"]), Some(3.0));
    }
}
