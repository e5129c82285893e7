//! Callers a plain listener (`srt://:PORT?mode=listener`, an input or an output) had refused by
//! libsrt for their passphrase: a wrong one (`SRT_REJ_BADSECRET`), or one on a side only
//! (`SRT_REJ_UNSECURE`). libsrt refuses them after its listen callback without telling the
//! listener; as on the shared port, the listener's callback lets every caller in and leaves a
//! [`Watch`] on libsrt's receiving thread, which libsrt's log calls when it rejects that caller
//! (`srt::log`). Each refusal is logged (a warning naming the peer and why), counted, and kept
//! for the route's control thread to report as an `srt_refused` event: at most
//! [`REFUSAL_EVENTS_PER_SECOND`] a second, the others counted as missed.
//!
//! A slot keeps its [`Refusals`] across restarts of its endpoint, so the counts are the
//! endpoint's since the route started. libsrt is handed a token, not a pointer: a callback that
//! comes after the listener's end finds nothing, or the same endpoint's record.

use std::collections::HashMap;
use std::ffi::CStr;
use std::os::raw::{c_char, c_int, c_void};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, LazyLock, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use super::ffi::{self, SRTSOCKET};
use super::log::{self as srt_log, Rejection, Watch};
use super::socket::{sockaddr_string, Socket};

/// Refusals reported as `srt_refused` events in one second at most, by the shared port and by
/// each plain listener: a flood of refused callers (a misconfigured encoder retrying, a scan)
/// cannot flood the event log. The others are counted (`refusal_events_missed`).
pub const REFUSAL_EVENTS_PER_SECOND: u32 = 10;

/// Refusals waiting for the control thread, at most (it takes them once a second); beyond,
/// they are counted as missed events.
const MAX_PENDING: usize = 1024;

static CAT: LazyLock<gst::DebugCategory> = LazyLock::new(|| {
    gst::DebugCategory::new(
        "castway-srt",
        gst::DebugColorFlags::empty(),
        Some("castway SRT endpoints"),
    )
});

/// The live records, by the token libsrt is handed as the callback's opaque value.
static RECORDS: LazyLock<Mutex<HashMap<usize, Weak<Refusals>>>> = LazyLock::new(Mutex::default);
static NEXT: AtomicUsize = AtomicUsize::new(1);

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Lets `REFUSAL_EVENTS_PER_SECOND` refusals a second through to the event log (a window of
/// one second, starting at the first refusal after the last window).
#[derive(Debug, Default)]
pub struct EventBudget {
    since: Option<Instant>,
    used: u32,
}

impl EventBudget {
    pub fn allow(&mut self, now: Instant) -> bool {
        match self.since {
            Some(since) if now.duration_since(since) < Duration::from_secs(1) => {}
            _ => {
                self.since = Some(now);
                self.used = 0;
            }
        }
        if self.used >= REFUSAL_EVENTS_PER_SECOND {
            return false;
        }
        self.used += 1;
        true
    }
}

/// A caller libsrt refused, not yet reported.
#[derive(Debug, Clone, PartialEq)]
pub struct Refused {
    /// `IP:PORT`.
    pub address: String,
    pub why: Rejection,
    /// The stream ID it sent, redacted (`uri::redact_stream_id`), if any.
    pub stream_id: Option<String>,
    /// When libsrt refused it (Unix time): its event is dated so, not when it is reported.
    pub at: f64,
}

impl Refused {
    /// The reason's name in stats and events (as the shared port's).
    pub fn reason(&self) -> &'static str {
        match self.why {
            Rejection::BadSecret => "bad_secret",
            Rejection::Unsecure => "unsecure",
        }
    }
}

#[derive(Default)]
struct Pending {
    budget: EventBudget,
    refused: Vec<Refused>,
}

/// What the stats show of a listener's refusals.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RefusalCounts {
    pub bad_secret: u64,
    pub unsecure: u64,
    pub events_missed: u64,
}

/// The passphrase refusals of one listener endpoint (kept by its slot).
pub struct Refusals {
    token: usize,
    /// `route/id`, for the log.
    label: String,
    bad_secret: AtomicU64,
    unsecure: AtomicU64,
    events_missed: AtomicU64,
    pending: Mutex<Pending>,
}

impl Refusals {
    pub fn new(label: String) -> Arc<Refusals> {
        let token = NEXT.fetch_add(1, Relaxed);
        let r = Arc::new(Refusals {
            token,
            label,
            bad_secret: AtomicU64::new(0),
            unsecure: AtomicU64::new(0),
            events_missed: AtomicU64::new(0),
            pending: Mutex::default(),
        });
        lock(&RECORDS).insert(token, Arc::downgrade(&r));
        r
    }

    /// Sets the listen callback of `listener` (before `listen`): every caller is let in as
    /// without one, and watched for libsrt's refusal of its passphrase.
    pub fn watch(&self, listener: &Socket) -> Result<(), String> {
        // SAFETY: a socket of ours, a function of the right type; the opaque value is a token,
        // never dereferenced.
        let r = unsafe {
            ffi::srt_listen_callback(listener.id(), on_listen, self.token as *mut c_void)
        };
        if r == ffi::SRT_ERROR {
            return Err("cannot set the listen callback".into());
        }
        Ok(())
    }

    /// libsrt refused the caller at `address`.
    fn refused(&self, refused: Refused) {
        let (count, text) = match refused.why {
            Rejection::BadSecret => (&self.bad_secret, "wrong passphrase (bad secret)"),
            Rejection::Unsecure => (&self.unsecure, "a passphrase on one side only (unsecure)"),
        };
        count.fetch_add(1, Relaxed);
        gst::warning!(CAT, "{}: refused {}: {text}", self.label, refused.address);
        let mut pending = lock(&self.pending);
        if pending.refused.len() < MAX_PENDING && pending.budget.allow(Instant::now()) {
            pending.refused.push(refused);
        } else {
            self.events_missed.fetch_add(1, Relaxed);
        }
    }

    /// Takes the refusals not yet reported, oldest first.
    pub fn take(&self) -> Vec<Refused> {
        std::mem::take(&mut lock(&self.pending).refused)
    }

    pub fn counts(&self) -> RefusalCounts {
        RefusalCounts {
            bad_secret: self.bad_secret.load(Relaxed),
            unsecure: self.unsecure.load(Relaxed),
            events_missed: self.events_missed.load(Relaxed),
        }
    }
}

impl Drop for Refusals {
    fn drop(&mut self) {
        lock(&RECORDS).remove(&self.token);
    }
}

/// libsrt's listen callback of a plain listener (`srt_listen_callback_fn`): lets the caller in
/// and leaves a watch for its refusal.
unsafe extern "C" fn on_listen(
    opaque: *mut c_void,
    ns: SRTSOCKET,
    _hsversion: c_int,
    peeraddr: *const libc::sockaddr,
    streamid: *const c_char,
) -> c_int {
    let record = lock(&RECORDS).get(&(opaque as usize)).cloned();
    let Some(record) = record else {
        return 0;
    };
    // SAFETY: libsrt passes the caller's address and a NUL-terminated stream ID (or null).
    let address = unsafe { sockaddr_string(peeraddr) }.unwrap_or_default();
    let stream_id = (!streamid.is_null())
        .then(|| {
            unsafe { CStr::from_ptr(streamid) }
                .to_string_lossy()
                .into_owned()
        })
        .filter(|s| !s.is_empty())
        .map(|s| crate::uri::redact_stream_id(&s));
    // Never unwind into libsrt.
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
        srt_log::watch(Watch {
            socket: ns,
            on_rejected: Box::new(move |why| {
                if let Some(r) = record.upgrade() {
                    let at = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0.0, |d| d.as_secs_f64());
                    r.refused(Refused {
                        address,
                        why,
                        stream_id,
                        at,
                    });
                }
            }),
        });
    }));
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_past_a_seconds_budget_are_not_reported() {
        let mut budget = EventBudget::default();
        let t = Instant::now();
        let passed = (0..25).filter(|_| budget.allow(t)).count();
        assert_eq!(passed, REFUSAL_EVENTS_PER_SECOND as usize);
        assert!(!budget.allow(t + Duration::from_millis(999)));
        // A new second, a new budget.
        assert!(budget.allow(t + Duration::from_secs(1)));
    }

    #[test]
    fn refusals_are_counted_and_those_past_the_budget_are_missed_events() {
        let r = Refusals::new("r/out".into());
        for i in 0..12 {
            r.refused(Refused {
                address: format!("127.0.0.1:{}", 5000 + i),
                why: if i == 0 {
                    Rejection::Unsecure
                } else {
                    Rejection::BadSecret
                },
                stream_id: None,
                at: 0.0,
            });
        }
        let taken = r.take();
        assert_eq!(taken.len(), REFUSAL_EVENTS_PER_SECOND as usize);
        assert_eq!(taken[0].reason(), "unsecure");
        assert_eq!(
            r.counts(),
            RefusalCounts {
                bad_secret: 11,
                unsecure: 1,
                events_missed: 2
            }
        );
        assert!(r.take().is_empty());
    }
}
