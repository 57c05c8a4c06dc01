//! Validated request values: keys and TTLs.
//!
//! Requests are parsed into these types at the gRPC edge, before anything is
//! written, so the stores can trust them. A [`Key`] can never carry a space
//! or a control character, which is what makes it impossible for a key to
//! inject a memcached text-protocol command (e.g. `a\r\nflush_all`).

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Longest key memcached accepts, in bytes.
pub const MAX_KEY_LEN: usize = 250;

/// A key that satisfies memcached's text-protocol rules.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key(String);

/// Why a key was refused; each variant names the rule it breaks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The key is the empty string.
    #[error("key must not be empty")]
    Empty,
    /// The key is longer than memcached allows.
    #[error("key is {len} bytes long; keys are at most {MAX_KEY_LEN} bytes")]
    TooLong {
        /// Length of the refused key in bytes.
        len: usize,
    },
    /// The key holds a space or a control character (these delimit
    /// memcached commands).
    #[error(
        "key contains {found} at byte {at}; keys must not contain spaces or control characters"
    )]
    ForbiddenChar {
        /// A printable description of the character.
        found: String,
        /// Byte offset of the character in the key.
        at: usize,
    },
}

impl Key {
    /// Validates `raw` against memcached's key rules.
    pub fn parse(raw: impl Into<String>) -> Result<Key, KeyError> {
        let raw = raw.into();
        if raw.is_empty() {
            return Err(KeyError::Empty);
        }
        if raw.len() > MAX_KEY_LEN {
            return Err(KeyError::TooLong { len: raw.len() });
        }
        if let Some((at, c)) = raw
            .char_indices()
            .find(|(_, c)| c.is_whitespace() || c.is_control())
        {
            return Err(KeyError::ForbiddenChar {
                found: format!("{c:?}"),
                at,
            });
        }
        Ok(Key(raw))
    }

    /// The key as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The key as an owned string, without a copy.
    pub fn into_string(self) -> String {
        self.0
    }

    /// The key's length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Always false: a valid key is never empty (present for clippy's sake).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for Key {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// How long an item lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ttl {
    /// The item never expires (it can still be evicted).
    Forever,
    /// The item expires this many seconds after it is written.
    Seconds(u32),
}

/// memcached reads an expiry above 30 days as an absolute unix time.
pub const MEMCACHED_RELATIVE_EXPIRY_MAX: u32 = 60 * 60 * 24 * 30;

/// The latest absolute expiry memcached handles (2038-01-19): it keeps
/// times as signed 32-bit, and a later one wraps into the past, which
/// would expire the item at once.
pub const MEMCACHED_ABSOLUTE_EXPIRY_MAX: u64 = i32::MAX as u64;

impl Ttl {
    /// A TTL from the API's seconds, where 0 means "never expires".
    pub fn from_secs(secs: u32) -> Ttl {
        if secs == 0 {
            Ttl::Forever
        } else {
            Ttl::Seconds(secs)
        }
    }

    /// The TTL as a duration, `None` for [`Ttl::Forever`].
    pub fn as_duration(self) -> Option<Duration> {
        match self {
            Ttl::Forever => None,
            Ttl::Seconds(s) => Some(Duration::from_secs(u64::from(s))),
        }
    }

    /// The `exptime` field of a memcached storage command, given the
    /// current time: relative seconds up to 30 days, an absolute unix time
    /// beyond (memcached would otherwise read a 40-day TTL as a date in 1970
    /// and expire the item at once), capped at memcached's latest date.
    pub fn memcached_exptime(self, now: SystemTime) -> u64 {
        match self {
            Ttl::Forever => 0,
            Ttl::Seconds(s) if s <= MEMCACHED_RELATIVE_EXPIRY_MAX => u64::from(s),
            Ttl::Seconds(s) => {
                let now = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
                (now + u64::from(s)).min(MEMCACHED_ABSOLUTE_EXPIRY_MAX)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_keys() {
        for k in ["a", "user:42", "ключ", "emoji-😀", &"k".repeat(250)] {
            assert_eq!(Key::parse(k).unwrap().as_str(), k);
        }
    }

    #[test]
    fn refuses_empty_and_long_keys() {
        assert_eq!(Key::parse(""), Err(KeyError::Empty));
        assert_eq!(
            Key::parse("k".repeat(251)),
            Err(KeyError::TooLong { len: 251 })
        );
        // 250 bytes is measured in bytes, not characters.
        assert!(matches!(
            Key::parse("é".repeat(126)),
            Err(KeyError::TooLong { len: 252 })
        ));
    }

    #[test]
    fn refuses_injection_and_control_characters() {
        for k in [
            "a\r\nflush_all",
            "a b",
            "tab\there",
            "nul\0",
            "\n",
            "del\x7f",
            "nbsp\u{a0}x",
            "line\u{2028}sep",
        ] {
            let err = Key::parse(k).unwrap_err();
            assert!(
                matches!(err, KeyError::ForbiddenChar { .. }),
                "{k:?} gave {err:?}"
            );
            assert!(err.to_string().contains("spaces or control characters"));
        }
    }

    #[test]
    fn ttl_zero_is_forever() {
        assert_eq!(Ttl::from_secs(0), Ttl::Forever);
        assert_eq!(Ttl::Forever.memcached_exptime(SystemTime::now()), 0);
    }

    #[test]
    fn ttl_up_to_30_days_stays_relative() {
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(Ttl::from_secs(60).memcached_exptime(now), 60);
        assert_eq!(
            Ttl::from_secs(MEMCACHED_RELATIVE_EXPIRY_MAX).memcached_exptime(now),
            u64::from(MEMCACHED_RELATIVE_EXPIRY_MAX)
        );
    }

    #[test]
    fn ttl_past_2038_is_capped_not_wrapped() {
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(
            Ttl::from_secs(u32::MAX).memcached_exptime(now),
            MEMCACHED_ABSOLUTE_EXPIRY_MAX
        );
    }

    #[test]
    fn ttl_over_30_days_becomes_absolute() {
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let forty_days = 40 * 24 * 3600;
        assert_eq!(
            Ttl::from_secs(forty_days).memcached_exptime(now),
            1_700_000_000 + u64::from(forty_days)
        );
        assert_eq!(
            Ttl::from_secs(MEMCACHED_RELATIVE_EXPIRY_MAX + 1).memcached_exptime(now),
            1_700_000_000 + u64::from(MEMCACHED_RELATIVE_EXPIRY_MAX) + 1
        );
    }
}
