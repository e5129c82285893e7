//! The bounds of what a route spec may ask for, and the defaults of what it leaves out, in one
//! place: the route's checks (`route::spec`) use them and the Python binding's `limits()`
//! reads them. The defaults are defined where they are used (the switch, the hub) and named
//! again here.

use std::time::Duration;

pub use crate::hub::DEFAULT_TAP_QUEUE_BYTES;
pub use crate::switch::{DEFAULT_FAILBACK_AFTER, DEFAULT_LOSS_TIMEOUT};

/// The smallest per-output queue bound.
pub const MIN_QUEUE_BYTES: u64 = 64 * 1024;
/// Smallest loss timeout accepted.
pub const MIN_LOSS_TIMEOUT: Duration = Duration::from_millis(50);
/// Largest loss timeout accepted.
pub const MAX_LOSS_TIMEOUT: Duration = Duration::from_secs(60);
/// Largest failback delay accepted.
pub const MAX_FAILBACK_AFTER: Duration = Duration::from_secs(3600);

/// The slate's picture: each side even, from 16x16 up to 7680x4320 (8K).
pub const MIN_SLATE_SIDE: u32 = 16;
pub const MAX_SLATE_WIDTH: u32 = 7680;
pub const MAX_SLATE_HEIGHT: u32 = 4320;
/// The slate's picture when neither the spec nor the input on air gives one.
pub const DEFAULT_SLATE_SIZE: (u32, u32) = (1280, 720);

/// Route, input and output names: 1 to this many bytes of A-Z, a-z, 0-9, `-`, `_`, `.` (what
/// fits in a URL path and a log line).
pub const MAX_NAME_LEN: usize = 64;
/// The id the stats give the slate; no input or output may take it.
pub const SLATE_ID: &str = "slate";

// The defaults lie within the bounds (checked when the crate builds).
const _: () = {
    assert!(MIN_QUEUE_BYTES <= DEFAULT_TAP_QUEUE_BYTES);
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
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
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
