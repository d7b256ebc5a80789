//! A set of strings for the `in` operator, tuned for the hot path: short
//! sets are scanned (a few byte compares beat any hash), longer ones use a
//! hash table with a cheap multiplicative hash (the inputs are process names
//! and paths, not attacker-chosen keys that could flood one bucket to any
//! effect beyond slowing one rule).

use std::collections::HashSet;
use std::hash::{BuildHasherDefault, Hasher};

/// Up to this many items a linear scan is faster than hashing the probe.
const LINEAR_MAX: usize = 8;

#[derive(Debug, Clone)]
pub enum StrSet {
    Linear(Box<[Box<str>]>),
    Hashed(HashSet<Box<str>, BuildHasherDefault<FxHasher>>),
}

impl StrSet {
    pub fn new<I: IntoIterator<Item = String>>(items: I) -> StrSet {
        let mut v: Vec<Box<str>> = items.into_iter().map(String::into_boxed_str).collect();
        v.sort();
        v.dedup();
        if v.len() <= LINEAR_MAX {
            StrSet::Linear(v.into_boxed_slice())
        } else {
            StrSet::Hashed(v.into_iter().collect())
        }
    }

    #[inline]
    pub fn contains(&self, s: &str) -> bool {
        match self {
            StrSet::Linear(v) => v.iter().any(|x| **x == *s),
            StrSet::Hashed(h) => h.contains(s),
        }
    }

    pub fn len(&self) -> usize {
        match self {
            StrSet::Linear(v) => v.len(),
            StrSet::Hashed(h) => h.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn iter(&self) -> Box<dyn Iterator<Item = &str> + '_> {
        match self {
            StrSet::Linear(v) => Box::new(v.iter().map(|s| &**s)),
            StrSet::Hashed(h) => Box::new(h.iter().map(|s| &**s)),
        }
    }
}

/// The Fx hash (as used inside rustc): one multiply and rotate per word.
#[derive(Default, Clone, Copy)]
pub struct FxHasher {
    hash: u64,
}

const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl FxHasher {
    #[inline]
    fn add(&mut self, word: u64) {
        self.hash = (self.hash.rotate_left(5) ^ word).wrapping_mul(SEED);
    }
}

impl Hasher for FxHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            self.add(u64::from_le_bytes(c.try_into().expect("8 bytes")));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut buf = [0u8; 8];
            buf[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(buf));
        }
    }

    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }

    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }

    #[inline]
    fn finish(&self) -> u64 {
        self.hash
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_and_large_sets_answer_the_same() {
        let small = StrSet::new(["bash", "sh"].map(String::from));
        assert!(matches!(small, StrSet::Linear(_)));
        assert!(small.contains("sh") && !small.contains("s") && !small.contains("zsh"));
        let many: Vec<String> = (0..100).map(|i| format!("proc{i}")).collect();
        let large = StrSet::new(many.clone());
        assert!(matches!(large, StrSet::Hashed(_)));
        for m in &many {
            assert!(large.contains(m));
        }
        assert!(!large.contains("proc100") && !large.contains(""));
        assert_eq!(large.len(), 100);
    }
}
