//! Several string tests on one value, answered after one field read:
//! the compiled form of `f = a or f in (b, c) or f startswith d or f
//! contains e ...` (and, through De Morgan, of `not f in (..) and not f
//! endswith ..`).
//!
//! Owns only the merged tests of *one* field in *one* `or`: each test keeps
//! its own meaning (an empty `startswith ""` still holds for every value,
//! `in` is still exact), only the field is read once and the substrings
//! are searched in one pass. It never merges tests across fields, across
//! junctions, or with transformers, and it never sees the value's
//! absence or partial paths: the evaluator decides those before asking
//! ([`super::eval`]), exactly as it does for a single test.
//!
//! Why: the shipped attack-matrix rules and Falco's files write a rule's
//! selective test as a dozen comparisons of one field (`fd.name endswith
//! /.aws/credentials or fd.name endswith /.aws/config or ...`, nineteen
//! `proc.cmdline contains` for miner arguments). Each comparison read the
//! field again; the read, not the compare, was most of an event's cost.

use aho_corasick::{AhoCorasick, AhoCorasickKind, MatchKind};

use super::eval::StrTest;
use super::strset::StrSet;

/// From this many substrings on, one Aho-Corasick pass beats a
/// `memmem` search per substring (measured on command lines of 20-80
/// bytes; below it the automaton's start-up costs more than it saves).
const AUTOMATON_MIN: usize = 4;

/// Any of several string tests on one value.
#[derive(Debug, Clone)]
pub(crate) struct StrAny {
    /// `=` and `in`: one set.
    exact: Option<StrSet>,
    prefixes: Box<[Box<str>]>,
    suffixes: Box<[Box<str>]>,
    /// `pmatch` prefixes (normalised as [`StrTest::PMatch`] keeps them).
    under: Box<[Box<str>]>,
    substrings: Substrings,
    /// Everything else (`glob`, `regex`, `icontains`, `!=`, `<`, ...), as is.
    rest: Box<[StrTest]>,
    /// The compiler's guess of how often one of the tests holds (for
    /// ordering only; see `Node::p_true`).
    p_true: f32,
}

#[derive(Debug, Clone)]
enum Substrings {
    Few(Box<[StrTest]>),
    /// Contiguous NFA: a few KiB for dozens of needles, where a DFA would
    /// take tens (the rule set's heap is a budget too).
    Many(Box<AhoCorasick>),
}

impl StrAny {
    /// Merge `tests`, each of which would have been an `or` branch of its
    /// own on the same value; `p_true` is the compiler's guess for the
    /// whole `or`.
    pub(crate) fn new(tests: Vec<StrTest>, p_true: f32) -> StrAny {
        let mut exact: Vec<String> = Vec::new();
        let mut has_exact = false;
        let (mut prefixes, mut suffixes, mut under) = (Vec::new(), Vec::new(), Vec::new());
        let (mut needles, mut finders, mut rest) = (Vec::new(), Vec::new(), Vec::new());
        for t in tests {
            match t {
                StrTest::Eq(v) => {
                    has_exact = true;
                    exact.push(v.into());
                }
                StrTest::In(set) => {
                    has_exact = true;
                    exact.extend(set.iter().map(str::to_string));
                }
                StrTest::StartsWith(v) => prefixes.push(v),
                StrTest::EndsWith(v) => suffixes.push(v),
                StrTest::PMatch(p) => under.extend(p.into_vec()),
                StrTest::Contains(f) => {
                    needles.push(f.needle().to_vec());
                    finders.push(StrTest::Contains(f));
                }
                other => rest.push(other),
            }
        }
        let automaton = (needles.len() >= AUTOMATON_MIN)
            .then(|| {
                AhoCorasick::builder()
                    .kind(Some(AhoCorasickKind::ContiguousNFA))
                    .match_kind(MatchKind::Standard)
                    .build(&needles)
                    .ok()
            })
            .flatten();
        // The builder refuses only automata past its size limits, far
        // beyond a rule's item cap; the searchers then stay as they were.
        let substrings = match automaton {
            Some(ac) => Substrings::Many(Box::new(ac)),
            None => Substrings::Few(finders.into_boxed_slice()),
        };
        StrAny {
            exact: has_exact.then(|| StrSet::new(exact)),
            prefixes: prefixes.into_boxed_slice(),
            suffixes: suffixes.into_boxed_slice(),
            under: under.into_boxed_slice(),
            substrings,
            rest: rest.into_boxed_slice(),
            p_true,
        }
    }

    pub(crate) fn p_true(&self) -> f32 {
        self.p_true
    }

    /// Whether any of the merged tests holds on `s`.
    #[inline]
    pub(crate) fn test(&self, s: &str) -> bool {
        self.exact.as_ref().is_some_and(|set| set.contains(s))
            || self.prefixes.iter().any(|p| s.starts_with(&**p))
            || self.suffixes.iter().any(|p| s.ends_with(&**p))
            || self.under.iter().any(|p| super::eval::path_under(s, p))
            || match &self.substrings {
                Substrings::Few(f) => f.iter().any(|t| t.test(s)),
                Substrings::Many(ac) => ac.is_match(s),
            }
            || self.rest.iter().any(|t| t.test(s))
    }

    /// A rough evaluation cost in the compiler's units (see
    /// `Pred::cost`): one set probe, a compare per four affixes, a
    /// substring pass, and the rest as they were.
    pub(crate) fn cost(&self, rest_cost: impl Fn(&StrTest) -> u32) -> u32 {
        let affixes = self.prefixes.len() + self.suffixes.len() + self.under.len();
        let subs = match &self.substrings {
            Substrings::Few(f) => 3 * f.len() as u32,
            Substrings::Many(_) => 4,
        };
        2 * u32::from(self.exact.is_some())
            + affixes.div_ceil(4) as u32
            + subs
            + self.rest.iter().map(rest_cost).sum::<u32>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn contains(s: &str) -> StrTest {
        StrTest::Contains(Box::new(
            memchr::memmem::Finder::new(s.as_bytes()).into_owned(),
        ))
    }

    fn any(tests: Vec<StrTest>) -> StrAny {
        StrAny::new(tests, 0.5)
    }

    #[test]
    fn a_merged_test_holds_exactly_when_one_of_its_tests_holds() {
        let tests = || {
            vec![
                StrTest::Eq("/etc/shadow".into()),
                StrTest::In(StrSet::new(["a".to_string(), "bb".to_string()])),
                StrTest::StartsWith("/dev/shm/".into()),
                StrTest::EndsWith("/.aws/credentials".into()),
                StrTest::PMatch(Box::new(["/etc/cron.d".into()])),
                contains("--donate-level"),
                StrTest::Ne("x".into()),
            ]
        };
        let merged = any(tests());
        for s in [
            "/etc/shadow",
            "/etc/shadow2",
            "a",
            "bb",
            "b",
            "/dev/shm/x",
            "/dev/shm",
            "/root/.aws/credentials",
            "/etc/cron.d",
            "/etc/cron.daily",
            "/etc/cron.d/job",
            "xmrig --donate-level 1",
            "x",
            "",
        ] {
            let one_by_one = tests().iter().any(|t| t.test(s));
            assert_eq!(merged.test(s), one_by_one, "{s:?}");
        }
    }

    #[test]
    fn many_substrings_share_one_automaton_and_agree_with_memmem() {
        let needles = [
            "--donate-level",
            "--randomx",
            "-a rx/0",
            "cryptonight",
            "stratum+tcp://",
            "nicehash.com",
        ];
        let merged = any(needles.iter().map(|n| contains(n)).collect());
        assert!(matches!(merged.substrings, Substrings::Many(_)));
        for s in [
            "xmrig -o stratum+tcp://pool:3333",
            "miner --randomx",
            "ls -a rx/1",
            "sh -c 'echo cryptonigh'",
            "",
            "NICEHASH.COM",
            "x.nicehash.com:443",
        ] {
            let one_by_one = needles.iter().any(|n| s.contains(n));
            assert_eq!(merged.test(s), one_by_one, "{s:?}");
        }
    }

    #[test]
    fn empty_operands_keep_their_meaning_when_merged() {
        // `startswith ""` and `contains ""` hold for every value; an empty
        // `in ()` for none.
        assert!(any(vec![StrTest::StartsWith("".into())]).test("anything"));
        let empty_needles = (0..AUTOMATON_MIN).map(|_| contains("")).collect();
        assert!(any(empty_needles).test(""));
        let empty_set = any(vec![
            StrTest::In(StrSet::new(Vec::<String>::new())),
            StrTest::EndsWith("/x".into()),
        ]);
        assert!(!empty_set.test(""));
        assert!(!empty_set.test("anything"));
        assert!(empty_set.test("/a/x"));
    }
}
