//! Unix time: the one conversion from [`SystemTime`] to seconds,
//! milliseconds and nanoseconds since 1970, as events, records, metrics and
//! status carry it. A clock set before 1970 reads as 0 rather than failing:
//! every caller stamps or compares times and has no better answer.
//! Never sleeps or keeps state.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Time since the Unix epoch; zero for a time before it.
pub(crate) fn since_epoch(t: SystemTime) -> Duration {
    t.duration_since(UNIX_EPOCH).unwrap_or_default()
}

pub(crate) fn secs(t: SystemTime) -> u64 {
    since_epoch(t).as_secs()
}

/// Milliseconds (u64 holds them for half a billion years).
pub(crate) fn millis(t: SystemTime) -> u64 {
    saturate(since_epoch(t).as_millis())
}

/// Microseconds (u64 holds them for half a million years).
pub(crate) fn micros(t: SystemTime) -> u64 {
    saturate(since_epoch(t).as_micros())
}

/// Nanoseconds (u64 holds them until the year 2554; later saturates).
pub(crate) fn nanos(t: SystemTime) -> u64 {
    saturate(since_epoch(t).as_nanos())
}

pub(crate) fn now_secs() -> u64 {
    secs(SystemTime::now())
}

pub(crate) fn now_millis() -> u64 {
    millis(SystemTime::now())
}

pub(crate) fn now_nanos() -> u64 {
    nanos(SystemTime::now())
}

fn saturate(n: u128) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_agree_and_times_before_1970_read_as_zero() {
        let t = UNIX_EPOCH + Duration::new(1_700_000_000, 123_456_789);
        assert_eq!(secs(t), 1_700_000_000);
        assert_eq!(millis(t), 1_700_000_000_123);
        assert_eq!(micros(t), 1_700_000_000_123_456);
        assert_eq!(nanos(t), 1_700_000_000_123_456_789);
        let before = UNIX_EPOCH - Duration::from_secs(5);
        assert_eq!((secs(before), millis(before), nanos(before)), (0, 0, 0));
        let far = UNIX_EPOCH + Duration::from_secs(600 * 365 * 86_400);
        assert_eq!(nanos(far), u64::MAX);
    }

    #[test]
    fn now_is_after_this_code_was_written() {
        assert!(now_secs() > 1_700_000_000);
        assert!(now_millis() / 1000 >= now_secs() - 1);
    }
}
