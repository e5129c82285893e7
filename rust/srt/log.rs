//! libsrt's log, into castway's: libsrt writes to stderr unless given a handler; castway gives
//! it one (`srt_setloghandler`) that logs each message under `castway-libsrt`, at warning level
//! and above, for the handshake's functional area (`GST_DEBUG=castway-libsrt:4` shows them).
//!
//! It is also how the shared port learns of a wrong or missing passphrase: libsrt checks the
//! passphrase after the listen callback let the caller in, and rejects it (`SRT_REJ_BADSECRET`,
//! or `SRT_REJ_UNSECURE` when one side has none) without calling back. It logs that on the thread that ran the callback, right after it; so the
//! callback leaves a [`Watch`] on its thread, and the handler calls it when a message there
//! says that socket was rejected for its passphrase.
//!
//! `srt_accept`'s "no pending connection" (an error to libsrt, the normal end of an accept
//! pass to castway) is logged at debug level.

use std::cell::RefCell;
use std::ffi::CStr;
use std::os::raw::{c_char, c_int, c_void};
use std::sync::LazyLock;

use super::ffi::{self, SRTSOCKET};

static CAT: LazyLock<gst::DebugCategory> = LazyLock::new(|| {
    gst::DebugCategory::new(
        "castway-libsrt",
        gst::DebugColorFlags::empty(),
        Some("libsrt's own log"),
    )
});

/// What libsrt 1.5.1 logs (at warning level, on the listener's receiving thread, after the
/// listen callback) when it rejects a caller whose key material does not decrypt with the
/// passphrase set on its socket: `@SOCKET:newConnection: connection rejected due to: INTERNAL
/// REJECTION - ERROR:BADSECRET` (before it, without the socket: `KMREQ/rcv: (snd) Rx process
/// failure - BADSECRET`).
const BAD_SECRET: &str = "connection rejected due to: INTERNAL REJECTION - ERROR:BADSECRET";

/// What it logs the same way when one side has a passphrase and the other none
/// (`SRT_REJ_UNSECURE`).
const UNSECURE: &str = "connection rejected due to: INTERNAL REJECTION - ERROR:UNSECURE";

/// What `srt_accept` logs (as an error) when a listener has no caller waiting: the end of every
/// accept pass of a non-blocking listener, not a fault; logged at debug level.
const NO_PENDING: &str = "no pending connection available at the moment";

/// Why libsrt refused a caller the listen callback let in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// A wrong passphrase (`SRT_REJ_BADSECRET`).
    BadSecret,
    /// A passphrase on one side only (`SRT_REJ_UNSECURE`).
    Unsecure,
}

/// A caller the listen callback let in, on its thread: called once if libsrt then rejects it
/// for its passphrase (wrong, or on one side only).
pub struct Watch {
    pub socket: SRTSOCKET,
    pub on_rejected: Box<dyn FnOnce(Rejection)>,
}

thread_local! {
    static WATCH: RefCell<Option<Watch>> = const { RefCell::new(None) };
}

/// Leaves `watch` on this thread (libsrt's receiving thread, in a listen callback), in place
/// of the last one: a caller's handshake runs to its end on this thread before the next
/// caller's callback.
pub fn watch(watch: Watch) {
    WATCH.with(|w| *w.borrow_mut() = Some(watch));
}

/// Installs the handler; called once, at libsrt's start-up.
pub(super) fn install() {
    let areas = [ffi::SRT_LOGFA_CONN];
    // SAFETY: a handler of the right type that never unwinds; an array valid for its length.
    unsafe {
        ffi::srt_setlogflags(ffi::SRT_LOGF_BARE);
        ffi::srt_setloghandler(std::ptr::null_mut(), on_log);
        ffi::srt_resetlogfa(areas.as_ptr(), areas.len());
        ffi::srt_setloglevel(libc::LOG_WARNING);
    }
}

/// libsrt's log handler (`SRT_LOG_HANDLER_FN`).
unsafe extern "C" fn on_log(
    _opaque: *mut c_void,
    level: c_int,
    _file: *const c_char,
    _line: c_int,
    _area: *const c_char,
    message: *const c_char,
) {
    if message.is_null() {
        return;
    }
    // SAFETY: libsrt passes a NUL-terminated message it owns for the call.
    let text = unsafe { CStr::from_ptr(message) }.to_string_lossy();
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        // The flags leave a separator before the message.
        let text = text.trim_start_matches([':', ' ']).trim_end();
        if text.contains(NO_PENDING) {
            gst::debug!(CAT, "{text}");
        } else if level <= libc::LOG_ERR {
            gst::error!(CAT, "{text}");
        } else {
            gst::warning!(CAT, "{text}");
        }
        let rejection = if text.contains(BAD_SECRET) {
            Some(Rejection::BadSecret)
        } else if text.contains(UNSECURE) {
            Some(Rejection::Unsecure)
        } else {
            None
        };
        if let Some(rejection) = rejection {
            let watched = |w: &Option<Watch>| {
                w.as_ref()
                    .is_some_and(|w| text.starts_with(&format!("@{}:", w.socket)))
            };
            let watch = WATCH.with(|w| {
                let mut w = w.borrow_mut();
                if watched(&w) {
                    w.take()
                } else {
                    None
                }
            });
            if let Some(w) = watch {
                (w.on_rejected)(rejection);
            }
        }
    }));
}
