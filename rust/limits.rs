//! The bounds of what a route spec may ask for, and the defaults of what it leaves out, in one
//! place: the route's checks (`route::spec`) and the URI parser use them, and the Python
//! binding's `limits()` shows them (`Limits`). The defaults are defined where they are used (the
//! switch, the hub) and named again here. The control server checks specs through the same
//! functions (`castway._castway.check_spec` and friends), so each rule lives here once.

use std::collections::BTreeMap;
use std::fmt::Display;
use std::time::Duration;

use serde::Serialize;

use crate::error::{Error, Result};

pub use crate::hub::{DEFAULT_GOP_CACHE_BYTES, DEFAULT_TAP_QUEUE_BYTES};
pub use crate::switch::{DEFAULT_FAILBACK_AFTER, DEFAULT_LOSS_TIMEOUT};

/// The smallest per-output queue bound.
pub const MIN_QUEUE_BYTES: u64 = 64 * 1024;
/// The largest per-output queue bound (1 GiB).
pub const MAX_QUEUE_BYTES: u64 = 1 << 30;
/// The largest GOP cache (instant start) of a route, 64 MiB: a 4 s GOP at 128 Mb/s. 0 turns
/// it off.
pub const MAX_GOP_CACHE_BYTES: u64 = 64 << 20;
/// Smallest loss timeout accepted.
pub const MIN_LOSS_TIMEOUT: Duration = Duration::from_millis(50);
/// Largest loss timeout accepted.
pub const MAX_LOSS_TIMEOUT: Duration = Duration::from_secs(60);
/// Largest failback delay accepted.
pub const MAX_FAILBACK_AFTER: Duration = Duration::from_secs(3600);

/// Recording: the segment duration's bounds (1 s to 1 h), and the recorder's queue bound.
pub const MIN_SEGMENT_MS: u64 = 1_000;
pub const MAX_SEGMENT_MS: u64 = 3_600_000;
pub const MIN_RECORD_QUEUE_BYTES: u64 = 256 * 1024;
/// Retention: the oldest a segment may be kept for (a minute to ten years), and the byte caps.
pub const MIN_MAX_AGE_S: u64 = 60;
pub const MAX_MAX_AGE_S: u64 = 10 * 366 * 86_400;
pub const MIN_MAX_BYTES: u64 = 1 << 20;
pub const MAX_RECORD_BYTES: u64 = 1 << 60;

/// The slate's picture: each side even, from 16x16 up to 7680x4320 (8K).
pub const MIN_SLATE_SIDE: u32 = 16;
pub const MAX_SLATE_WIDTH: u32 = 7680;
pub const MAX_SLATE_HEIGHT: u32 = 4320;
/// The slate's picture when neither the spec nor the input on air gives one.
pub const DEFAULT_SLATE_SIZE: (u32, u32) = (1280, 720);

/// Route, template, key, input and output names: 1 to this many bytes of A-Z, a-z, 0-9, `-`,
/// `_`, `.`, starting with a letter or digit (what fits in a URL path, a file name and a log
/// line, and never reads as a command-line option, a hidden file or `..`).
pub const MAX_NAME_LEN: usize = 64;
/// The id the stats give the slate; no input or output may take it.
pub const SLATE_ID: &str = "slate";

/// SRT: the largest receive latency, in milliseconds (castway takes milliseconds, like
/// srt-live-transmit; ffmpeg's are microseconds, so a value above this is most likely those).
pub const MAX_LATENCY_MS: u64 = 60_000;
/// SRT: a passphrase's length in bytes (libsrt counts bytes; 79 at most, as ffmpeg and
/// srt-live-transmit document it).
pub const MIN_PASSPHRASE_BYTES: usize = 10;
pub const MAX_PASSPHRASE_BYTES: usize = 79;
/// SRT: the key lengths in bytes (AES-128, -192, -256).
pub const PBKEYLENS: [u64; 3] = [16, 24, 32];

// The defaults lie within the bounds (checked when the crate builds).
const _: () = {
    assert!(MIN_QUEUE_BYTES <= DEFAULT_TAP_QUEUE_BYTES);
    assert!(DEFAULT_GOP_CACHE_BYTES <= MAX_GOP_CACHE_BYTES);
    assert!(MIN_LOSS_TIMEOUT.as_millis() <= DEFAULT_LOSS_TIMEOUT.as_millis());
    assert!(DEFAULT_LOSS_TIMEOUT.as_millis() <= MAX_LOSS_TIMEOUT.as_millis());
    assert!(DEFAULT_FAILBACK_AFTER.as_millis() <= MAX_FAILBACK_AFTER.as_millis());
    assert!(MIN_SLATE_SIDE <= DEFAULT_SLATE_SIZE.1 && DEFAULT_SLATE_SIZE.0 <= MAX_SLATE_WIDTH);
};

/// Whether a picture size fits the slate's bounds (its sides need not be even).
pub fn slate_size_in_range((width, height): (u32, u32)) -> bool {
    (MIN_SLATE_SIDE..=MAX_SLATE_WIDTH).contains(&width)
        && (MIN_SLATE_SIDE..=MAX_SLATE_HEIGHT).contains(&height)
}

/// Whether `name` follows the name rules (see `MAX_NAME_LEN`).
pub fn name_ok(name: &str) -> bool {
    name.len() <= MAX_NAME_LEN
        && name
            .as_bytes()
            .first()
            .is_some_and(u8::is_ascii_alphanumeric)
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// What a whole-number setting of a spec may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// From the first to the second, both included.
    Range(u64, u64),
    /// One of these.
    OneOf(&'static [u64]),
}

/// The rule of each whole-number setting of a spec, by its field (as the notebook API names
/// it). The CLI's flags for them take the same bounds (`Limits::ranges`).
const RULES: &[(&str, Rule)] = &[
    ("queue_bytes", Rule::Range(MIN_QUEUE_BYTES, MAX_QUEUE_BYTES)),
    ("gop_cache_bytes", Rule::Range(0, MAX_GOP_CACHE_BYTES)),
    (
        "loss_timeout_ms",
        Rule::Range(
            MIN_LOSS_TIMEOUT.as_millis() as u64,
            MAX_LOSS_TIMEOUT.as_millis() as u64,
        ),
    ),
    (
        "failback_after_ms",
        Rule::Range(0, MAX_FAILBACK_AFTER.as_millis() as u64),
    ),
    ("latency_ms", Rule::Range(0, MAX_LATENCY_MS)),
    ("pbkeylen", Rule::OneOf(&PBKEYLENS)),
    (
        "recording.segment_ms",
        Rule::Range(MIN_SEGMENT_MS, MAX_SEGMENT_MS),
    ),
    (
        "recording.queue_bytes",
        Rule::Range(MIN_RECORD_QUEUE_BYTES, MAX_QUEUE_BYTES),
    ),
    (
        "recording.max_age_s",
        Rule::Range(MIN_MAX_AGE_S, MAX_MAX_AGE_S),
    ),
    (
        "recording.max_bytes",
        Rule::Range(MIN_MAX_BYTES, MAX_RECORD_BYTES),
    ),
    ("recording.min_free_bytes", Rule::Range(0, MAX_RECORD_BYTES)),
];

/// The rule of `field`'s whole number; `None` for a field that is not one of them.
pub fn rule(field: &str) -> Option<Rule> {
    RULES.iter().find(|(f, _)| *f == field).map(|(_, r)| *r)
}

/// `value` for `field` if its rule takes it, else the error at `field` that says the rule.
pub fn check_number(field: &str, value: u64) -> Result<u64> {
    let ok = match rule(field) {
        Some(Rule::Range(low, high)) => (low..=high).contains(&value),
        Some(Rule::OneOf(values)) => values.contains(&value),
        None => true,
    };
    if ok {
        Ok(value)
    } else {
        Err(refuse_number(field, value))
    }
}

/// The error for a `value` of `field` that its rule refuses (also one that does not fit in 64
/// bits: negative, or huge), at `field`.
pub fn refuse_number(field: &str, value: impl Display) -> Error {
    let why = match rule(field) {
        Some(Rule::Range(low, high)) => format!("{value} is outside {low}..{high}"),
        Some(Rule::OneOf(values)) => {
            let (last, rest) = values.split_last().expect("a rule names some values");
            let rest: Vec<String> = rest.iter().map(u64::to_string).collect();
            format!("{value} must be {} or {last}", rest.join(", "))
        }
        None => format!("{value} is out of range"),
    };
    Error::InvalidConfig(why).at(field)
}

/// The name rules in words, for errors.
pub fn name_rule() -> String {
    format!(
        "1 to {MAX_NAME_LEN} characters of A-Z, a-z, 0-9, `.`, `_`, `-`, starting with a letter \
         or digit"
    )
}

/// A picture size `WIDTHxHEIGHT` (a test pattern's, the slate's): whole numbers without sign
/// or leading zero, even sides within the slate's bounds.
pub fn parse_picture_size(text: &str) -> Option<(u32, u32)> {
    let side = |s: &str| -> Option<u32> {
        let digits = !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) && !s.starts_with('0');
        digits.then(|| s.parse().ok()).flatten()
    };
    let (w, h) = text.split_once(['x', 'X'])?;
    let size = (side(w)?, side(h)?);
    (slate_size_in_range(size) && size.0 % 2 == 0 && size.1 % 2 == 0).then_some(size)
}

/// What `parse_picture_size` takes, in words, for errors.
pub fn picture_size_rule() -> String {
    format!(
        "WIDTHxHEIGHT with even sides from {MIN_SLATE_SIDE}x{MIN_SLATE_SIDE} to \
         {MAX_SLATE_WIDTH}x{MAX_SLATE_HEIGHT}"
    )
}

/// The bounds and defaults as the Python binding's `limits()` shows them, in the units of the
/// specs (milliseconds, bytes).
#[derive(Debug, Clone, Serialize)]
pub struct Limits {
    pub queue_bytes: u64,
    pub min_queue_bytes: u64,
    pub max_queue_bytes: u64,
    pub gop_cache_bytes: u64,
    pub max_gop_cache_bytes: u64,
    pub loss_timeout_ms: u64,
    pub min_loss_timeout_ms: u64,
    pub max_loss_timeout_ms: u64,
    pub failback_after_ms: u64,
    pub max_failback_after_ms: u64,
    pub min_slate_side: u32,
    pub max_slate_width: u32,
    pub max_slate_height: u32,
    pub max_name_len: usize,
    pub name_rule: String,
    pub slate_id: &'static str,
    pub max_latency_ms: u64,
    pub min_passphrase_bytes: usize,
    pub max_passphrase_bytes: usize,
    pub pbkeylens: [u64; 3],
    /// Each whole-number field's `[low, high]` (both included) by its field (`rule`), for the
    /// fields whose rule is a range.
    pub ranges: BTreeMap<&'static str, [u64; 2]>,
}

impl Limits {
    pub fn get() -> Limits {
        let ms = |d: Duration| d.as_millis() as u64;
        Limits {
            queue_bytes: DEFAULT_TAP_QUEUE_BYTES,
            min_queue_bytes: MIN_QUEUE_BYTES,
            max_queue_bytes: MAX_QUEUE_BYTES,
            gop_cache_bytes: DEFAULT_GOP_CACHE_BYTES,
            max_gop_cache_bytes: MAX_GOP_CACHE_BYTES,
            loss_timeout_ms: ms(DEFAULT_LOSS_TIMEOUT),
            min_loss_timeout_ms: ms(MIN_LOSS_TIMEOUT),
            max_loss_timeout_ms: ms(MAX_LOSS_TIMEOUT),
            failback_after_ms: ms(DEFAULT_FAILBACK_AFTER),
            max_failback_after_ms: ms(MAX_FAILBACK_AFTER),
            min_slate_side: MIN_SLATE_SIDE,
            max_slate_width: MAX_SLATE_WIDTH,
            max_slate_height: MAX_SLATE_HEIGHT,
            max_name_len: MAX_NAME_LEN,
            name_rule: name_rule(),
            slate_id: SLATE_ID,
            max_latency_ms: MAX_LATENCY_MS,
            min_passphrase_bytes: MIN_PASSPHRASE_BYTES,
            max_passphrase_bytes: MAX_PASSPHRASE_BYTES,
            pbkeylens: PBKEYLENS,
            ranges: RULES
                .iter()
                .filter_map(|(field, rule)| match rule {
                    Rule::Range(low, high) => Some((*field, [*low, *high])),
                    Rule::OneOf(_) => None,
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_short_url_safe_ascii() {
        assert!(name_ok("news"));
        assert!(name_ok("a.b-c_9"));
        assert!(name_ok(&"x".repeat(MAX_NAME_LEN)));
        assert!(!name_ok(""));
        assert!(!name_ok(&"x".repeat(MAX_NAME_LEN + 1)));
        assert!(!name_ok("a b"));
        assert!(!name_ok("a/b"));
        assert!(!name_ok("é"));
        // A letter or digit first: never an option, a hidden file or `..`.
        assert!(name_ok("9news"));
        for leading in ["-x", ".x", "_x", "..", "."] {
            assert!(!name_ok(leading), "{leading}");
        }
    }

    #[test]
    fn numbers_outside_their_rule_are_refused_at_their_field() {
        assert_eq!(
            check_number("queue_bytes", MIN_QUEUE_BYTES).unwrap(),
            MIN_QUEUE_BYTES
        );
        assert_eq!(check_number("failback_after_ms", 0).unwrap(), 0);
        assert_eq!(check_number("pbkeylen", 24).unwrap(), 24);
        let refused = |field: &str, value: u64| check_number(field, value).unwrap_err().to_string();
        assert_eq!(
            refused("loss_timeout_ms", 49),
            "loss_timeout_ms: invalid configuration: 49 is outside 50..60000"
        );
        assert!(refused("queue_bytes", MAX_QUEUE_BYTES + 1).contains("outside 65536..1073741824"));
        assert!(refused("latency_ms", 60_001).contains("60001 is outside 0..60000"));
        assert!(refused("pbkeylen", 20).ends_with("20 must be 16, 24 or 32"));
        assert!(refuse_number("queue_bytes", -1)
            .to_string()
            .contains("-1 is outside"));
    }

    #[test]
    fn picture_sizes_are_even_plain_numbers_within_the_bounds() {
        assert_eq!(parse_picture_size("1280x720"), Some((1280, 720)));
        assert_eq!(parse_picture_size("16X16"), Some((16, 16)));
        assert_eq!(parse_picture_size("7680x4320"), Some((7680, 4320)));
        for bad in [
            "",
            "1280",
            "1280x",
            "x720",
            "1281x720",
            "1280x721",
            "14x16",
            "7682x720",
            "+640x360",
            "0640x360",
            "640x-360",
            "640 x360",
            "640x360x2",
            "7x7",
        ] {
            assert_eq!(parse_picture_size(bad), None, "{bad}");
        }
    }

    #[test]
    fn slate_sizes_from_16x16_to_8k() {
        assert!(slate_size_in_range((16, 16)));
        assert!(slate_size_in_range((7680, 4320)));
        assert!(slate_size_in_range((1281, 721)));
        assert!(!slate_size_in_range((14, 720)));
        assert!(!slate_size_in_range((7682, 720)));
        assert!(!slate_size_in_range((1280, 4322)));
    }
}
