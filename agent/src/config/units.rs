//! Human-friendly units for agent.toml: durations (`"30s"`, `"5m"`, `"1h 30m"`)
//! and byte sizes (`268435456`, `"256 MiB"`). Parsing errors say what was
//! expected and echo what was found, because the operator reading them is
//! usually looking at the file, not the code.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// A duration written as a string such as `"30s"`, `"500ms"`, `"5m"` or `"1h 30m"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub(crate) struct HumanDuration(pub(crate) Duration);

impl HumanDuration {
    pub(crate) const fn from_secs(secs: u64) -> Self {
        Self(Duration::from_secs(secs))
    }
    pub(crate) fn get(self) -> Duration {
        self.0
    }
}

impl From<HumanDuration> for Duration {
    fn from(d: HumanDuration) -> Self {
        d.0
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

impl FromStr for HumanDuration {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        humantime::parse_duration(s.trim())
            .map(HumanDuration)
            .map_err(|_| format!("expected a duration such as \"30s\", got \"{s}\""))
    }
}

impl Serialize for HumanDuration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = HumanDuration;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a duration such as \"30s\"")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<HumanDuration, E> {
                s.parse().map_err(E::custom)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<HumanDuration, E> {
                Err(E::custom(format!(
                    "expected a duration with a unit such as \"{v}s\", got the bare number {v}"
                )))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<HumanDuration, E> {
                self.visit_i64(v as i64)
            }
        }
        d.deserialize_any(V)
    }
}

/// A size in bytes, written as an integer or as a string such as `"256 MiB"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ByteSize(pub(crate) u64);

impl ByteSize {
    pub(crate) const fn mib(n: u64) -> Self {
        Self(n * 1024 * 1024)
    }
    pub(crate) const fn kib(n: u64) -> Self {
        Self(n * 1024)
    }
    pub(crate) const fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", bytesize::ByteSize(self.0).display().iec())
    }
}

impl FromStr for ByteSize {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        bytesize::ByteSize::from_str(s.trim())
            .map(|b| ByteSize(b.as_u64()))
            .map_err(|_| {
                format!("expected a size such as \"256 MiB\" or a number of bytes, got \"{s}\"")
            })
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(self.0)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = ByteSize;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a size such as \"256 MiB\" or a number of bytes")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<ByteSize, E> {
                s.parse().map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ByteSize, E> {
                Ok(ByteSize(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ByteSize, E> {
                u64::try_from(v).map(ByteSize).map_err(|_| {
                    E::custom(format!("expected a size of zero or more bytes, got {v}"))
                })
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units_and_reject_bare_words() {
        assert_eq!(
            "30s".parse::<HumanDuration>().unwrap().get(),
            Duration::from_secs(30)
        );
        assert_eq!(
            "1h 30m".parse::<HumanDuration>().unwrap().get(),
            Duration::from_secs(5400)
        );
        let err = "abc".parse::<HumanDuration>().unwrap_err();
        assert_eq!(err, "expected a duration such as \"30s\", got \"abc\"");
    }

    #[test]
    fn sizes_accept_iec_units_and_plain_numbers() {
        assert_eq!(
            "256 MiB".parse::<ByteSize>().unwrap().get(),
            256 * 1024 * 1024
        );
        assert_eq!("4KiB".parse::<ByteSize>().unwrap().get(), 4096);
        assert!("lots".parse::<ByteSize>().is_err());
    }
}
