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
pub(crate) enum StrSet {
    Linear(Box<[Box<str>]>),
    Hashed {
        set: HashSet<Box<str>, BuildHasherDefault<FxHasher>>,
        /// Bit `n` set: an item is `n` bytes long (bit 63: 63 or more).
        /// Most probes (process names, paths) have a length no item has,
        /// and are answered without hashing.
        lens: u64,
    },
}

fn len_bit(s: &str) -> u64 {
    1u64 << s.len().min(63)
}

impl StrSet {
    pub(crate) fn new<I: IntoIterator<Item = String>>(items: I) -> StrSet {
        let mut v: Vec<Box<str>> = items.into_iter().map(String::into_boxed_str).collect();
        v.sort();
        v.dedup();
        if v.len() <= LINEAR_MAX {
            StrSet::Linear(v.into_boxed_slice())
        } else {
            StrSet::Hashed {
                lens: v.iter().fold(0, |m, s| m | len_bit(s)),
                set: v.into_iter().collect(),
            }
        }
    }

    #[inline]
    pub(crate) fn contains(&self, s: &str) -> bool {
        match self {
            StrSet::Linear(v) => v.iter().any(|x| **x == *s),
            StrSet::Hashed { set, lens } => lens & len_bit(s) != 0 && set.contains(s),
        }
    }

    /// The items (for merging sets; never on the hot path).
    pub(crate) fn iter(&self) -> Box<dyn Iterator<Item = &str> + '_> {
        match self {
            StrSet::Linear(v) => Box::new(v.iter().map(|s| &**s)),
            StrSet::Hashed { set, .. } => Box::new(set.iter().map(|s| &**s)),
        }
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        match self {
            StrSet::Linear(v) => v.len(),
            StrSet::Hashed { set, .. } => set.len(),
        }
    }
}

/// The Fx hash (as used inside rustc): one multiply and rotate per word.
#[derive(Default, Clone, Copy)]
pub(crate) struct FxHasher {
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
        assert!(matches!(large, StrSet::Hashed { .. }));
        for m in &many {
            assert!(large.contains(m));
        }
        assert!(!large.contains("proc100") && !large.contains(""));
        assert!(!large.contains("proc1 ") && !large.contains("proc"));
        assert_eq!(large.len(), 100);
        // Items of 63 bytes and more share the last length bit.
        let long: Vec<String> = (0..9).map(|i| format!("{i}{}", "x".repeat(70))).collect();
        let set = StrSet::new(long.clone());
        assert!(set.contains(&long[3]));
        assert!(!set.contains(&"x".repeat(80)) && !set.contains(&"x".repeat(71)));
    }
}
