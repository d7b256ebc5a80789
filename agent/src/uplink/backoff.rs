//! Capped exponential backoff with jitter, for reconnecting. Pure: the
//! caller sleeps.

use std::time::Duration;

/// Delays double from `first` up to `max`; each is drawn at random from
/// the upper half of its step ("equal jitter"), so a fleet that lost its
/// broker at once does not come back at once, and no delay is shorter
/// than half its step.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    first: Duration,
    max: Duration,
    attempt: u32,
    rng: u64,
}

impl Backoff {
    pub(crate) fn new(first: Duration, max: Duration, seed: u64) -> Backoff {
        Backoff {
            first,
            max,
            attempt: 0,
            // xorshift needs a non-zero state.
            rng: seed | 1,
        }
    }

    /// A backoff seeded from the clock and the process id.
    pub(crate) fn seeded(first: Duration, max: Duration) -> Backoff {
        let nanos = crate::unix_time::now_nanos();
        Backoff::new(first, max, nanos ^ (u64::from(std::process::id()) << 32))
    }

    pub(crate) fn reset(&mut self) {
        self.attempt = 0;
    }

    pub(crate) fn next_delay(&mut self) -> Duration {
        let step = self
            .first
            .saturating_mul(2u32.saturating_pow(self.attempt.min(31)))
            .min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        let half = step / 2;
        let span = (step - half).as_millis() as u64;
        let jitter = if span == 0 {
            0
        } else {
            self.next_random() % (span + 1)
        };
        half + Duration::from_millis(jitter)
    }

    fn next_random(&mut self) -> u64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_within_their_half_and_stop_at_the_cap() {
        let mut b = Backoff::new(Duration::from_millis(500), Duration::from_secs(30), 42);
        let mut step = Duration::from_millis(500);
        for _ in 0..12 {
            let d = b.next_delay();
            assert!(
                d >= step / 2 && d <= step,
                "{d:?} not within the upper half of {step:?}"
            );
            step = (step * 2).min(Duration::from_secs(30));
        }
        assert!(b.next_delay() >= Duration::from_secs(15));
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(500));
    }

    #[test]
    fn two_seeds_do_not_retry_in_lockstep() {
        let mut a = Backoff::new(Duration::from_secs(1), Duration::from_secs(60), 1);
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(60), 2);
        let same = (0..8).filter(|_| a.next_delay() == b.next_delay()).count();
        assert!(same < 8);
    }
}
