//! The MQTT session as a state machine with no I/O (rumqttc's `state.rs`
//! is the model): it decides when to fetch from the outbox and how much,
//! maps rumqttc's packet ids to outbox records, says which record a PUBACK
//! acknowledges, and how long to wait before reconnecting. The task around
//! it (`uplink/mod.rs`) does the I/O.
//!
//! How packet ids are learned: rumqttc's `publish()` returns none; each
//! publish shows up later as `Outgoing::Publish(pkid)`, in the order the
//! publishes were queued. So the session keeps the queued publishes in a
//! FIFO and pairs each `Outgoing::Publish` with the oldest one. The pairing
//! is only sound while nothing else queues publishes and nothing queued
//! survives a connection: the task is the only publisher, and after every
//! lost connection it waits until the driver has emptied rumqttc's queues
//! before reconnecting (see `driver.rs`). If the pairing ever breaks (a
//! packet id with nothing queued), the session reports it, the connection
//! is dropped, and nothing is deleted: every record is then sent again.
//!
//! Why nothing else is needed after a reconnect: records leave the outbox
//! only on PUBACK, so everything unacknowledged is still in the outbox; on
//! every CONNACK the session forgets its cursors and fetches from the
//! front of the outbox again. That republishes every record that was in
//! flight, whether or not the broker kept a session (rumqttc drops its
//! own copies when the broker did not).

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use crate::outbox::{Cursors, Fetched, RecordKey, StoredRecord};

use super::backoff::Backoff;

/// What a queued publish carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Slot {
    /// An outbox record.
    Record(RecordKey),
    /// The retained `/state` message.
    State,
}

/// A fetch the task should make.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FetchRequest {
    /// The connection it is for; a reply for an older one is ignored.
    pub(crate) epoch: u64,
    pub(crate) after: Cursors,
    pub(crate) limit: usize,
    /// About this much payload at most (at least one record).
    pub(crate) max_bytes: usize,
}

/// Payload bytes fetched ahead of the window at most: a few fetches of
/// alerts, or a handful of large metrics batches.
pub(crate) const READY_BYTES: usize = 4 * 1024 * 1024;

/// The pairing of packet ids broke: drop the connection, send everything
/// again. Never deletes anything.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum SessionError {
    #[error("rumqttc reported packet id {0} for a publish the uplink did not queue")]
    UnexpectedPublish(u16),
    #[error("rumqttc reported packet id {pkid} still in flight for another publish")]
    PacketIdInUse { pkid: u16 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Link {
    /// Not connected; since when.
    Down(Instant),
    /// Connected on connection `epoch`, since when.
    Up { since: Instant, epoch: u64 },
}

/// Counters for `status`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Stats {
    pub(crate) published: u64,
    pub(crate) acked: u64,
    /// Connections lost or refused (each is followed by a retry).
    pub(crate) reconnects: u64,
    /// CONNACKs received.
    pub(crate) connects: u64,
    pub(crate) last_ack: Option<Instant>,
}

pub(crate) struct Session {
    window: usize,
    link: Link,
    epoch: u64,
    cursors: Cursors,
    /// A fetch is outstanding for this epoch.
    fetching: bool,
    /// `appended_total` of the outbox when a fetch came back short: nothing
    /// newer existed then.
    exhausted_at: Option<u64>,
    /// Fetched, not yet published: the window refills from here as each
    /// PUBACK frees a slot, without waiting for the outbox (fetches run
    /// ahead, so their latency — a commit on slow flash — is hidden, and
    /// the link never idles waiting for half a window to free up).
    ready: VecDeque<StoredRecord>,
    ready_bytes: usize,
    queued: VecDeque<Slot>,
    inflight: HashMap<u16, Slot>,
    /// A publish rumqttc holds back because its packet id is still in
    /// flight (a broker acking out of order): `Outgoing::AwaitAck`.
    collided: Option<(u16, Slot)>,
    /// A PUBACK arrived on this connection (the link works).
    acked_this_connection: bool,
    backoff: Backoff,
    pub(crate) stats: Stats,
}

impl Session {
    pub(crate) fn new(window: u16, backoff: Backoff, now: Instant) -> Session {
        Session {
            window: usize::from(window.max(1)),
            link: Link::Down(now),
            epoch: 0,
            cursors: Cursors::default(),
            fetching: false,
            exhausted_at: None,
            ready: VecDeque::new(),
            ready_bytes: 0,
            queued: VecDeque::new(),
            inflight: HashMap::new(),
            collided: None,
            acked_this_connection: false,
            backoff,
            stats: Stats::default(),
        }
    }

    pub(crate) fn is_up(&self) -> bool {
        matches!(self.link, Link::Up { .. })
    }

    /// Publishes queued or awaiting PUBACK.
    pub(crate) fn in_flight(&self) -> usize {
        self.queued.len() + self.inflight.len() + usize::from(self.collided.is_some())
    }

    fn room(&self) -> usize {
        self.window.saturating_sub(self.in_flight())
    }

    /// CONNACK: a new connection. Everything unacknowledged is fetched
    /// again from the front of the outbox.
    pub(crate) fn connected(&mut self, now: Instant) -> u64 {
        self.epoch += 1;
        self.link = Link::Up {
            since: now,
            epoch: self.epoch,
        };
        self.reset();
        self.acked_this_connection = false;
        self.stats.connects += 1;
        self.epoch
    }

    /// The connection is gone (or never came up). Returns how long to wait
    /// before the next attempt.
    pub(crate) fn lost(&mut self, now: Instant) -> Duration {
        if self.acked_this_connection {
            self.backoff.reset();
        }
        self.acked_this_connection = false;
        if self.is_up() {
            self.link = Link::Down(now);
        }
        self.epoch += 1;
        self.reset();
        self.stats.reconnects += 1;
        self.backoff.next_delay()
    }

    fn reset(&mut self) {
        self.cursors = Cursors::default();
        self.fetching = false;
        self.exhausted_at = None;
        self.ready.clear();
        self.ready_bytes = 0;
        self.queued.clear();
        self.inflight.clear();
        self.collided = None;
    }

    /// Records fetched ahead at most: two windows.
    fn ready_max(&self) -> usize {
        (self.window * 2).max(64)
    }

    /// The fetch to make now, if any: connected, none outstanding, the
    /// outbox may hold something not fetched yet, and less than a window
    /// is ready to publish.
    pub(crate) fn want_fetch(&mut self, appended_total: u64) -> Option<FetchRequest> {
        let Link::Up { epoch, .. } = self.link else {
            return None;
        };
        if self.fetching || self.exhausted_at.is_some_and(|at| appended_total <= at) {
            return None;
        }
        if self.ready.len() >= self.ready_max() / 2 || self.ready_bytes >= READY_BYTES / 2 {
            return None;
        }
        self.fetching = true;
        Some(FetchRequest {
            epoch,
            after: self.cursors,
            limit: self.ready_max() - self.ready.len(),
            max_bytes: READY_BYTES - self.ready_bytes,
        })
    }

    /// A fetch came back; its records join the ready queue. Returns false
    /// (and keeps nothing) for a stale epoch.
    pub(crate) fn fetched(&mut self, request: &FetchRequest, f: Fetched) -> bool {
        if !matches!(self.link, Link::Up { epoch, .. } if epoch == request.epoch) {
            return false;
        }
        self.fetching = false;
        self.cursors = f.cursors;
        self.exhausted_at = (!f.more).then_some(f.appended_total);
        for r in f.records {
            self.ready_bytes += r.payload.len();
            self.ready.push_back(r);
        }
        true
    }

    /// A fetch failed: try again on the next occasion.
    pub(crate) fn fetch_failed(&mut self, request: &FetchRequest) {
        if matches!(self.link, Link::Up { epoch, .. } if epoch == request.epoch) {
            self.fetching = false;
        }
    }

    /// The next record to publish, if the window has room: the task hands
    /// it to rumqttc at once (it is queued here already).
    pub(crate) fn next_publish(&mut self) -> Option<StoredRecord> {
        if !self.is_up() || self.room() == 0 {
            return None;
        }
        let r = self.ready.pop_front()?;
        self.ready_bytes -= r.payload.len();
        self.queue(Slot::Record(r.key));
        Some(r)
    }

    /// The task is about to hand this publish to rumqttc.
    pub(crate) fn queue(&mut self, slot: Slot) {
        self.queued.push_back(slot);
        if matches!(slot, Slot::Record(_)) {
            self.stats.published += 1;
        }
    }

    /// `Outgoing::Publish(pkid)`: the oldest queued publish got `pkid`.
    pub(crate) fn outgoing_publish(&mut self, pkid: u16) -> Result<(), SessionError> {
        if let Some((p, slot)) = self.collided
            && p == pkid
        {
            // The held-back publish went out after the old one was acked.
            self.collided = None;
            return self.in_flight_insert(pkid, slot);
        }
        let slot = self
            .queued
            .pop_front()
            .ok_or(SessionError::UnexpectedPublish(pkid))?;
        self.in_flight_insert(pkid, slot)
    }

    fn in_flight_insert(&mut self, pkid: u16, slot: Slot) -> Result<(), SessionError> {
        if self.inflight.insert(pkid, slot).is_some() {
            return Err(SessionError::PacketIdInUse { pkid });
        }
        Ok(())
    }

    /// `Outgoing::AwaitAck(pkid)`: the oldest queued publish got `pkid` but
    /// waits until the publish holding it is acknowledged.
    pub(crate) fn await_ack(&mut self, pkid: u16) -> Result<(), SessionError> {
        let slot = self
            .queued
            .pop_front()
            .ok_or(SessionError::UnexpectedPublish(pkid))?;
        self.collided = Some((pkid, slot));
        Ok(())
    }

    /// PUBACK for `pkid`: what it acknowledges (`None` for an id not in
    /// flight, e.g. from before a reconnect).
    pub(crate) fn puback(&mut self, pkid: u16, now: Instant) -> Option<Slot> {
        let slot = self.inflight.remove(&pkid)?;
        self.acked_this_connection = true;
        self.stats.last_ack = Some(now);
        if matches!(slot, Slot::Record(_)) {
            self.stats.acked += 1;
        }
        Some(slot)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::Class;

    fn key(class: Class, seq: u64) -> RecordKey {
        RecordKey { class, seq }
    }

    fn session(window: u16) -> (Session, Instant) {
        let now = Instant::now();
        (
            Session::new(
                window,
                Backoff::new(Duration::from_secs(1), Duration::from_secs(60), 7),
                now,
            ),
            now,
        )
    }

    fn record(k: RecordKey) -> StoredRecord {
        StoredRecord {
            key: k,
            topic: crate::report::Topic::Alerts,
            created_ms: 0,
            payload: vec![b'x'; 10],
        }
    }

    /// Fetch `keys` (all there is) and publish what the window takes, as
    /// the task would; returns the keys published.
    fn deliver(
        s: &mut Session,
        req: &FetchRequest,
        keys: &[RecordKey],
        total: u64,
    ) -> Vec<RecordKey> {
        let mut cursors = req.after;
        for k in keys {
            cursors[k.class] = Some(k.seq);
        }
        let f = Fetched {
            records: keys.iter().copied().map(record).collect(),
            cursors,
            more: false,
            appended_total: total,
        };
        assert!(s.fetched(req, f));
        std::iter::from_fn(|| s.next_publish().map(|r| r.key)).collect()
    }

    #[test]
    fn nothing_is_fetched_while_disconnected() {
        let (mut s, _) = session(10);
        assert_eq!(s.want_fetch(5), None);
    }

    #[test]
    fn packet_ids_pair_with_publishes_in_queue_order_and_pubacks_name_the_record() {
        let (mut s, now) = session(10);
        s.connected(now);
        s.queue(Slot::State);
        let req = s.want_fetch(2).unwrap();
        assert_eq!(req.limit, 64, "fetches run ahead of the window");
        deliver(
            &mut s,
            &req,
            &[key(Class::CriticalAlert, 7), key(Class::Metrics, 3)],
            2,
        );
        s.outgoing_publish(1).unwrap();
        s.outgoing_publish(2).unwrap();
        s.outgoing_publish(3).unwrap();
        assert_eq!(s.puback(3, now), Some(Slot::Record(key(Class::Metrics, 3))));
        assert_eq!(s.puback(1, now), Some(Slot::State));
        assert_eq!(
            s.puback(2, now),
            Some(Slot::Record(key(Class::CriticalAlert, 7)))
        );
        assert_eq!(s.puback(2, now), None, "a second PUBACK deletes nothing");
        assert_eq!(s.stats.acked, 2);
    }

    #[test]
    fn a_packet_id_nobody_queued_is_an_error_not_a_deletion() {
        let (mut s, now) = session(10);
        s.connected(now);
        assert_eq!(
            s.outgoing_publish(4),
            Err(SessionError::UnexpectedPublish(4))
        );
        s.queue(Slot::State);
        s.queue(Slot::State);
        s.outgoing_publish(4).unwrap();
        assert_eq!(
            s.outgoing_publish(4),
            Err(SessionError::PacketIdInUse { pkid: 4 })
        );
    }

    #[test]
    fn a_reconnect_fetches_everything_unacknowledged_from_the_front_again() {
        let (mut s, now) = session(10);
        s.connected(now);
        let req = s.want_fetch(3).unwrap();
        deliver(
            &mut s,
            &req,
            &[
                key(Class::Alert, 1),
                key(Class::Alert, 2),
                key(Class::Alert, 3),
            ],
            3,
        );
        for p in 1..=3 {
            s.outgoing_publish(p).unwrap();
        }
        s.puback(1, now);
        s.lost(now);
        assert_eq!(s.in_flight(), 0);
        assert_eq!(s.want_fetch(3), None, "not while down");
        s.connected(now);
        let req = s.want_fetch(3).unwrap();
        assert_eq!(
            req.after,
            Cursors::default(),
            "from the front: 2 and 3 go again"
        );
        // A PUBACK from the old connection's packet ids acknowledges nothing.
        assert_eq!(s.puback(2, now), None);
    }

    #[test]
    fn a_fetch_reply_from_an_old_connection_is_ignored() {
        let (mut s, now) = session(10);
        s.connected(now);
        let old = s.want_fetch(1).unwrap();
        s.lost(now);
        s.connected(now);
        let stale = Fetched {
            records: vec![record(key(Class::Alert, 9))],
            cursors: Cursors::from([None, Some(9), None, None]),
            more: false,
            appended_total: 1,
        };
        assert!(!s.fetched(&old, stale));
        assert_eq!(
            s.next_publish(),
            None,
            "nothing of the old fetch is published"
        );
        assert!(
            s.want_fetch(1).is_some(),
            "the new connection fetches afresh"
        );
    }

    #[test]
    fn a_short_fetch_waits_for_new_records_before_fetching_again() {
        let (mut s, now) = session(10);
        s.connected(now);
        let req = s.want_fetch(5).unwrap();
        deliver(&mut s, &req, &[key(Class::Alert, 1)], 5);
        s.outgoing_publish(1).unwrap();
        s.puback(1, now);
        assert_eq!(s.want_fetch(5), None, "nothing new since the short fetch");
        assert!(s.want_fetch(6).is_some(), "a new record was appended");
    }

    #[test]
    fn the_window_bounds_what_is_in_flight_and_refills_from_the_ready_queue() {
        let (mut s, now) = session(4);
        s.connected(now);
        let req = s.want_fetch(100).unwrap();
        assert_eq!(req.limit, 64, "fetches run ahead of the window");
        let keys: Vec<_> = (1..=10).map(|i| key(Class::Metrics, i)).collect();
        let mut cursors = req.after;
        cursors[Class::Metrics] = Some(10);
        let f = Fetched {
            records: keys.iter().copied().map(record).collect(),
            cursors,
            more: true,
            appended_total: 100,
        };
        assert!(s.fetched(&req, f));
        let sent: Vec<_> = std::iter::from_fn(|| s.next_publish().map(|r| r.key)).collect();
        assert_eq!(sent, keys[..4], "four fit the window");
        for p in 1..=4 {
            s.outgoing_publish(p).unwrap();
        }
        let more = s
            .want_fetch(100)
            .expect("six ready, fewer than half of 64: fetch ahead");
        assert_eq!(more.limit, 58);
        assert_eq!(more.after[Class::Metrics], Some(10));
        s.puback(1, now);
        assert_eq!(
            s.next_publish().map(|r| r.key),
            Some(keys[4]),
            "one slot, one record"
        );
        assert_eq!(s.next_publish(), None);
    }

    #[test]
    fn a_collided_publish_is_paired_when_it_finally_goes_out() {
        let (mut s, now) = session(2);
        s.connected(now);
        let req = s.want_fetch(9).unwrap();
        deliver(
            &mut s,
            &req,
            &[key(Class::Alert, 1), key(Class::Alert, 2)],
            9,
        );
        s.outgoing_publish(1).unwrap();
        s.await_ack(1).unwrap();
        assert_eq!(s.puback(1, now), Some(Slot::Record(key(Class::Alert, 1))));
        s.outgoing_publish(1).unwrap();
        assert_eq!(s.puback(1, now), Some(Slot::Record(key(Class::Alert, 2))));
    }

    #[test]
    fn backoff_grows_while_nothing_gets_through_and_resets_after_a_puback() {
        let (mut s, now) = session(4);
        let d1 = s.lost(now);
        let d2 = s.lost(now);
        let d3 = s.lost(now);
        assert!(
            d1 <= Duration::from_secs(1) && d3 >= Duration::from_secs(2),
            "{d1:?} {d2:?} {d3:?}"
        );
        // Connected but refused at once (no PUBACK): keeps growing.
        s.connected(now);
        let d4 = s.lost(now);
        assert!(d4 >= Duration::from_secs(4), "{d4:?}");
        s.connected(now);
        s.queue(Slot::State);
        s.outgoing_publish(1).unwrap();
        s.puback(1, now);
        let d5 = s.lost(now);
        assert!(d5 <= Duration::from_secs(1), "{d5:?}");
        assert_eq!(s.stats.reconnects, 5);
    }
}
