//! The recorder: a hub tap that writes a route's outputs' bytes to disk in segments.
//!
//! It is isolated like any output. The hub hands it each buffer it hands the outputs (a
//! reference count, no copy) through [`Intake::offer`], which only puts it on a bounded queue
//! (bounded in bytes, `queue_bytes`); a full queue is a counted drop, never a wait. One writer
//! thread per recording drains the queue, finds the cuts (`cutter.rs`: at the PAT before the
//! first keyframe past the target duration) and writes the segments (`writer.rs`): each as
//! `NAME.ts.part`, flushed, synced and renamed to `NAME.ts` when it closes. So a slow or full
//! disk stalls only the writer thread; the route and its outputs go on.
//!
//! The writer reports each segment opened and closed, and each error, to the gateway's event
//! log (`segment_opened`, `segment_closed` with the segment's record as JSON in `segment`,
//! `recording_error`); the control server catalogs them. docs/recording.md has the design.
//!
//! Lock order: `Shared::status` is a leaf (the writer takes it to publish, `stats()` to read);
//! the event log is pushed to with no lock held.

mod cutter;
mod mp4;
pub mod path;
mod writer;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::sync::{Arc, LazyLock, Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::error::{Error, Result};
use crate::events::EventLog;
use crate::limits::check_number;
use crate::ts::PACKET_SIZE;

pub use path::{check_pattern, DEFAULT_PATTERN};

pub(crate) static CAT: LazyLock<gst::DebugCategory> = LazyLock::new(|| {
    gst::DebugCategory::new(
        "castway-record",
        gst::DebugColorFlags::empty(),
        Some("castway recorder"),
    )
});

/// The hub tap id of a route's recorder (no output id can be this: ids have no `#`).
pub const TAP_ID: &str = "#recorder";
/// Segment duration unless the policy says otherwise.
pub const DEFAULT_SEGMENT_MS: u64 = 6_000;
/// Bytes the recorder may queue before it drops (about 8 s at 8 Mbit/s).
pub const DEFAULT_RECORD_QUEUE_BYTES: u64 = 8 * 1024 * 1024;
/// How long `stop` waits for the writer to write what is queued and close its segment.
const STOP_WAIT: Duration = Duration::from_secs(5);
/// How long `settle` waits for the writer to end its segment at a frame's start (the writer's
/// own wait, `writer::PAUSE_WAIT`, and a poll or two more).
const SETTLE_WAIT: Duration = Duration::from_millis(1_500);

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What a recording writes: checked with [`RecordSettings::check`].
#[derive(Debug, Clone)]
pub struct RecordSettings {
    /// The recordings directory (absolute); every segment is written under it.
    pub dir: PathBuf,
    /// Path pattern under `dir` (see `path::check_pattern`).
    pub pattern: String,
    /// Target segment duration: the cut is at the first keyframe at or after it.
    pub segment_ms: u64,
    /// `ts` (the outputs' bytes, cut by the core) or `mp4` (remuxed by a GStreamer branch).
    pub format: String,
    /// Bytes queued for the writer before the recorder drops.
    pub queue_bytes: u64,
    /// No segment opens while the recordings volume has less free than this, and one being
    /// written ends at its next keyframe when it gets there (0: no floor).
    pub min_free_bytes: u64,
}

impl RecordSettings {
    /// Settings for `dir` with the defaults.
    pub fn new(dir: impl Into<PathBuf>) -> RecordSettings {
        RecordSettings {
            dir: dir.into(),
            pattern: DEFAULT_PATTERN.into(),
            segment_ms: DEFAULT_SEGMENT_MS,
            format: "ts".into(),
            queue_bytes: DEFAULT_RECORD_QUEUE_BYTES,
            min_free_bytes: 0,
        }
    }

    /// Checks every field; errors are at the field's name.
    pub fn check(&self) -> Result<()> {
        check_pattern(&self.pattern).map_err(|e| e.at("recording.path"))?;
        check_number("recording.segment_ms", self.segment_ms)?;
        check_number("recording.queue_bytes", self.queue_bytes)?;
        if !matches!(self.format.as_str(), "ts" | "mp4") {
            return Err(Error::InvalidConfig(format!(
                "`{}` is not a recording format (`ts`, `mp4`)",
                self.format
            ))
            .at("recording.format"));
        }
        if !self.dir.is_absolute() {
            return Err(Error::InvalidConfig(format!(
                "recordings directory `{}` is not absolute",
                self.dir.display()
            )));
        }
        Ok(())
    }
}

/// A recorder's state as its stats show it.
#[derive(Debug, Clone, Serialize, Default)]
pub struct RecorderStats {
    /// `recording` (a segment open or about to open), `paused`, `failing` (the disk refused a
    /// write: the next segment is tried after a backoff) or `stopped`.
    pub state: &'static str,
    /// The open segment, relative to the recordings directory (None: none open).
    pub segment: Option<String>,
    /// Bytes in the open segment.
    pub segment_bytes: u64,
    /// Segments closed since the recording started.
    pub segments: u64,
    /// Bytes written to segments since it started.
    pub bytes: u64,
    /// TS packets not recorded for want of room: the queue was full or the disk refused them.
    pub drops: u64,
    /// TS packets passed over on purpose: before the first cut, and while paused.
    pub skipped: u64,
    /// Segments begun at a PAT a few video frames before their first keyframe: no longer
    /// made (such a segment starts with copies of the PSI, `psi_inserted`); always 0.
    pub cuts_off_keyframe: u64,
    /// Segments begun at a keyframe without PSI (no PAT and PMT seen yet to copy).
    pub cuts_without_psi: u64,
    /// Packets of PSI (the latest PAT and PMT) copied in front of a keyframe that had none
    /// right before it, so that its segment decodes from its first frames.
    pub psi_inserted: u64,
    /// Bytes waiting in the queue for the writer.
    pub queued_bytes: u64,
    /// Errors since it started (writes, opens, renames, stalls, streams an mp4 cannot hold).
    pub errors: u64,
    /// Pauses and stops that found no frame's start within 1 s and closed the segment where
    /// the data stopped (its last frame may be cut short).
    pub pauses_mid_frame: u64,
    /// Bytes not recorded because the recordings volume had less free space than its floor
    /// when a segment was due to open.
    pub no_space_bytes: u64,
    /// Segments ended early because the recordings volume reached its free-space floor while
    /// they were written (checked at most once a second; each ends at its next keyframe).
    pub floor_ends: u64,
    /// Times the `mp4` branch stalled (nothing muxed for 10 s while the stream arrived) and
    /// was torn down.
    pub stalls: u64,
    /// `mp4`: audio buffers dropped because they came before the first video keyframe of the
    /// branch (so that both tracks start together at that keyframe).
    pub audio_dropped: u64,
    /// Times a segment was due to open (`ts`: at a cut; `mp4`: after a backoff) and was tried
    /// again in vain, the volume still below its free-space floor. The first try of each such
    /// time is an error (`errors`, one `recording_error` event); these are not.
    pub floor_retries: u64,
    /// `mp4`: files ended where the program changed inside one run of the hub (its PAT or PMT
    /// of other content: an encoder restarted behind a UDP input, a file of two encodes); the
    /// new program goes on in a file of its own.
    pub program_changes: u64,
    pub last_error: Option<String>,
    /// `segments`, `bytes`, `drops` and `errors` with those of the route's earlier recorders
    /// added: they run on across restarts of the recording, however made, for the route's
    /// life (filled by the route).
    pub segments_all: u64,
    pub bytes_all: u64,
    pub drops_all: u64,
    pub errors_all: u64,
}

/// What the writer publishes and `stats()` reads.
#[derive(Default)]
struct Status {
    state: &'static str,
    segment: Option<String>,
    segments: u64,
    errors: u64,
    last_error: Option<String>,
    cuts_off_keyframe: u64,
    cuts_without_psi: u64,
    psi_inserted: u64,
    stalls: u64,
    pauses_mid_frame: u64,
    floor_ends: u64,
    floor_retries: u64,
    program_changes: u64,
}

/// Shared by the intake (streaming threads), the writer thread and the recorder's handle.
#[derive(Default)]
struct Shared {
    queued: AtomicU64,
    max_queue: u64,
    drops: AtomicU64,
    skipped: AtomicU64,
    bytes: AtomicU64,
    segment_bytes: AtomicU64,
    no_space_bytes: AtomicU64,
    /// `mp4`: audio buffers before the branch's first video keyframe, dropped.
    audio_dropped: AtomicU64,
    /// The free-space floor in force (`min_free_bytes`, changed by `set_min_free`).
    min_free: AtomicU64,
    paused: AtomicBool,
    /// The writer follows a pause and has no segment open (`settle` waits for it).
    settled: AtomicBool,
    status: Mutex<Status>,
}

/// A buffer on its way to the writer, with the Unix time the hub handed it over.
struct Item {
    buffer: gst::Buffer,
    unix: f64,
    /// The hub's count of cuts when it handed the buffer over: the run the buffer belongs to
    /// (the writer may take it after the hub has cut again).
    cuts: u64,
}

/// Reads the hub's count of cuts (a new run: a switch, the slate on air).
pub type Cuts = Arc<dyn Fn() -> u64 + Send + Sync>;

/// The recorder's end of a hub tap: puts buffers on the writer's queue, never waits.
pub struct Intake {
    tx: SyncSender<Item>,
    shared: Arc<Shared>,
    cuts: Cuts,
}

impl Intake {
    /// Queues `buffer` for the writer; false (and counted) when the queue is full.
    pub fn offer(&self, buffer: &gst::Buffer) -> bool {
        let size = buffer.size() as u64;
        let s = &self.shared;
        if s.queued.load(Relaxed) + size > s.max_queue {
            s.drops
                .fetch_add(size.div_ceil(PACKET_SIZE as u64), Relaxed);
            return false;
        }
        s.queued.fetch_add(size, Relaxed);
        let item = Item {
            buffer: buffer.clone(),
            unix: unix_now(),
            cuts: (self.cuts)(),
        };
        match self.tx.try_send(item) {
            Ok(()) => true,
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                s.queued.fetch_sub(size, Relaxed);
                s.drops
                    .fetch_add(size.div_ceil(PACKET_SIZE as u64), Relaxed);
                false
            }
        }
    }
}

/// A running recording of one route.
pub struct Recorder {
    shared: Arc<Shared>,
    /// Signalled once when the writer has closed its last segment and ended.
    done: Mutex<Option<mpsc::Receiver<()>>>,
    /// When a settle asked for gives up waiting (set by the first `ask_settle`).
    settle_by: Mutex<Option<Instant>>,
    pub settings: RecordSettings,
}

impl Recorder {
    /// Starts the writer thread for `route`; returns the recorder and the intake to attach to
    /// the hub. `cuts` reads the hub's count of cuts (a switch inside a segment).
    pub fn start(
        route: &str,
        settings: RecordSettings,
        log: Arc<EventLog>,
        cuts: Cuts,
    ) -> Result<(Recorder, Intake)> {
        settings.check()?;
        std::fs::create_dir_all(&settings.dir).map_err(|e| {
            Error::InvalidConfig(format!(
                "cannot create the recordings directory `{}`: {e}",
                settings.dir.display()
            ))
        })?;
        let shared = Arc::new(Shared {
            max_queue: settings.queue_bytes,
            min_free: AtomicU64::new(settings.min_free_bytes),
            status: Mutex::new(Status {
                state: "recording",
                ..Status::default()
            }),
            ..Shared::default()
        });
        // Bounded in bytes by `max_queue`; the count only bounds the channel's own memory.
        let (tx, rx) = mpsc::sync_channel(65_536);
        let (done_tx, done_rx) = mpsc::channel();
        let run: Box<dyn FnOnce(mpsc::Receiver<Item>) + Send> = if settings.format == "mp4" {
            let w = mp4::Mp4Writer::new(route, &settings, shared.clone(), log);
            Box::new(move |rx| w.run(rx))
        } else {
            let w = writer::Writer::new(route, &settings, shared.clone(), log);
            Box::new(move |rx| w.run(rx))
        };
        std::thread::Builder::new()
            .name(format!("castway-rec-{route}"))
            .spawn(move || {
                run(rx);
                let _ = done_tx.send(());
            })
            .map_err(|e| Error::pipeline(format!("cannot start the recorder's thread: {e}")))?;
        Ok((
            Recorder {
                shared: shared.clone(),
                done: Mutex::new(Some(done_rx)),
                settle_by: Mutex::new(None),
                settings,
            },
            Intake { tx, shared, cuts },
        ))
    }

    /// Closes the open segment; what arrives until `resume` is skipped (counted).
    pub fn pause(&self) {
        self.shared.paused.store(true, Relaxed);
    }

    /// Goes on recording in a new segment, from the next PAT and keyframe.
    pub fn resume(&self) {
        self.shared.paused.store(false, Relaxed);
    }

    /// Asks the writer to end the open segment as a pause does, at the next packet that starts
    /// a video frame (at most about 1 s; `pauses_mid_frame` counts one cut short), without
    /// waiting. The first ask sets the deadline `settle` waits to: a gateway that stops many
    /// recording routes asks them all first, then waits once (about `SETTLE_WAIT` in all, not
    /// that much per route).
    pub fn ask_settle(&self) {
        self.pause();
        lock(&self.settle_by).get_or_insert_with(|| Instant::now() + SETTLE_WAIT);
    }

    /// Ends the open segment as [`ask_settle`](Self::ask_settle) does and waits for it, until
    /// the deadline the first ask set. A stop calls it while the tap still feeds the recorder,
    /// so the last segment ends with a whole frame; what arrives after is skipped.
    pub fn settle(&self) {
        self.ask_settle();
        let deadline = lock(&self.settle_by).unwrap_or_else(Instant::now);
        while !self.shared.settled.load(Relaxed) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Sets the free-space floor checked before each segment opens (0: none).
    pub fn set_min_free(&self, bytes: u64) {
        self.shared.min_free.store(bytes, Relaxed);
    }

    pub fn paused(&self) -> bool {
        self.shared.paused.load(Relaxed)
    }

    /// Waits (at most 5 s) for the writer to write what is queued and close its segment. Call
    /// it after the intake is gone from the hub (the writer ends when its queue is empty and
    /// every intake dropped). A writer stuck on a hung disk is left to finish on its own.
    pub fn finish(&self) {
        if let Some(done) = lock(&self.done).take() {
            if done.recv_timeout(STOP_WAIT).is_err() {
                gst::warning!(
                    CAT,
                    "recorder still writing after {STOP_WAIT:?}; left to finish"
                );
            }
        }
    }

    pub fn stats(&self) -> RecorderStats {
        let s = &self.shared;
        let status = lock(&s.status);
        // A pause or resume shows at once; the writer acts on it within `writer::POLL`.
        let state = match (status.state, s.paused.load(Relaxed)) {
            ("stopped", _) => "stopped",
            (_, true) => "paused",
            ("paused", false) => "recording",
            (state, false) => state,
        };
        RecorderStats {
            state,
            segment: status.segment.clone(),
            segment_bytes: s.segment_bytes.load(Relaxed),
            segments: status.segments,
            bytes: s.bytes.load(Relaxed),
            drops: s.drops.load(Relaxed),
            skipped: s.skipped.load(Relaxed),
            cuts_off_keyframe: status.cuts_off_keyframe,
            cuts_without_psi: status.cuts_without_psi,
            psi_inserted: status.psi_inserted,
            queued_bytes: s.queued.load(Relaxed),
            errors: status.errors,
            stalls: status.stalls,
            no_space_bytes: s.no_space_bytes.load(Relaxed),
            floor_ends: status.floor_ends,
            pauses_mid_frame: status.pauses_mid_frame,
            audio_dropped: s.audio_dropped.load(Relaxed),
            floor_retries: status.floor_retries,
            program_changes: status.program_changes,
            last_error: status.last_error.clone(),
            ..RecorderStats::default()
        }
    }
}

/// The error when the volume under `dir` has less free space than the floor in `shared`
/// (None: enough, no floor, or the volume cannot be asked).
fn below_floor(dir: &std::path::Path, shared: &Shared) -> Option<String> {
    let floor = shared.min_free.load(Relaxed);
    if floor == 0 {
        return None;
    }
    let free = free_bytes(dir)?;
    (free < floor).then(|| {
        format!(
            "the recordings volume has {free} bytes free, below the floor of {floor} \
             (min_free_bytes): no segment opens until retention makes room"
        )
    })
}

/// Bytes free to an unprivileged writer on the volume holding `dir` (statvfs).
pub(crate) fn free_bytes(dir: &std::path::Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs with a NUL-terminated path and a zeroed struct it fills.
    unsafe {
        let mut st: libc::statvfs = std::mem::zeroed();
        if libc::statvfs(c.as_ptr(), &mut st) != 0 {
            return None;
        }
        Some((st.f_bavail as u64).saturating_mul(st.f_frsize as u64))
    }
}

pub(crate) fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_queue_is_a_counted_drop_not_a_wait() {
        gst::init().unwrap();
        let shared = Arc::new(Shared {
            max_queue: 10 * 1316,
            ..Shared::default()
        });
        // Nobody drains the queue: a writer stuck on a hung disk.
        let (tx, _rx) = mpsc::sync_channel(65_536);
        let intake = Intake {
            tx,
            shared: shared.clone(),
            cuts: Arc::new(|| 0),
        };
        let buffer = gst::Buffer::from_mut_slice(vec![0x47u8; 1316]);
        let taken = (0..100).filter(|_| intake.offer(&buffer)).count();
        assert_eq!(taken, 10);
        assert_eq!(shared.drops.load(Relaxed), 90 * 7);
        assert_eq!(shared.queued.load(Relaxed), 10 * 1316);
    }
}
