//! The hub: fan-out from the active input to every output of a route.
//!
//! Inputs and outputs are separate GStreamer pipelines. A pad probe at the end of each input
//! pipeline hands every buffer to [`Hub::ingest`] on the input's streaming thread; the hub makes
//! sure it is whole MPEG-TS packets, counts it, and — if the input is the active one — offers the
//! same buffer (a refcount, no copy) to each output's `appsrc`. An output whose queue is full
//! drops the buffer and counts it; nothing an output does can block this thread, because
//! `appsrc` is never blocking here and each output pipeline has its own streaming thread behind
//! its queue. docs/architecture.md says why.
//!
//! Lock order: `taps` and `timeline` are never held together; both are leaves.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, LazyLock, Mutex, PoisonError};
use std::time::Instant;

use crate::stats::Counters;
use crate::ts::{Aligner, Restamper, PACKETS_PER_BUFFER, PACKET_SIZE};

/// The largest buffer handed to outputs: 7 TS packets, one SRT or UDP payload.
const MAX_BUFFER_BYTES: usize = PACKETS_PER_BUFFER * PACKET_SIZE;

static CAT: LazyLock<gst::DebugCategory> = LazyLock::new(|| {
    gst::DebugCategory::new(
        "castway-hub",
        gst::DebugColorFlags::empty(),
        Some("castway fan-out hub"),
    )
});

/// Bytes an output may queue before the hub drops for it (about 2 s at 8 Mbit/s).
pub const DEFAULT_TAP_QUEUE_BYTES: u64 = 2 * 1024 * 1024;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One output's attachment to the hub.
pub struct Tap {
    pub id: String,
    appsrc: gst_app::AppSrc,
    /// Set by the appsrc's enough-data callback (its queue reached `max-bytes`), cleared by
    /// need-data: the hub drops while it is set, without asking the appsrc per buffer.
    full: Arc<AtomicBool>,
    pub counters: Arc<Counters>,
}

impl Tap {
    /// Attaches to `appsrc`, whose `max-bytes` bounds the output's queue. Installs the appsrc's
    /// callbacks.
    pub fn new(id: String, appsrc: gst_app::AppSrc, counters: Arc<Counters>) -> Tap {
        let full = Arc::new(AtomicBool::new(false));
        let (on_need, on_enough) = (full.clone(), full.clone());
        appsrc.set_callbacks(
            gst_app::AppSrcCallbacks::builder()
                .need_data(move |_, _| on_need.store(false, Relaxed))
                .enough_data(move |_| on_enough.store(true, Relaxed))
                .build(),
        );
        Tap {
            id,
            appsrc,
            full,
            counters,
        }
    }

    fn offer(&self, buffer: &gst::Buffer) {
        let size = buffer.size();
        if self.full.load(Relaxed) {
            self.counters.drop_bytes(size);
            return;
        }
        match self.appsrc.push_buffer(buffer.clone()) {
            Ok(_) => self.counters.add(size),
            // Flushing: the output pipeline is (re)starting or stopping.
            Err(_) => self.counters.drop_bytes(size),
        }
    }
}

/// One input's attachment to the hub; owned by the input's appsink callback.
pub struct Feed {
    pub index: usize,
    pub counters: Arc<Counters>,
    /// Only the input's streaming thread locks it.
    aligner: Mutex<Aligner>,
    /// Why the last rejected buffer was not MPEG-TS; taken by the control thread.
    not_ts: Mutex<Option<String>>,
    has_not_ts: AtomicBool,
    /// When data last arrived, in milliseconds since the hub was made.
    last_data_ms: AtomicU64,
}

impl Feed {
    /// Takes the reason the input's data was rejected, if any arrived since the last call.
    pub fn take_not_ts(&self) -> Option<String> {
        if !self.has_not_ts.swap(false, Relaxed) {
            return None;
        }
        lock(&self.not_ts).take()
    }

    /// Forgets any partial packet or lost sync of a previous connection.
    pub fn reset_aligner(&self) {
        *lock(&self.aligner) = Aligner::default();
    }

    /// The reason the input's data was rejected, if any is pending, without taking it.
    pub fn peek_not_ts(&self) -> Option<String> {
        if !self.has_not_ts.load(Relaxed) {
            return None;
        }
        lock(&self.not_ts).clone()
    }
}

pub struct Hub {
    epoch: Instant,
    active: AtomicUsize,
    taps: Mutex<Vec<Arc<Tap>>>,
    /// Rewrites timestamps/CC of what goes out after the active input started over.
    timeline: Mutex<Restamper>,
    /// Whether the active input may start over (a looped file), so the timeline must track it.
    track_timeline: AtomicBool,
}

impl Default for Hub {
    fn default() -> Self {
        Hub {
            epoch: Instant::now(),
            active: AtomicUsize::new(0),
            taps: Mutex::new(Vec::new()),
            timeline: Mutex::new(Restamper::default()),
            track_timeline: AtomicBool::new(false),
        }
    }
}

impl Hub {
    pub fn feed(&self, index: usize) -> Arc<Feed> {
        Arc::new(Feed {
            index,
            counters: Arc::new(Counters::default()),
            aligner: Mutex::new(Aligner::default()),
            not_ts: Mutex::new(None),
            has_not_ts: AtomicBool::new(false),
            last_data_ms: AtomicU64::new(0),
        })
    }

    pub fn active(&self) -> usize {
        self.active.load(Relaxed)
    }

    /// Milliseconds since `feed` last delivered valid data (None: never).
    pub fn idle_ms(&self, feed: &Feed) -> Option<u64> {
        match feed.last_data_ms.load(Relaxed) {
            0 => None,
            t => Some((self.epoch.elapsed().as_millis() as u64).saturating_sub(t)),
        }
    }

    /// Asks the hub to keep timestamps continuous when the active input starts over.
    pub fn set_track_timeline(&self, on: bool) {
        self.track_timeline.store(on, Relaxed);
    }

    /// The active input starts over (a looped file reopened): what follows is restamped to
    /// continue what the outputs already received.
    pub fn timeline_restart(&self) {
        lock(&self.timeline).restart();
    }

    pub fn attach(&self, tap: Arc<Tap>) {
        gst::debug!(CAT, "attach output {}", tap.id);
        lock(&self.taps).push(tap);
    }

    pub fn detach(&self, id: &str) -> Option<Arc<Tap>> {
        let mut taps = lock(&self.taps);
        let i = taps.iter().position(|t| t.id == id)?;
        gst::debug!(CAT, "detach output {id}");
        Some(taps.remove(i))
    }

    /// Called on the input's streaming thread for each buffer it produces.
    pub fn ingest(&self, feed: &Feed, buffer: gst::Buffer) {
        let Ok(map) = buffer.map_readable() else {
            feed.counters.drop_bytes(buffer.size());
            return;
        };
        let mut aligner = lock(&feed.aligner);
        if aligner.passes_through(&map) {
            drop(aligner);
            drop(map);
            let size = buffer.size();
            if size <= MAX_BUFFER_BYTES {
                self.accept(feed, buffer);
                return;
            }
            // Whole packets, but more than one SRT/UDP payload: cut into 1316-byte views of
            // the same memory (no copy).
            for offset in (0..size).step_by(MAX_BUFFER_BYTES) {
                let len = MAX_BUFFER_BYTES.min(size - offset);
                match buffer.copy_region(gst::BufferCopyFlags::MEMORY, offset..offset + len) {
                    Ok(part) => self.accept(feed, part),
                    Err(_) => feed.counters.drop_bytes(len),
                }
            }
            return;
        }
        let mut aligned = Vec::new();
        let garbage = aligner.push(&map, |run| {
            aligned.push(gst::Buffer::from_slice(run.to_vec()))
        });
        drop(aligner);
        if garbage > 0 {
            feed.counters.drop_bytes(garbage);
            if !feed.has_not_ts.load(Relaxed) {
                *lock(&feed.not_ts) =
                    Some(format!("input is not MPEG-TS: dropped {garbage} bytes without TS sync (0x47 every 188 bytes)"));
                feed.has_not_ts.store(true, Relaxed);
            }
        }
        drop(map);
        for b in aligned {
            self.accept(feed, b);
        }
    }

    /// Counts a whole-packet buffer and, if its input is active, offers it to every output.
    fn accept(&self, feed: &Feed, buffer: gst::Buffer) {
        feed.counters.add(buffer.size());
        let now_ms = (self.epoch.elapsed().as_millis() as u64).max(1);
        feed.last_data_ms.store(now_ms, Relaxed);
        if feed.index != self.active.load(Relaxed) {
            return;
        }
        let buffer = if self.track_timeline.load(Relaxed) {
            self.restamp(buffer)
        } else {
            buffer
        };
        for tap in lock(&self.taps).iter() {
            tap.offer(&buffer);
        }
    }

    fn restamp(&self, mut buffer: gst::Buffer) -> gst::Buffer {
        let mut timeline = lock(&self.timeline);
        if !timeline.rewrites() {
            if let Ok(map) = buffer.map_readable() {
                timeline.observe(&map);
            }
            return buffer;
        }
        if let Ok(mut map) = buffer.make_mut().map_writable() {
            timeline.rewrite(&mut map);
        }
        buffer
    }
}
