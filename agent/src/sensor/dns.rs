//! The host names the node itself resolved, for `fd.sip.name` and the
//! other `*.name` fields: a bounded cache from address to names, fed by the
//! DNS answers the kernel hands over (`EA_EVT_DNS` records: what a UDP
//! socket received from port 53, or what a DNS server on the node sent from
//! its own).
//!
//! Owns the reading of a DNS message (RFC 1035 section 4; only what is
//! needed: the question name, A, AAAA and CNAME answers) and the cache.
//! Never sends a query: it learns only what processes on the node were
//! told, so a rule about `kubernetes.default.svc.cluster.local` matches
//! the address the node's pods were given, which the host's own resolver
//! could not look up. Falco resolves the names in its rules itself
//! instead; that needs the host's resolver to know them and sends queries
//! for every listed miner pool from the node.
//!
//! Messages come from any process and any server, so reading is defensive:
//! every offset is checked, compression pointers are followed a bounded
//! number of times, and a message cut short (the kernel copies at most
//! [`super::abi::DNS_MAX`] bytes) still yields the records before the cut.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use crate::event::HostNames;

/// Addresses the cache holds at most. A node's processes rarely talk to
/// more distinct resolved addresses within [`MAX_KEEP_NS`]; at about 150
/// bytes an entry the full cache is ~300 KiB.
pub(crate) const CAPACITY: usize = 2048;

/// Names kept per address, most recent first: several names may share one
/// address (a CNAME chain, virtual hosting).
pub(crate) const NAMES_PER_ADDRESS: usize = 4;

/// An answer is kept at least this long, whatever its TTL: programs keep
/// answers longer than their TTL (the JVM, nscd, connection pools), and a
/// connection made from such a cached answer should still be named.
pub(crate) const MIN_KEEP_NS: u64 = 10 * 60 * 1_000_000_000;

/// ... and at most this long, so that an address given to another site
/// later is not named after the old one forever.
pub(crate) const MAX_KEEP_NS: u64 = 24 * 3600 * 1_000_000_000;

/// Compression pointers followed in one name; a loop ends here.
const MAX_JUMPS: usize = 16;
/// RFC 1035: a name is at most 255 bytes on the wire.
const MAX_NAME: usize = 255;

const TYPE_A: u16 = 1;
const TYPE_CNAME: u16 = 5;
const TYPE_AAAA: u16 = 28;
const CLASS_IN: u16 = 1;

/// What one answer message says.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Answer {
    /// Every name of the question and its CNAME chain, the question first,
    /// lower case, without the trailing dot.
    pub(crate) names: Vec<String>,
    /// Each address with its TTL in seconds.
    pub(crate) addresses: Vec<(IpAddr, u32)>,
}

/// Read an answer message. `None` if it is no answer (not a response, an
/// error code, no question); records after a cut are missing.
pub(crate) fn parse(msg: &[u8]) -> Option<Answer> {
    let be16 =
        |at: usize| -> Option<u16> { Some(u16::from_be_bytes([*msg.get(at)?, *msg.get(at + 1)?])) };
    let flags = be16(2)?;
    let (qdcount, ancount) = (be16(4)?, be16(6)?);
    if flags & 0x8000 == 0 || flags & 0x000f != 0 || qdcount == 0 {
        return None;
    }
    let mut answer = Answer::default();
    let mut at = 12;
    // The question (only the first: resolvers ask one at a time).
    let (qname, next) = read_name(msg, at)?;
    answer.names.push(qname);
    at = next + 4;
    for _ in 1..qdcount {
        at = read_name(msg, at)?.1 + 4;
    }
    for _ in 0..ancount {
        let Some((owner, next)) = read_name(msg, at) else {
            break;
        };
        let (Some(ty), Some(class), Some(ttl_hi), Some(ttl_lo), Some(len)) = (
            be16(next),
            be16(next + 2),
            be16(next + 4),
            be16(next + 6),
            be16(next + 8),
        ) else {
            break;
        };
        let data = next + 10;
        let end = data + usize::from(len);
        if end > msg.len() {
            break;
        }
        let ttl = u32::from(ttl_hi) << 16 | u32::from(ttl_lo);
        // Only records of the chain: an answer may carry others.
        let in_chain = answer.names.contains(&owner);
        match (ty, class, len) {
            (TYPE_A, CLASS_IN, 4) if in_chain => {
                let b = &msg[data..end];
                let ip = Ipv4Addr::new(b[0], b[1], b[2], b[3]);
                answer.addresses.push((IpAddr::V4(ip), ttl));
            }
            (TYPE_AAAA, CLASS_IN, 16) if in_chain => {
                let mut b = [0u8; 16];
                b.copy_from_slice(&msg[data..end]);
                answer.addresses.push((IpAddr::V6(Ipv6Addr::from(b)), ttl));
            }
            (TYPE_CNAME, CLASS_IN, _) if in_chain => {
                if let Some((target, _)) = read_name(msg, data)
                    && !answer.names.contains(&target)
                {
                    answer.names.push(target);
                }
            }
            _ => {}
        }
        at = end;
    }
    Some(answer)
}

/// The name at `at`, lower case, and the offset after it where it sits
/// (a compression pointer ends it in place).
fn read_name(msg: &[u8], mut at: usize) -> Option<(String, usize)> {
    let mut name = String::new();
    let mut after = None;
    let mut jumps = 0;
    loop {
        let len = *msg.get(at)?;
        match len & 0xc0 {
            0x00 if len == 0 => {
                return Some((name, after.unwrap_or(at + 1)));
            }
            0x00 => {
                let label = msg.get(at + 1..at + 1 + usize::from(len))?;
                if name.len() + label.len() + 1 > MAX_NAME {
                    return None;
                }
                if !name.is_empty() {
                    name.push('.');
                }
                for &c in label {
                    // Host names are letters, digits, '-' and '_'; anything
                    // else is kept visible rather than trusted as text.
                    if c.is_ascii_graphic() && c != b'.' {
                        name.push(char::from(c.to_ascii_lowercase()));
                    } else {
                        name.push('?');
                    }
                }
                at += 1 + usize::from(len);
            }
            0xc0 => {
                jumps += 1;
                if jumps > MAX_JUMPS {
                    return None;
                }
                let to = usize::from(len & 0x3f) << 8 | usize::from(*msg.get(at + 1)?);
                after.get_or_insert(at + 2);
                at = to;
            }
            // 0x40 and 0x80 are reserved label types.
            _ => return None,
        }
    }
}

struct Entry {
    names: HostNames,
    expires_ns: u64,
    /// Matches the `order` item that last touched this entry.
    seq: u64,
}

/// Address -> the names the node resolved to it. Entries leave when they
/// expire (checked on lookup) or, when the cache is full, the least
/// recently learned first.
#[derive(Default)]
pub(crate) struct DnsCache {
    map: HashMap<IpAddr, Entry>,
    /// Addresses in the order they were learned; an item whose `seq` no
    /// longer matches its entry is stale and skipped.
    order: VecDeque<(IpAddr, u64)>,
    seq: u64,
    /// Answers read (a metric: how much the cache has to go on).
    pub(crate) answers: u64,
}

impl DnsCache {
    /// Learn from an answer message seen at `now_ns` (any monotonic clock,
    /// the same as [`DnsCache::lookup`] is given).
    pub(crate) fn learn(&mut self, msg: &[u8], now_ns: u64) {
        let Some(answer) = parse(msg) else {
            return;
        };
        self.answers += 1;
        for (ip, ttl) in &answer.addresses {
            let keep = (u64::from(*ttl) * 1_000_000_000).clamp(MIN_KEEP_NS, MAX_KEEP_NS);
            self.insert(*ip, &answer.names, now_ns.saturating_add(keep));
        }
    }

    fn insert(&mut self, ip: IpAddr, names: &[String], expires_ns: u64) {
        self.seq += 1;
        let seq = self.seq;
        let merged: HostNames = match self.map.get(&ip) {
            // The same names again (the common case): keep the allocation.
            Some(e) if names.iter().all(|n| e.names.iter().any(|m| **m == **n)) => e.names.clone(),
            old => names
                .iter()
                .map(|n| Arc::<str>::from(n.as_str()))
                .chain(
                    old.into_iter()
                        .flat_map(|e| e.names.iter().cloned())
                        .filter(|m| !names.iter().any(|n| **n == **m)),
                )
                .take(NAMES_PER_ADDRESS)
                .collect(),
        };
        let expires_ns = self
            .map
            .get(&ip)
            .map_or(expires_ns, |e| e.expires_ns.max(expires_ns));
        self.map.insert(
            ip,
            Entry {
                names: merged,
                expires_ns,
                seq,
            },
        );
        self.order.push_back((ip, seq));
        while self.map.len() > CAPACITY {
            let Some((old, s)) = self.order.pop_front() else {
                break;
            };
            if self.map.get(&old).is_some_and(|e| e.seq == s) {
                self.map.remove(&old);
            }
        }
        // Refreshing one address over and over leaves stale items behind.
        if self.order.len() > 2 * CAPACITY {
            let map = &self.map;
            self.order
                .retain(|(ip, s)| map.get(ip).is_some_and(|e| e.seq == *s));
        }
    }

    /// The names the node resolved to `ip`, if that was within their keep time.
    pub(crate) fn lookup(&self, ip: IpAddr, now_ns: u64) -> Option<HostNames> {
        if self.map.is_empty() {
            return None;
        }
        self.map
            .get(&ip)
            .filter(|e| e.expires_ns > now_ns)
            .map(|e| e.names.clone())
    }

    /// Addresses held.
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A DNS answer message: question `qname`, then `answers` as (owner,
    /// record) with compression pointers to the question where the owner is
    /// the question name.
    pub(crate) fn answer(qname: &str, answers: &[(&str, Rr)]) -> Vec<u8> {
        let mut m = vec![
            0x12,
            0x34,
            0x81,
            0x80,
            0,
            1,
            0,
            answers.len() as u8,
            0,
            0,
            0,
            0,
        ];
        encode(&mut m, qname);
        m.extend_from_slice(&[0, 1, 0, 1]);
        for (owner, rr) in answers {
            if *owner == qname {
                m.extend_from_slice(&[0xc0, 12]);
            } else {
                encode(&mut m, owner);
            }
            let (ty, data) = match rr {
                Rr::A(ip) => (TYPE_A, ip.octets().to_vec()),
                Rr::Aaaa(ip) => (TYPE_AAAA, ip.octets().to_vec()),
                Rr::Cname(t) => {
                    let mut d = Vec::new();
                    encode(&mut d, t);
                    (TYPE_CNAME, d)
                }
            };
            m.extend_from_slice(&ty.to_be_bytes());
            m.extend_from_slice(&[0, 1, 0, 0, 0x0e, 0x10]); // IN, TTL 3600
            m.extend_from_slice(&(data.len() as u16).to_be_bytes());
            m.extend_from_slice(&data);
        }
        m
    }

    pub(crate) enum Rr {
        A(Ipv4Addr),
        Aaaa(Ipv6Addr),
        Cname(&'static str),
    }

    fn encode(m: &mut Vec<u8>, name: &str) {
        for label in name.split('.') {
            m.push(label.len() as u8);
            m.extend_from_slice(label.as_bytes());
        }
        m.push(0);
    }

    const NOW: u64 = 1_000_000_000_000;

    fn v4(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn names(c: &DnsCache, ip: &str) -> Vec<String> {
        c.lookup(v4(ip), NOW)
            .map(|n| n.iter().map(|s| s.to_string()).collect())
            .unwrap_or_default()
    }

    #[test]
    fn an_answer_names_each_address_after_the_question_and_its_cname_chain() {
        let msg = answer(
            "Pool.Miner.Example",
            &[
                ("Pool.Miner.Example", Rr::Cname("edge.cdn.example")),
                ("edge.cdn.example", Rr::A(Ipv4Addr::new(127, 77, 0, 1))),
                ("edge.cdn.example", Rr::Aaaa(Ipv6Addr::LOCALHOST)),
                // Not part of the chain: an additional-looking record.
                ("other.example", Rr::A(Ipv4Addr::new(127, 77, 0, 9))),
            ],
        );
        let a = parse(&msg).unwrap();
        assert_eq!(a.names, ["pool.miner.example", "edge.cdn.example"]);
        assert_eq!(
            a.addresses,
            [
                (v4("127.77.0.1"), 3600),
                (IpAddr::V6(Ipv6Addr::LOCALHOST), 3600)
            ]
        );
        let mut c = DnsCache::default();
        c.learn(&msg, NOW);
        assert_eq!(
            names(&c, "127.77.0.1"),
            ["pool.miner.example", "edge.cdn.example"]
        );
        assert!(c.lookup(v4("127.77.0.9"), NOW).is_none());
        assert_eq!(c.answers, 1);
    }

    #[test]
    fn queries_errors_and_hostile_messages_teach_nothing_and_never_panic() {
        let ok = answer("a.example", &[("a.example", Rr::A(Ipv4Addr::LOCALHOST))]);
        let mut query = ok.clone();
        query[2] &= 0x7f;
        assert_eq!(parse(&query), None, "a query");
        let mut nxdomain = ok.clone();
        nxdomain[3] |= 3;
        assert_eq!(parse(&nxdomain), None, "an error answer");
        // A compression pointer to itself, in the question.
        let mut looped = ok[..12].to_vec();
        looped.extend_from_slice(&[0xc0, 12]);
        assert_eq!(parse(&looped), None);
        // Every prefix of a good message: never a panic, and a cut record is
        // simply missing.
        for n in 0..ok.len() {
            let a = parse(&ok[..n]);
            assert!(a.is_none_or(|a| a.addresses.is_empty()), "cut at {n}");
        }
        assert_eq!(parse(&ok).unwrap().addresses.len(), 1);
        // Arbitrary bytes.
        let mut x: u32 = 0x9e37_79b9;
        for _ in 0..2000 {
            let m: Vec<u8> = (0..64)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    x as u8
                })
                .collect();
            let _ = parse(&m);
        }
    }

    #[test]
    fn a_name_keeps_its_place_until_it_expires_or_the_cache_is_full() {
        let mut c = DnsCache::default();
        // TTL 3600 s: kept 3600 s; a TTL below MIN_KEEP is kept MIN_KEEP.
        c.learn(
            &answer(
                "a.example",
                &[("a.example", Rr::A(Ipv4Addr::new(127, 1, 0, 1)))],
            ),
            NOW,
        );
        assert!(
            c.lookup(v4("127.1.0.1"), NOW + 3599 * 1_000_000_000)
                .is_some()
        );
        assert!(
            c.lookup(v4("127.1.0.1"), NOW + 3601 * 1_000_000_000)
                .is_none()
        );
        // A second name for the same address comes first; the first stays.
        c.learn(
            &answer(
                "b.example",
                &[("b.example", Rr::A(Ipv4Addr::new(127, 1, 0, 1)))],
            ),
            NOW,
        );
        assert_eq!(names(&c, "127.1.0.1"), ["b.example", "a.example"]);
        // Full: the least recently learned go first.
        for i in 0..CAPACITY as u32 + 10 {
            let ip = Ipv4Addr::from(0x7f02_0000 + i);
            c.insert(IpAddr::V4(ip), &["x.example".into()], NOW + MIN_KEEP_NS);
        }
        assert_eq!(c.len(), CAPACITY);
        assert!(c.lookup(v4("127.1.0.1"), NOW).is_none(), "the oldest left");
        assert!(c.lookup(v4("127.2.0.10"), NOW).is_some());
        // Refreshing one address forever does not grow the order queue.
        for _ in 0..5 * CAPACITY {
            c.insert(v4("127.2.0.10"), &["x.example".into()], NOW + MIN_KEEP_NS);
        }
        assert!(c.order.len() <= 2 * CAPACITY);
        assert_eq!(c.len(), CAPACITY);
    }
}
