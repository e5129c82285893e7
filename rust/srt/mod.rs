//! castway's SRT socket layer on libsrt (Debian's `libsrt-openssl-dev`): the C API it uses
//! (`ffi`), one socket (`socket`), the URI keys that set its options (`options`), the pool of
//! I/O threads every SRT socket of the process is served by (`io`), connection statistics
//! (`stats`), the callers of a listener (`callers`), libsrt's log (`log`), the callers libsrt
//! refused a listener for their passphrase (`refusals`) and `castway probe` (`probe`). The
//! endpoints built on it are `source::srt` (inputs) and `sink::srt` (outputs).
//!
//! GStreamer's srtsrc/srtsink are not used: they link the GnuTLS flavour of libsrt, which must
//! not be loaded into the same process as this one (both export the same symbols).

mod callers;
pub mod ffi;
pub mod io;
pub mod log;
pub mod options;
pub mod probe;
pub mod refusals;
pub mod socket;
pub mod stats;

pub use callers::{CallerChange, CallerList, Callers};
pub use socket::{Io, Socket, DEFAULT_PEER_IDLE_TIMEOUT_MS};

/// What an endpoint tells its route's control thread: the reason it failed (the control
/// thread stops it and starts it again after the backoff, as for a pipeline's error).
pub type Notify = Box<dyn Fn(String) + Send + Sync>;
